// `bnorm predict MODEL INPUT`: runs a saved model (bnorm's or Keras's .keras / legacy .h5)
// in inference mode on the rows of INPUT (.npy or CSV) and writes the outputs (.npy or CSV
// by OUTPUT's suffix; CSV on standard output by default).
#include <cstdio>
#include <iostream>
#include <string>

#include "bnorm/io/array_file.hpp"
#include "commands.hpp"

namespace bnorm::cli {

namespace {

struct PredictOptions {
  std::string model;
  std::string input;
  std::string output;  // empty: CSV to stdout
  std::int64_t batch_size = 256;
};

int run_predict(const PredictOptions& o) {
  const std::string command = "bnorm predict";
  const auto model = load_model_argument(o.model, command, "MODEL");
  const Tensor x = read_model_input(o.input, *model, command, "INPUT");
  // Inference mode: batch normalization uses its moving statistics, so the batch size
  // changes nothing but speed and memory.
  const Tensor y = model->predict(x, o.batch_size);
  if (o.output.empty()) {
    io::write_csv(y, std::cout);
    std::cout.flush();
    if (!std::cout) throw io::FileError(command, "standard output", "a writable stream", "a write error");
    return 0;
  }
  io::write_array(y, o.output);
  std::printf("wrote %lld rows of %lld outputs to %s (%s)\n", static_cast<long long>(y.dim(0)),
              static_cast<long long>(y.dim(0) ? y.numel() / y.dim(0) : 0), o.output.c_str(),
              io::is_npy_path(o.output) ? ".npy float32" : "CSV");
  return 0;
}

}  // namespace

Runner add_predict_command(CLI::App& app) {
  auto o = std::make_shared<PredictOptions>();
  CLI::App* cmd = app.add_subcommand(
      "predict", "Run a saved model in inference mode on an input file (.npy or CSV) and write its outputs");
  cmd->footer(
      "\nMODEL is a Keras model file: .keras (Keras 3, also what `bnorm train` saves) or a legacy\n"
      "tf.keras .h5. INPUT holds one sample per row: a .npy array (float32, float64, int32, int64\n"
      "or uint8; shape (N, ...)) or a CSV of numbers (a header row is skipped). Each row's values\n"
      "are reshaped to the model's input shape, so a (N, 784) file feeds a (28, 28) input; the\n"
      "row width must equal the product of the input dimensions. Batch normalization runs in\n"
      "inference mode (its moving statistics). Outputs: one row per sample, .npy or CSV by the\n"
      "suffix of --output, CSV on standard output without it.\n"
      "\nExamples:\n"
      "  bnorm predict model.keras images.npy -o probabilities.npy\n"
      "  bnorm predict model.keras rows.csv > outputs.csv\n"
      "  bnorm predict legacy_model.h5 x.npy --batch-size 1000 -o y.csv");
  cmd->add_option("MODEL", o->model, "Model file (.keras, or legacy .h5)")->required();
  cmd->add_option("INPUT", o->input, "Input samples, one per row (.npy, or CSV)")->required();
  cmd->add_option("-o,--output", o->output, "Output file, .npy or CSV by its suffix [default: CSV to stdout]");
  cmd->add_option("--batch-size", o->batch_size, "Samples per forward pass (memory only: inference mode)")
      ->check(positive_integer())
      ->capture_default_str();
  return [cmd, o]() -> int {
    if (!cmd->parsed()) return -1;
    return run_predict(*o);
  };
}

}  // namespace bnorm::cli
