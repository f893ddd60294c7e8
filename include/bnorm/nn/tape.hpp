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
// The tape records each layer call made with it (in order) and backpropagates in reverse
// through the graph the calls form: a model call records its layer calls with the tensors
// each one read (branches, merges, a tensor used by several layers: its gradient is the
// sum over its users); calls recorded one by one with record(layer, context) form a chain
// (each call reads the previous call's output), and so do successive model calls. The
// gradient is taken of sum(y * dy) for the output y of the last call (or model call), so
// pass dL/dy (LossValue::grad).
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "bnorm/core/tensor.hpp"
#include "bnorm/nn/layer.hpp"

namespace bnorm::nn {

class GradientTape {
 public:
  // A forward call of `layer` and its context, reading the output of the previous call
  // (the chain; the first call reads the tape's input).
  void record(Layer& layer, std::unique_ptr<LayerContext> context);
  // Graph recording (what models do): tensors are numbered by the tape. chain_tensor()
  // is the tensor the next chained call reads (the tape's input when empty);
  // new_tensor() numbers an output; record(..., inputs, output) records a call reading
  // `inputs`; set_chain_tensor(t) makes t the tensor the gradient starts from and the
  // next chained call reads.
  int chain_tensor() const noexcept { return chain_; }
  int new_tensor() noexcept { return next_tensor_++; }
  void record(Layer& layer, std::unique_ptr<LayerContext> context, std::vector<int> inputs, int output);
  void set_chain_tensor(int tensor) noexcept { chain_ = tensor; }
  bool empty() const noexcept { return calls_.empty(); }
  void reset() noexcept;

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

  // The backward pass both use (and nested models, whose tape lives in their context):
  // accumulates into `grads`; returns dL/d(input) when `input_gradient`, else an empty
  // tensor and only what the variables' gradients need runs.
  Tensor backpropagate(const Tensor& dy, Gradients& grads, bool input_gradient) const;

 private:
  struct Call {
    Layer* layer;
    std::unique_ptr<LayerContext> context;
    std::vector<int> inputs;
    int output;
  };
  void require_calls() const;  // StateError on an empty tape
  std::vector<Call> calls_;
  int chain_ = 0;        // tensor 0 is the tape's input
  int next_tensor_ = 1;
  Tensor input_gradient_;
};

// Python's zip(grads, vars) for Optimizer::apply_gradients.
std::vector<std::pair<Tensor, Variable*>> zip(const std::vector<Tensor>& grads, const std::vector<Variable*>& vars);

}  // namespace bnorm::nn
