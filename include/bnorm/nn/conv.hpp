// bnorm/nn/conv.hpp: the Keras convolution layers Conv2D, Conv1D, DepthwiseConv2D and
// SeparableConv2D (../shared/spec/CNN.md section 1), on the kernels of
// bnorm/kernels/conv.hpp.
//
// Each is a bnorm::nn::Layer (layer.hpp): explicit training argument (convolutions behave
// the same in both modes), weights in Keras 3 order and names, typed errors that name the
// argument and leave the layer unchanged. Create them with std::make_shared.
//
// Semantics, as Keras 3:
//   y = activation(conv(x, kernel) + bias), a cross-correlation (CNN.md section 1.3);
//   padding "same": output ceil(n / stride), the odd padding pixel AFTER (bottom/right);
//   "valid": none; Conv1D "causal": dilation*(k-1) zeros before, none after.
//   The kernel layout does not depend on data_format:
//     Conv2D           kernel (kh, kw, Cin/groups, filters), bias (filters)
//     Conv1D           kernel (k, Cin/groups, filters),      bias (filters)
//     DepthwiseConv2D  kernel (kh, kw, Cin, depth_multiplier), bias (Cin*depth_multiplier);
//                      output channel c*depth_multiplier + m
//     SeparableConv2D  depthwise_kernel (kh, kw, Cin, dm), pointwise_kernel (1, 1, Cin*dm,
//                      filters), bias (filters): a depthwise conv without bias, then a 1x1
//                      conv, then the bias.
//   The bias is added on the channel axis for channels_first too (the mathematically
//   correct result, not Keras >= 3.7's TF-backend bias_add shortcut, CNN.md section 1.4).
//   Conv1D/Conv2D refuse strides > 1 together with dilation_rate > 1 (ArgumentError, as
//   Keras); DepthwiseConv2D and SeparableConv2D accept both (Keras 3.15: the dilated conv
//   at stride 1, subsampled, which is the strided dilated conv computed here).
//   kernel_initializer glorot_uniform uses Keras's fans for convolution kernels:
//   fan_in = receptive field * shape[-2], fan_out = receptive field * shape[-1].
//   activity_regularizer and lora are not supported.
//
// Errors. Construction: ArgumentError for a non-positive filters/kernel size/stride/
// dilation/groups/depth_multiplier, filters not divisible by groups, strides with
// dilation on Conv1D/Conv2D, causal padding on a 2-D layer, an unknown activation.
// build/forward: ShapeError for a wrong input rank, an unknown or changed channel count,
// channels not divisible by groups, and a (dilated) kernel larger than the padded input.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bnorm/kernels/activation.hpp"
#include "bnorm/kernels/conv.hpp"
#include "bnorm/nn/data_format.hpp"
#include "bnorm/nn/initializers.hpp"
#include "bnorm/nn/layer.hpp"
#include "bnorm/nn/regularizers.hpp"

namespace bnorm::nn {

// Keras Conv2D settings other than filters and kernel_size (with Keras's defaults).
struct Conv2DOptions {
  std::array<std::int64_t, 2> strides{1, 1};
  Padding padding = Padding::valid;  // valid or same
  DataFormat data_format = DataFormat::channels_last;
  std::array<std::int64_t, 2> dilation_rate{1, 1};
  std::int64_t groups = 1;
  std::string activation = "linear";
  bool use_bias = true;
  Initializer kernel_initializer = Initializer::glorot_uniform();
  Initializer bias_initializer = Initializer::zeros();
  Regularizer kernel_regularizer{};
  Regularizer bias_regularizer{};
  Constraint kernel_constraint{};
  Constraint bias_constraint{};
  std::vector<std::int64_t> input_shape{};  // Keras input_shape=(H, W, C): declares a Sequential's input
  bool trainable = true;
  std::string name{};  // empty: "conv2d", "conv2d_1", ...
};

// Keras Conv1D settings other than filters and kernel_size.
struct Conv1DOptions {
  std::int64_t strides = 1;
  Padding padding = Padding::valid;  // valid, same or causal
  DataFormat data_format = DataFormat::channels_last;  // (N, steps, C) or (N, C, steps)
  std::int64_t dilation_rate = 1;
  std::int64_t groups = 1;
  std::string activation = "linear";
  bool use_bias = true;
  Initializer kernel_initializer = Initializer::glorot_uniform();
  Initializer bias_initializer = Initializer::zeros();
  Regularizer kernel_regularizer{};
  Regularizer bias_regularizer{};
  Constraint kernel_constraint{};
  Constraint bias_constraint{};
  std::vector<std::int64_t> input_shape{};
  bool trainable = true;
  std::string name{};  // empty: "conv1d", ...
};

// Keras DepthwiseConv2D settings other than kernel_size.
struct DepthwiseConv2DOptions {
  std::int64_t depth_multiplier = 1;
  std::array<std::int64_t, 2> strides{1, 1};
  Padding padding = Padding::valid;
  DataFormat data_format = DataFormat::channels_last;
  std::array<std::int64_t, 2> dilation_rate{1, 1};
  std::string activation = "linear";
  bool use_bias = true;
  Initializer depthwise_initializer = Initializer::glorot_uniform();
  Initializer bias_initializer = Initializer::zeros();
  Regularizer depthwise_regularizer{};
  Regularizer bias_regularizer{};
  Constraint depthwise_constraint{};
  Constraint bias_constraint{};
  std::vector<std::int64_t> input_shape{};
  bool trainable = true;
  std::string name{};  // empty: "depthwise_conv2d", ...
};

// Keras SeparableConv2D settings other than filters and kernel_size.
struct SeparableConv2DOptions {
  std::int64_t depth_multiplier = 1;
  std::array<std::int64_t, 2> strides{1, 1};
  Padding padding = Padding::valid;
  DataFormat data_format = DataFormat::channels_last;
  std::array<std::int64_t, 2> dilation_rate{1, 1};
  std::string activation = "linear";
  bool use_bias = true;
  Initializer depthwise_initializer = Initializer::glorot_uniform();
  Initializer pointwise_initializer = Initializer::glorot_uniform();
  Initializer bias_initializer = Initializer::zeros();
  Regularizer depthwise_regularizer{};
  Regularizer pointwise_regularizer{};
  Regularizer bias_regularizer{};
  Constraint depthwise_constraint{};
  Constraint pointwise_constraint{};
  Constraint bias_constraint{};
  std::vector<std::int64_t> input_shape{};
  bool trainable = true;
  std::string name{};  // empty: "separable_conv2d", ...
};

// The shared machinery of the four layers: the spatial settings as one 2-D description
// (Conv1D is H == 1), the variables, forward and backward. Not a Keras class.
class ConvLayerBase : public Layer {
 public:
  const std::string& name() const noexcept override { return name_; }
  bool trainable() const noexcept override { return trainable_; }
  void set_trainable(bool t) override { trainable_ = t; }
  void build(const Shape& input_shape) override;
  bool built() const noexcept override { return built_; }
  Shape compute_output_shape(const Shape& input_shape) const override;
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  void backward_variables(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  std::vector<Variable*> weights() override;

  kernels::Activation activation() const noexcept { return activation_; }
  DataFormat data_format() const noexcept { return data_format_; }
  Padding padding() const noexcept { return padding_; }
  // Input channels the layer was built for (0 before build).
  std::int64_t input_channels() const noexcept { return cin_; }
  Variable* bias() noexcept { return bias_ ? &*bias_ : nullptr; }

  // The kernel description of a call on an input of this shape (rank 3 or 4 with the
  // batch first; -1 batch is taken as 0). Throws ShapeError as forward would.
  kernels::Conv2dDesc describe(const Shape& input_shape) const;

  // Spatial settings as 2-D (a 1-D layer has the height axis fixed at 1).
  struct Spatial {
    int rank = 2;  // 1: Conv1D, 2: the others
    std::int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1;
    Padding padding = Padding::valid;
    DataFormat data_format = DataFormat::channels_last;
  };

 protected:
  ConvLayerBase(const std::string& default_name, const std::string& name, Spatial spatial,
                const std::string& activation, bool trainable);
  // Validation shared by the constructors (call at the end of each derived constructor).
  void check_settings(bool refuse_strides_with_dilation) const;
  // Output channels for `cin` input channels.
  virtual std::int64_t output_channels(std::int64_t cin) const = 0;
  // Output channels of the main convolution (SeparableConv2D: of its depthwise step).
  virtual std::int64_t main_channels(std::int64_t cin) const { return output_channels(cin); }
  // Groups of the main convolution for `cin` input channels.
  virtual std::int64_t groups_for(std::int64_t cin) const = 0;
  // Creates the layer's kernel variables (and bias) for `cin` input channels.
  virtual void make_variables(std::int64_t cin) = 0;
  Spatial spatial_;
  std::string name_;
  bool trainable_;
  kernels::Activation activation_;
  DataFormat data_format_;
  Padding padding_;
  bool built_ = false;
  std::int64_t cin_ = 0;
  // kernel_: the main kernel (Conv kernel, depthwise kernel); pointwise_: Separable's 1x1.
  std::optional<Variable> kernel_, pointwise_, bias_;

 private:
  void backward_into(const LayerContext& context, const Tensor& dy, Gradients& grads, Tensor* dx);
};

// Keras Conv2D: inputs (N, H, W, C) channels_last or (N, C, H, W) channels_first.
class Conv2D : public ConvLayerBase {
 public:
  Conv2D(std::int64_t filters, std::array<std::int64_t, 2> kernel_size, Conv2DOptions options = {});
  std::string class_name() const override { return "Conv2D"; }
  std::int64_t filters() const noexcept { return filters_; }
  std::array<std::int64_t, 2> kernel_size() const noexcept { return kernel_size_; }
  const Conv2DOptions& options() const noexcept { return options_; }
  Variable* kernel() noexcept { return kernel_ ? &*kernel_ : nullptr; }

 protected:
  std::int64_t output_channels(std::int64_t) const override { return filters_; }
  std::int64_t groups_for(std::int64_t) const override { return options_.groups; }
  void make_variables(std::int64_t cin) override;

 private:
  std::int64_t filters_;
  std::array<std::int64_t, 2> kernel_size_;
  Conv2DOptions options_;
};

// Keras Conv1D: inputs (N, steps, C) channels_last or (N, C, steps) channels_first.
class Conv1D : public ConvLayerBase {
 public:
  Conv1D(std::int64_t filters, std::int64_t kernel_size, Conv1DOptions options = {});
  std::string class_name() const override { return "Conv1D"; }
  std::int64_t filters() const noexcept { return filters_; }
  std::int64_t kernel_size() const noexcept { return kernel_size_; }
  const Conv1DOptions& options() const noexcept { return options_; }
  Variable* kernel() noexcept { return kernel_ ? &*kernel_ : nullptr; }

 protected:
  std::int64_t output_channels(std::int64_t) const override { return filters_; }
  std::int64_t groups_for(std::int64_t) const override { return options_.groups; }
  void make_variables(std::int64_t cin) override;

 private:
  std::int64_t filters_;
  std::int64_t kernel_size_;
  Conv1DOptions options_;
};

// Keras DepthwiseConv2D: one (kh, kw) filter per input channel and multiplier.
class DepthwiseConv2D : public ConvLayerBase {
 public:
  explicit DepthwiseConv2D(std::array<std::int64_t, 2> kernel_size, DepthwiseConv2DOptions options = {});
  std::string class_name() const override { return "DepthwiseConv2D"; }
  std::array<std::int64_t, 2> kernel_size() const noexcept { return kernel_size_; }
  const DepthwiseConv2DOptions& options() const noexcept { return options_; }
  // The variable Keras 3 names "kernel" (tf.keras: "depthwise_kernel"), (kh, kw, Cin, dm).
  Variable* kernel() noexcept { return kernel_ ? &*kernel_ : nullptr; }

 protected:
  std::int64_t output_channels(std::int64_t cin) const override { return cin * options_.depth_multiplier; }
  std::int64_t groups_for(std::int64_t cin) const override { return cin; }
  void make_variables(std::int64_t cin) override;

 private:
  std::array<std::int64_t, 2> kernel_size_;
  DepthwiseConv2DOptions options_;
};

// Keras SeparableConv2D: DepthwiseConv2D (no bias), then a 1x1 Conv2D, then the bias.
class SeparableConv2D : public ConvLayerBase {
 public:
  SeparableConv2D(std::int64_t filters, std::array<std::int64_t, 2> kernel_size,
                  SeparableConv2DOptions options = {});
  std::string class_name() const override { return "SeparableConv2D"; }
  std::int64_t filters() const noexcept { return filters_; }
  std::array<std::int64_t, 2> kernel_size() const noexcept { return kernel_size_; }
  const SeparableConv2DOptions& options() const noexcept { return options_; }
  Variable* depthwise_kernel() noexcept { return kernel_ ? &*kernel_ : nullptr; }
  Variable* pointwise_kernel() noexcept { return pointwise_ ? &*pointwise_ : nullptr; }

 protected:
  std::int64_t output_channels(std::int64_t) const override { return filters_; }
  std::int64_t main_channels(std::int64_t cin) const override { return cin * options_.depth_multiplier; }
  std::int64_t groups_for(std::int64_t cin) const override { return cin; }
  void make_variables(std::int64_t cin) override;

 private:
  std::int64_t filters_;
  std::array<std::int64_t, 2> kernel_size_;
  SeparableConv2DOptions options_;
};

}  // namespace bnorm::nn
