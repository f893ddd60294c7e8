// What `bnorm predict`, `evaluate` and `inspect` share: loading the MODEL argument, and
// reading an INPUT file as the model's input.
#include <filesystem>
#include <string>

#include "bnorm/io/array_file.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/layers.hpp"
#include "commands.hpp"

namespace bnorm::cli {

namespace {

std::string shape_without_batch(const Shape& s) {
  return Shape(std::vector<std::int64_t>(s.dims().begin() + 1, s.dims().end())).str();
}

}  // namespace

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
    throw io::FileError(command, argument, "a model file (.keras, or legacy .h5)", "'" + path + "', which does not exist");
  }
  if (std::filesystem::is_directory(status)) {
    throw io::FileError(command, argument, "a model file (.keras, or legacy .h5)", "'" + path + "', a folder");
  }
  return io::load_model(path);
}

Tensor read_model_input(const std::string& path, const nn::Model& model, const std::string& command,
                        const std::string& argument) {
  Tensor x = io::read_array(path);
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
    throw ShapeError(command, argument + " " + path, "at least one row", "no rows (file shape " + file_shape.str() + ")");
  }
  const std::int64_t width = x.numel() / rows;
  if (width != features) {
    throw ShapeError(command, argument + " " + path,
                     "rows of " + std::to_string(features) + " values (the model's input shape " +
                         shape_without_batch(*input) + ")",
                     "rows of " + std::to_string(width) + " values (file shape " + file_shape.str() + ")");
  }
  std::vector<std::int64_t> dims = input->dims();
  dims[0] = rows;
  return x.reshaped(Shape(dims));
}

}  // namespace bnorm::cli
