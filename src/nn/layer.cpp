#include "bnorm/nn/layer.hpp"

#include "bnorm/core/error.hpp"

namespace bnorm::nn {

void accumulate(Gradients& grads, const Variable* v, const Tensor& g) {
  auto it = grads.find(v);
  if (it == grads.end()) {
    grads.emplace(v, g);
    return;
  }
  Tensor& acc = it->second;
  for (std::int64_t i = 0; i < acc.numel(); ++i) acc[i] += g[i];
}

std::vector<const Variable*> Layer::weights() const {
  std::vector<const Variable*> out;
  for (Variable* v : const_cast<Layer*>(this)->weights()) out.push_back(v);
  return out;
}

namespace {
void require_one_input(const std::string& where, std::size_t count) {
  if (count != 1) {
    throw ArgumentError(where, "inputs", "one input tensor (this layer does not take a list)",
                        std::to_string(count) + " tensors");
  }
}
}  // namespace

void Layer::build_inputs(const std::vector<Shape>& input_shapes) {
  require_one_input(where(), input_shapes.size());
  build(input_shapes[0]);
}

Shape Layer::compute_output_shape_inputs(const std::vector<Shape>& input_shapes) const {
  require_one_input(where(), input_shapes.size());
  return compute_output_shape(input_shapes[0]);
}

Tensor Layer::forward_inputs(const std::vector<const Tensor*>& xs, bool training, std::unique_ptr<LayerContext>* context,
                             UpdateSink* updates) {
  require_one_input(where(), xs.size());
  return forward(*xs[0], training, context, updates);
}

std::vector<Tensor> Layer::backward_inputs(const LayerContext& context, const Tensor& dy, Gradients& grads) {
  std::vector<Tensor> out;
  out.push_back(backward(context, dy, grads));
  return out;
}

void Layer::backward_variables(const LayerContext& context, const Tensor& dy, Gradients& grads) {
  (void)backward(context, dy, grads);
}

std::vector<Variable*> Layer::trainable_weights() {
  std::vector<Variable*> out;
  if (!trainable()) return out;
  for (Variable* v : weights())
    if (v->trainable) out.push_back(v);
  return out;
}

std::vector<Variable*> Layer::non_trainable_weights() {
  std::vector<Variable*> out;
  for (Variable* v : weights())
    if (!trainable() || !v->trainable) out.push_back(v);
  return out;
}

std::vector<Tensor> Layer::get_weights() const {
  std::vector<Tensor> out;
  for (const Variable* v : weights()) out.push_back(v->value);
  return out;
}

void Layer::set_weights(const std::vector<Tensor>& values) {
  std::vector<Variable*> vars = weights();
  if (values.size() != vars.size()) {
    std::string names;
    for (const Variable* v : vars) names += (names.empty() ? "" : ", ") + v->name;
    throw ShapeError(where(), "weights", std::to_string(vars.size()) + " arrays (" + names + ")",
                     std::to_string(values.size()) + " arrays");
  }
  for (std::size_t i = 0; i < vars.size(); ++i) {
    if (values[i].shape() != vars[i]->value.shape()) {
      throw ShapeError(where(), vars[i]->name, "shape " + vars[i]->value.shape().str(), values[i].shape().str());
    }
  }
  for (std::size_t i = 0; i < vars.size(); ++i) vars[i]->value = values[i];
}

std::vector<float> Layer::losses() const {
  std::vector<float> out;
  if (!trainable()) return out;  // Keras 3 counts regularizers of trainable weights only
  for (const Variable* v : weights())
    if (v->trainable && v->regularizer.active()) out.push_back(v->regularizer.loss(v->value));
  return out;
}

void Layer::add_regularization_gradients(Gradients& grads) {
  for (Variable* v : trainable_weights()) {
    if (!v->regularizer.active()) continue;
    Tensor g(v->value.shape());
    v->regularizer.add_gradient(v->value, g);
    accumulate(grads, v, g);
  }
}

void Layer::apply_constraints() {
  for (Variable* v : weights())
    if (v->constraint.active()) v->constraint.apply(v->value);
}

}  // namespace bnorm::nn
