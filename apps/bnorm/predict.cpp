// `bnorm predict MODEL INPUT`: runs a saved model (bnorm's or Keras's .keras / legacy .h5)
// in inference mode on the rows of INPUT (.npy or CSV) and writes the outputs (.npy or CSV
// by OUTPUT's suffix; CSV on standard output by default).
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include "bnorm/io/array_file.hpp"
#include "bnorm/nn/fold.hpp"
#include "commands.hpp"
#include "file_checks.hpp"

namespace bnorm::cli {

namespace {

struct PredictOptions {
  std::string model;
  std::string input;
  std::string output;  // empty: CSV to stdout
  std::int64_t batch_size = 256;
  bool allow_nonfinite = false;
  bool fold = false;
};

// The output's suffix names its format: .npy or .csv (any case). Anything else is refused
// rather than written as CSV under a name that promises another format (y.npz, y.h5).
void require_output_suffix(const std::string& output) {
  std::string suffix = std::filesystem::path(output).extension().string();
  std::transform(suffix.begin(), suffix.end(), suffix.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (suffix != ".npy" && suffix != ".csv") {
    throw UsageError("bnorm predict", "--output", "a file name ending in .npy or .csv (the output format)",
                     "'" + output + "'");
  }
}

int run_predict(const PredictOptions& o) {
  const std::string command = "bnorm predict";
  // The output is checked before any work: its format, that it overwrites no input, and
  // that it can be written.
  if (!o.output.empty()) {
    require_distinct_output(command, "--output", o.output,
                            {{o.model, "the MODEL file"}, {o.input, "the INPUT file"}});
    require_output_suffix(o.output);
    require_writable_file(command, "--output", o.output);
  }
  std::unique_ptr<nn::Model> model = load_model_argument(o.model, command, "MODEL");
  if (o.fold) model = nn::fold_batch_norm(*model);
  const Tensor x = read_model_input(o.input, *model, command, "INPUT");
  require_finite(x, command, "INPUT " + o.input, o.allow_nonfinite);
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
      "suffix of --output (.npy or .csv; it may not be MODEL or INPUT), CSV on standard output\n"
      "without it. A NaN or infinite input value is an error naming its row and column (1-based;\n"
      "the column counts the row's values flattened), unless --allow-nonfinite.\n"
      "\nExamples:\n"
      "  bnorm predict model.keras images.npy -o probabilities.npy\n"
      "  bnorm predict model.keras rows.csv > outputs.csv\n"
      "  bnorm predict legacy_model.h5 x.npy --batch-size 1000 -o y.csv");
  cmd->add_option("MODEL", o->model, "Model file (.keras, or legacy .h5)")->required();
  cmd->add_option("INPUT", o->input, "Input samples, one per row (.npy, or CSV)")->required();
  cmd->add_option("-o,--output", o->output,
                  "Output file, .npy or .csv by its suffix [default: CSV to stdout]");
  cmd->add_option("--batch-size", o->batch_size, "Samples per forward pass (memory only: inference mode)")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_flag("--fold", o->fold,
                "Fold batch normalization into the Dense or convolution layer before it first (faster; the same\n"
                "outputs to float rounding: see `bnorm fold --help`)");
  cmd->add_flag("--allow-nonfinite", o->allow_nonfinite,
                "Accept NaN and infinite input values (a warning; their rows' outputs are not finite)");
  return [cmd, o]() -> int {
    if (!cmd->parsed()) return -1;
    return run_predict(*o);
  };
}

}  // namespace bnorm::cli
