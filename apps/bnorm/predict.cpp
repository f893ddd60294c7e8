// `bnorm predict MODEL INPUT`: runs a saved model (bnorm's or Keras's .keras / legacy .h5)
// in inference mode on the rows of INPUT (.npy or CSV) and writes the outputs (.npy or CSV
// by OUTPUT's suffix; CSV on standard output by default).
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <numeric>
#include <vector>
#include <string>

#include "bnorm/core/text.hpp"
#include "bnorm/io/array_file.hpp"
#include "bnorm/io/image.hpp"
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
  int top = 5;
};

// INPUT as images: a PNG or JPEG file, or a folder of them (the files whose content is a
// PNG or JPEG, by name). Empty when INPUT is neither.
std::vector<std::string> image_inputs(const std::string& input, const std::string& command) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(input, ec)) {
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(input, ec))
      if (entry.is_regular_file(ec) && io::is_image_file(entry.path().string())) files.push_back(entry.path().string());
    std::sort(files.begin(), files.end());
    if (files.empty()) {
      throw io::FileError(command, "INPUT " + printable(input, 0), "a folder holding PNG or JPEG images", "none");
    }
    return files;
  }
  if (io::is_image_file(input)) return {input};
  return {};
}

// The images as one batch for the model: each read as Keras's load_img(target_size=(H, W))
// (nearest resize), values 0..255, laid out as the model's input (H, W, 3) or (3, H, W).
Tensor image_batch(const std::vector<std::string>& files, const nn::Model& model, const std::string& command) {
  const std::optional<Shape> input = model.input_shape();
  const bool last = input && input->rank() == 4 && (*input)[3] == 3;
  const bool first = input && input->rank() == 4 && (*input)[1] == 3 && !last;
  if (!last && !first) {
    throw ArgumentError(command, "INPUT", "a model whose input is an RGB image, (H, W, 3) or (3, H, W), to read images",
                        "a model with input shape " + (input ? input->str() : std::string("unknown")));
  }
  const std::int64_t h = last ? (*input)[1] : (*input)[2], w = last ? (*input)[2] : (*input)[3];
  Tensor x(Shape{static_cast<std::int64_t>(files.size()), h, w, 3});
  for (std::size_t i = 0; i < files.size(); ++i) {
    Tensor image;
    try {
      image = io::load_image(files[i], h, w);
    } catch (const Error&) {
      rethrow_for_argument(command, "INPUT", files[i]);
    }
    std::copy_n(image.data(), image.numel(), x.data() + static_cast<std::int64_t>(i) * image.numel());
  }
  return first ? permute(x, {0, 3, 1, 2}) : x;
}

// One line per image: its name and the k largest outputs as "class (value)".
void print_top(const std::vector<std::string>& files, const Tensor& y, int k) {
  const std::int64_t n = y.dim(0), classes = n ? y.numel() / n : 0;
  for (std::int64_t i = 0; i < n; ++i) {
    std::vector<std::int64_t> order(static_cast<std::size_t>(classes));
    std::iota(order.begin(), order.end(), 0);
    const auto top = std::min<std::int64_t>(k, classes);
    std::partial_sort(order.begin(), order.begin() + top, order.end(),
                      [&](std::int64_t a, std::int64_t b) { return y[i * classes + a] > y[i * classes + b]; });
    std::printf("%s:", printable(std::filesystem::path(files[static_cast<std::size_t>(i)]).filename().string(), 0).c_str());
    for (std::int64_t t = 0; t < top; ++t) {
      std::printf(" %lld (%.4g)%s", static_cast<long long>(order[static_cast<std::size_t>(t)]),
                  static_cast<double>(y[i * classes + order[static_cast<std::size_t>(t)]]), t + 1 < top ? "," : "");
    }
    std::printf("\n");
  }
}

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
  const std::vector<std::string> images = image_inputs(o.input, command);
  const Tensor x = images.empty() ? read_model_input(o.input, *model, command, "INPUT") : image_batch(images, *model, command);
  require_finite(x, command, "INPUT " + o.input, o.allow_nonfinite);
  // Inference mode: batch normalization uses its moving statistics, so the batch size
  // changes nothing but speed and memory.
  const Tensor y = model->predict(x, o.batch_size);
  if (!images.empty() && o.output.empty()) {
    print_top(images, y, o.top);
    return 0;
  }
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
      "\nImages: INPUT may be a PNG or JPEG file, or a folder of them (files told by their content).\n"
      "Each is read as Keras's load_img(path, target_size=(H, W)) reads it (RGB, nearest resize to\n"
      "the model's input, values 0..255: the model's own Rescaling / Normalization layers do the\n"
      "rest), and one line per image lists the --top largest outputs as `class (value)`; with -o\n"
      "the outputs go to the file instead.\n"
      "\nExamples:\n"
      "  bnorm predict model.keras images.npy -o probabilities.npy\n"
      "  bnorm predict model.keras rows.csv > outputs.csv\n"
      "  bnorm predict legacy_model.h5 x.npy --batch-size 1000 -o y.csv\n"
      "  bnorm predict mobilenet.keras photos/ --top 3");
  cmd->add_option("MODEL", o->model, "Model file (.keras, or legacy .h5)")->required();
  cmd->add_option("INPUT", o->input, "Input samples, one per row (.npy, or CSV), or a PNG/JPEG image or a folder of them")
      ->required();
  cmd->add_option("--top", o->top, "With images: the largest outputs to print per image")
      ->check(positive_integer())
      ->capture_default_str();
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
