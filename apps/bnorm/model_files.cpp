// What `bnorm predict`, `evaluate` and `inspect` share: loading the MODEL argument, and
// reading an INPUT file as the model's input; and how the errors of every file named on
// the command line are labelled with the argument that named it.
#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "bnorm/core/text.hpp"
#include "bnorm/io/array_file.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/layers.hpp"
#include "commands.hpp"

namespace bnorm::cli {

namespace {

std::string shape_without_batch(const Shape& s) {
  return Shape(std::vector<std::int64_t>(s.dims().begin() + 1, s.dims().end())).str();
}

// "INPUT x.csv: line 2, column 3" from a reader's error about `path`. The readers name
// the file as `where` and the place as `argument` (arrays, IDX, model files), or, older
// ones, the function as `where` and the file as `argument` (the dataset loader: a file
// inside the --data-dir folder). The file is written relative to `path` when inside it.
std::string argument_label(const Error& e, const std::string& argument, const std::string& path) {
  const std::string shown = printable(path, 0);
  // The folder as the reader saw it (raw bytes) and as an escaping reader shows it.
  std::string raw_folder = path, folder = shown;
  if (raw_folder.empty() || raw_folder.back() != '/') raw_folder += '/';
  if (folder.empty() || folder.back() != '/') folder += '/';
  // "" for the file itself, "name" for a file inside the folder `path`, nullopt otherwise.
  const auto inside = [&](const std::string& s) -> std::optional<std::string> {
    if (s == path || s == shown) return std::string();
    if (s.rfind(raw_folder, 0) == 0) return printable(s.substr(raw_folder.size()), 0);
    if (s.rfind(folder, 0) == 0) return printable(s.substr(folder.size()), 0);
    if (s.rfind(shown + " (", 0) == 0) return s.substr(shown.size() + 1);  // "m.keras (model.weights.h5)"
    return std::nullopt;
  };
  std::vector<std::string> parts;
  if (const auto file = inside(e.argument())) {
    parts = {*file};  // `where` named the reader function
  } else if (const auto in = inside(e.where())) {
    parts = {*in, e.argument()};
  } else {
    parts = {e.where(), e.argument()};
  }
  std::string label = argument + " " + shown;
  for (const auto& p : parts) {
    if (!p.empty()) label += (p.front() == '(' ? " " : ": ") + p;
  }
  return label;
}

}  // namespace

void rethrow_for_argument(const std::string& command, const std::string& argument, const std::string& path) {
  try {
    throw;
  } catch (const io::FileError& e) {
    throw io::FileError(command, argument_label(e, argument, path), e.expected(), e.received());
  } catch (const io::FormatError& e) {
    throw io::FormatError(command, argument_label(e, argument, path), e.expected(), e.received());
  } catch (const ShapeError& e) {
    throw ShapeError(command, argument_label(e, argument, path), e.expected(), e.received());
  } catch (const ArgumentError& e) {
    throw ArgumentError(command, argument_label(e, argument, path), e.expected(), e.received());
  } catch (const NumericalError& e) {
    throw NumericalError(command, argument_label(e, argument, path), e.expected(), e.received());
  } catch (const StateError& e) {
    throw StateError(command, argument_label(e, argument, path), e.expected(), e.received());
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    throw Error(command, argument_label(e, argument, path), e.expected(), e.received());
  }
}

Tensor read_array_argument(const std::string& path, const std::string& command, const std::string& argument) {
  try {
    return io::read_array(path);
  } catch (const Error&) {
    rethrow_for_argument(command, argument, path);
  }
}

io::ImageDataset load_data_dir_argument(const std::filesystem::path& dir, const std::string& command,
                                        io::ImageDataset (*load)(const std::filesystem::path&)) {
  try {
    return load(dir);
  } catch (const Error&) {
    rethrow_for_argument(command, "--data-dir", dir.string());
  }
}

std::optional<Shape> model_input_shape(const nn::Model& model) {
  if (const auto& declared = model.input_shape()) return declared;
  // A Sequential built lazily: a first Dense layer that is built fixes the width.
  if (!model.layers().empty()) {
    if (auto* dense = dynamic_cast<nn::Dense*>(model.layers().front().get()); dense && dense->kernel()) {
      return Shape{-1, dense->kernel()->value.dim(0)};
    }
  }
  return std::nullopt;
}

std::unique_ptr<nn::Model> load_model_argument(const std::string& path, const std::string& command,
                                               const std::string& argument) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) {
    throw io::FileError(command, argument + " " + printable(path, 0), "a model file (.keras, or legacy .h5)",
                        "no such file");
  }
  if (std::filesystem::is_directory(status)) {
    throw io::FileError(command, argument + " " + printable(path, 0), "a model file (.keras, or legacy .h5)", "a folder");
  }
  try {
    return io::load_model(path);
  } catch (const Error&) {
    rethrow_for_argument(command, argument, path);
  }
}

Tensor read_model_input(const std::string& path, const nn::Model& model, const std::string& command,
                        const std::string& argument) {
  Tensor x = read_array_argument(path, command, argument);
  const std::optional<Shape> input = model_input_shape(model);
  if (!input) return x;  // the model checks it when called
  std::int64_t features = 1;
  bool known = true;
  for (int i = 1; i < input->rank(); ++i) {
    if ((*input)[i] < 0) known = false;
    features *= (*input)[i];
  }
  if (!known) return x;
  const Shape file_shape = x.shape();
  if (x.rank() == 0) x = x.reshaped(Shape{1, 1});
  if (x.rank() == 1) x = features == 1 ? x.reshaped(Shape{x.dim(0), 1}) : x.reshaped(Shape{1, x.dim(0)});
  const std::int64_t rows = x.dim(0);
  if (rows == 0) {
    throw ShapeError(command, argument + " " + printable(path, 0), "at least one row",
                     "no rows (file shape " + file_shape.str() + ")");
  }
  const std::int64_t width = x.numel() / rows;
  if (width != features) {
    throw ShapeError(command, argument + " " + printable(path, 0),
                     "rows of " + count_of(features, "value") + " (the model's input shape " +
                         shape_without_batch(*input) + ")",
                     "rows of " + count_of(width, "value") + " (file shape " + file_shape.str() + ")");
  }
  std::vector<std::int64_t> dims = input->dims();
  dims[0] = rows;
  return x.reshaped(Shape(dims));
}

std::int64_t row_width(const Tensor& t) {
  return t.rank() <= 1 ? 1 : t.numel() / t.dim(0);
}

double argmax_accuracy(const Tensor& y, const Tensor& classes) {
  const std::int64_t n = y.dim(0), c = row_width(y);
  std::int64_t correct = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float* p = y.data() + i * c;
    correct += std::max_element(p, p + c) - p == static_cast<std::int64_t>(classes[i]);
  }
  return n > 0 ? static_cast<double>(correct) / static_cast<double>(n) : 0.0;
}

Tensor fashion_mnist_input(const nn::Model& model, Tensor x, const io::ImageDataset& data,
                           const std::string& command, const std::string& model_path, const std::string& what,
                           const std::string& alternative) {
  const auto input = model_input_shape(model);
  if (input && input->rank() == 2 && (*input)[1] >= 0 && (*input)[1] != x.dim(1)) {
    throw ShapeError(command, "MODEL " + printable(model_path, 0),
                     "a model of " + std::to_string(x.dim(1)) + " inputs for " + what + " (or give " +
                         alternative + ")",
                     "input shape " + input->str());
  }
  if (input && input->rank() > 2) return x.reshaped(Shape{x.dim(0), data.height, data.width});
  return x;
}

}  // namespace bnorm::cli
