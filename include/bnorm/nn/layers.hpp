// bnorm/nn/layers.hpp: the Keras core layers that surround batch normalization in the
// articles: InputLayer, Dense, Activation, Dropout, Flatten.
//
// Each is a bnorm::nn::Layer (layer.hpp): explicit training argument, weights in Keras
// order, typed errors that leave the layer unchanged. Create them with std::make_shared
// (models and the functional API hold layers by shared_ptr).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bnorm/kernels/activation.hpp"
#include "bnorm/nn/data_format.hpp"
#include "bnorm/nn/initializers.hpp"
#include "bnorm/nn/layer.hpp"
#include "bnorm/nn/regularizers.hpp"

namespace bnorm::nn {

// Keras InputLayer: declares the input shape of a Sequential model (without the batch
// dimension); the identity otherwise.
class InputLayer : public Layer {
 public:
  explicit InputLayer(std::vector<std::int64_t> shape, std::string name = "");
  std::string class_name() const override { return "InputLayer"; }
  const std::string& name() const noexcept override { return name_; }
  bool trainable() const noexcept override { return false; }
  void set_trainable(bool) override {}
  void build(const Shape&) override {}
  bool built() const noexcept override { return true; }
  Shape compute_output_shape(const Shape& input_shape) const override { return input_shape; }
  // The declared shape with batch dimension -1, e.g. (-1, 10).
  Shape batch_shape() const;
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  std::vector<Variable*> weights() override { return {}; }

 private:
  std::vector<std::int64_t> shape_;
  std::string name_;
};

struct DenseOptions {
  // A name kernels::activation_from_name knows (Keras 3 meanings; "hard_sigmoid_keras2"
  // is the Keras 2 hard_sigmoid, kernels::activation_unique_name gives it).
  std::string activation = "linear";
  bool use_bias = true;
  Initializer kernel_initializer = Initializer::glorot_uniform();
  Initializer bias_initializer = Initializer::zeros();
  Regularizer kernel_regularizer{};
  Regularizer bias_regularizer{};
  Constraint kernel_constraint{};
  Constraint bias_constraint{};
  std::vector<std::int64_t> input_shape{};  // Keras input_shape=(10,): declares a Sequential's input
  bool trainable = true;
  std::string name{};  // empty: "dense", "dense_1", ...
};

// Keras Dense: y = activation(x @ kernel + bias) on the last axis; kernel (K, units),
// bias (units). Inputs of rank > 2 apply to the last axis.
class Dense : public Layer {
 public:
  explicit Dense(std::int64_t units, DenseOptions options = {});
  std::string class_name() const override { return "Dense"; }
  const std::string& name() const noexcept override { return name_; }
  bool trainable() const noexcept override { return trainable_; }
  void set_trainable(bool t) override { trainable_ = t; }
  void build(const Shape& input_shape) override;
  bool built() const noexcept override { return kernel_.has_value(); }
  Shape compute_output_shape(const Shape& input_shape) const override;
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  void backward_variables(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  std::vector<Variable*> weights() override;

  std::int64_t units() const noexcept { return units_; }
  const DenseOptions& options() const noexcept { return options_; }
  kernels::Activation activation() const noexcept { return activation_; }
  Variable* kernel() noexcept { return kernel_ ? &*kernel_ : nullptr; }
  Variable* bias() noexcept { return bias_ ? &*bias_ : nullptr; }

 private:
  std::int64_t units_;
  DenseOptions options_;
  kernels::Activation activation_;
  std::string name_;
  bool trainable_;
  std::optional<Variable> kernel_, bias_;
  // backward(), with dx only when `dx` is non-null (assigned, shaped as the input).
  void backward_into(const LayerContext& context, const Tensor& dy, Gradients& grads, Tensor* dx);
};

// Keras Activation layer: applies a named activation on the last axis.
class Activation : public Layer {
 public:
  // A name as kernels::activation_from_name reads it (Keras 3 meanings).
  explicit Activation(const std::string& activation, std::string name = "");
  // The enum itself (e.g. kernels::Activation::hard_sigmoid_keras2 for a Keras 2 file).
  explicit Activation(kernels::Activation activation, std::string name = "");
  std::string class_name() const override { return "Activation"; }
  const std::string& name() const noexcept override { return name_; }
  bool trainable() const noexcept override { return trainable_; }
  void set_trainable(bool t) override { trainable_ = t; }
  void build(const Shape&) override {}
  bool built() const noexcept override { return true; }
  Shape compute_output_shape(const Shape& input_shape) const override { return input_shape; }
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  std::vector<Variable*> weights() override { return {}; }
  kernels::Activation activation() const noexcept { return activation_; }

 private:
  kernels::Activation activation_;
  std::string name_;
  bool trainable_ = true;
};

// Keras Dropout: in training, zeroes each element with probability `rate` and scales the
// others by 1 / (1 - rate); in inference, the identity. The mask comes from a seeded
// counter-based generator (deterministic, but not TensorFlow's random stream).
class Dropout : public Layer {
 public:
  explicit Dropout(double rate, std::uint64_t seed = 0, std::string name = "");
  std::string class_name() const override { return "Dropout"; }
  const std::string& name() const noexcept override { return name_; }
  bool trainable() const noexcept override { return trainable_; }
  void set_trainable(bool t) override { trainable_ = t; }
  void build(const Shape&) override {}
  bool built() const noexcept override { return true; }
  Shape compute_output_shape(const Shape& input_shape) const override { return input_shape; }
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  std::vector<Variable*> weights() override { return {}; }
  double rate() const noexcept { return rate_; }
  // Keras noise_shape: the mask's shape, broadcast over the input (-1 for Keras's None:
  // the input's size); empty (the default): one draw per element.
  const std::vector<std::int64_t>& noise_shape() const noexcept { return noise_shape_; }
  void set_noise_shape(std::vector<std::int64_t> shape) { noise_shape_ = std::move(shape); }
  // Number of training calls made: the generator's position, part of the layer's state.
  std::uint64_t calls() const noexcept { return calls_; }
  // The generator's whole state, (seed, calls), for checkpoints: restoring it makes the
  // next training call draw the mask an uninterrupted run would have drawn.
  std::uint64_t seed() const noexcept { return seed_; }
  void set_generator_state(std::uint64_t seed, std::uint64_t calls) noexcept {
    seed_ = seed;
    calls_ = calls;
  }

 private:
  double rate_;
  std::vector<std::int64_t> noise_shape_;
  std::uint64_t seed_;
  std::uint64_t calls_ = 0;
  std::string name_;
  bool trainable_ = true;
};

// Keras Flatten: (N, d1, d2, ...) -> (N, d1 * d2 * ...). With channels_first, the input
// (N, C, d1, ...) is flattened in channels_last order (d1, ..., C), as Keras does.
class Flatten : public Layer {
 public:
  explicit Flatten(std::string name = "", DataFormat data_format = DataFormat::channels_last);
  DataFormat data_format() const noexcept { return data_format_; }
  std::string class_name() const override { return "Flatten"; }
  const std::string& name() const noexcept override { return name_; }
  bool trainable() const noexcept override { return trainable_; }
  void set_trainable(bool t) override { trainable_ = t; }
  void build(const Shape&) override {}
  bool built() const noexcept override { return true; }
  Shape compute_output_shape(const Shape& input_shape) const override;
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  std::vector<Variable*> weights() override { return {}; }

 private:
  std::string name_;
  DataFormat data_format_;
  bool trainable_ = true;
};

}  // namespace bnorm::nn
