// bnorm/nn/tape.hpp: the C++ counterpart of tf.GradientTape for custom training loops.
//
//   Python                                              C++
//   with tf.GradientTape() as tape:                     nn::GradientTape tape;
//       predictions = model(x, training=True)           Tensor predictions = model.call(x, true, &tape);
//       loss = loss_fn(y, predictions)                  nn::LossValue loss = loss_fn.compute(y, predictions);
//   grads = tape.gradient(loss, model.trainable_variables)
//                                                       auto grads = tape.gradient(loss.grad, model.trainable_weights());
//   optimizer.apply_gradients(zip(grads, model.trainable_variables))
//                                                       optimizer.apply_gradients(nn::zip(grads, model.trainable_weights()));
//
// The tape records each layer call made with it (in order) and backpropagates in reverse.
// The recorded calls must form a chain (each call's input is the previous call's output),
// which is what a Sequential or single-path functional model produces. The gradient is
// taken of sum(y * dy) for the last call's output y, so pass dL/dy (LossValue::grad).
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "bnorm/core/tensor.hpp"
#include "bnorm/nn/layer.hpp"

namespace bnorm::nn {

class GradientTape {
 public:
  // Called by models (and usable directly): a forward call of `layer` and its context.
  void record(Layer& layer, std::unique_ptr<LayerContext> context);
  bool empty() const noexcept { return calls_.empty(); }
  void reset() noexcept { calls_.clear(); }

  // Backpropagates dy through every recorded call; returns the gradients of all variables
  // touched, and sets input_gradient() to dL/dx of the first call. Throws StateError when
  // nothing was recorded.
  Gradients gradient(const Tensor& dy);
  // Gradients aligned with `sources` (zeros for a variable the calls did not touch).
  std::vector<Tensor> gradient(const Tensor& dy, const std::vector<Variable*>& sources);
  const Tensor& input_gradient() const noexcept { return input_gradient_; }
  // gradient(dy) for a training step: the same variable gradients, bit for bit, but no
  // input_gradient() (left empty): the calls before the first one with trainable
  // weights are skipped, and that one computes no dL/dx (Layer::backward_variables).
  // Model::train_step uses it: a Dense first layer's input gradient was 14-17 % of an
  // mlp784 step.
  Gradients variable_gradients(const Tensor& dy);

 private:
  void require_calls() const;  // StateError on an empty tape
  std::vector<std::pair<Layer*, std::unique_ptr<LayerContext>>> calls_;
  Tensor input_gradient_;
};

// Python's zip(grads, vars) for Optimizer::apply_gradients.
std::vector<std::pair<Tensor, Variable*>> zip(const std::vector<Tensor>& grads, const std::vector<Variable*>& vars);

}  // namespace bnorm::nn
