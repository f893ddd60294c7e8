#include "bnorm/nn/transfer.hpp"

#include "bnorm/core/error.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/spatial.hpp"

namespace bnorm::nn {

std::shared_ptr<Model> transfer_model(const std::shared_ptr<Model>& base,
                                      const TransferHeadOptions& options) {
  const std::string where = "transfer_model";
  if (!base) throw ArgumentError(where, "base", "a model", "a null pointer");
  if (options.classes < 1) {
    throw ArgumentError(where, "classes", "at least 1", std::to_string(options.classes));
  }
  if (!(options.dropout >= 0.0 && options.dropout < 1.0)) {
    throw ArgumentError(where, "dropout", "a rate in [0, 1)", std::to_string(options.dropout));
  }
  const std::optional<Shape>& input = base->input_shape();
  if (!input) {
    throw ArgumentError(where, "base '" + base->name() + "'", "a model with a declared input shape",
                        "a model without one");
  }
  const Shape output = base->compute_output_shape(*input);
  if (output.rank() != 4 && output.rank() != 2) {
    throw ArgumentError(where, "base '" + base->name() + "'",
                        "an output of rank 4 (batch, H, W, C) or 2 (batch, features)",
                        "output shape " + output.str());
  }
  std::vector<std::int64_t> dims(input->dims().begin() + 1, input->dims().end());
  auto inputs = Input(dims);
  base->set_trainable(false);
  auto x = (*base)(inputs, /*training=*/false);
  if (output.rank() == 4) x = (*std::make_shared<GlobalAveragePooling2D>())(x);
  x = (*std::make_shared<Dropout>(options.dropout, options.dropout_seed))(x);
  x = (*std::make_shared<Dense>(
      options.classes, DenseOptions{.activation = options.activation, .name = options.head_name}))(x);
  return std::make_shared<Model>(inputs, x);
}

}  // namespace bnorm::nn
