// bnorm/nn/merge.hpp: the Keras merge layers, which take a LIST of inputs:
//   Add, Subtract (exactly two), Multiply, Average, Maximum, Minimum, Concatenate.
//
//   z = (*std::make_shared<nn::Add>())({a, b});   // Keras: z = layers.Add()([a, b])
//
// Element-wise merges (Keras 3 semantics): the inputs have the same rank and their shapes
// broadcast as NumPy's do (a dimension of 1 stretches: EfficientNet's squeeze-and-excite
// Multiply of (N, H, W, C) by (N, 1, 1, C)); the output has the broadcast shape. The
// gradient of a stretched input is summed over the stretched dimensions.
//   Add       y = x0 + x1 + ...          dx_i = dy
//   Subtract  y = x0 - x1                dx0 = dy, dx1 = -dy
//   Multiply  y = x0 * x1 * ...          dx_i = dy * prod_{j != i} x_j
//   Average   y = (x0 + x1 + ...) / n    dx_i = dy / n
//   Maximum   y = max(...max(x0, x1)..., x_{n-1})   the gradient goes to the input that
//   Minimum   y = min(...)                           gives y, the first one on ties (TF's
//                                                    maximum/minimum gradients, applied
//                                                    left to right as Keras computes it)
// Concatenate(axis = -1): along `axis` (negative counts from the end; not the batch
// axis); the other dimensions must agree.
// Errors: fewer than two inputs (ArgumentError), ranks or shapes that do not broadcast /
// concatenate (ShapeError naming the input); nothing is changed by a failed call.
#pragma once

#include <string>
#include <vector>

#include "bnorm/nn/layer.hpp"

namespace bnorm::nn {

// What the merge layers share: no weights, a list of inputs, trainable flag kept.
class MergeLayer : public Layer {
 public:
  const std::string& name() const noexcept override { return name_; }
  bool trainable() const noexcept override { return trainable_; }
  void set_trainable(bool t) override { trainable_ = t; }
  bool takes_input_list() const noexcept override { return true; }
  void build(const Shape& input_shape) override;  // ArgumentError: a merge takes a list
  bool built() const noexcept override { return true; }
  void build_inputs(const std::vector<Shape>& input_shapes) override;
  Shape compute_output_shape(const Shape& input_shape) const override;  // ArgumentError
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context, UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  std::vector<Variable*> weights() override { return {}; }

 protected:
  explicit MergeLayer(std::string name) : name_(std::move(name)) {}
  // ArgumentError unless there are at least two inputs (exactly two for Subtract).
  void require_count(std::size_t count) const;

 private:
  std::string name_;
  bool trainable_ = true;
};

enum class MergeOp { add, subtract, multiply, average, maximum, minimum };

class ElementwiseMerge : public MergeLayer {
 public:
  ElementwiseMerge(MergeOp op, std::string name);
  std::string class_name() const override;
  MergeOp op() const noexcept { return op_; }
  Shape compute_output_shape_inputs(const std::vector<Shape>& input_shapes) const override;
  Tensor forward_inputs(const std::vector<const Tensor*>& xs, bool training, std::unique_ptr<LayerContext>* context,
                        UpdateSink* updates) override;
  std::vector<Tensor> backward_inputs(const LayerContext& context, const Tensor& dy, Gradients& grads) override;

 private:
  MergeOp op_;
};

class Add : public ElementwiseMerge {
 public:
  explicit Add(std::string name = "");
};
class Subtract : public ElementwiseMerge {
 public:
  explicit Subtract(std::string name = "");
};
class Multiply : public ElementwiseMerge {
 public:
  explicit Multiply(std::string name = "");
};
class Average : public ElementwiseMerge {
 public:
  explicit Average(std::string name = "");
};
class Maximum : public ElementwiseMerge {
 public:
  explicit Maximum(std::string name = "");
};
class Minimum : public ElementwiseMerge {
 public:
  explicit Minimum(std::string name = "");
};

class Concatenate : public MergeLayer {
 public:
  explicit Concatenate(int axis = -1, std::string name = "");
  std::string class_name() const override { return "Concatenate"; }
  int axis() const noexcept { return axis_; }
  Shape compute_output_shape_inputs(const std::vector<Shape>& input_shapes) const override;
  Tensor forward_inputs(const std::vector<const Tensor*>& xs, bool training, std::unique_ptr<LayerContext>* context,
                        UpdateSink* updates) override;
  std::vector<Tensor> backward_inputs(const LayerContext& context, const Tensor& dy, Gradients& grads) override;

 private:
  int axis_;
};

}  // namespace bnorm::nn
