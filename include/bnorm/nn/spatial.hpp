// bnorm/nn/spatial.hpp: the Keras pooling, padding, reshaping and activation layers of
// convolutional networks (../shared/spec/CNN.md sections 2, 4 and 5):
//   ZeroPadding2D, Cropping2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D,
//   GlobalMaxPooling2D, UpSampling2D, Reshape, Permute, ReLU, LeakyReLU, Rescaling,
//   Normalization.
//
// Each is a bnorm::nn::Layer (layer.hpp). Each takes an options struct whose fields are
// the Keras config keys (Keras 3 names, Keras defaults), and returns it from options(),
// so a Keras file writer can write every setting back. Invalid settings throw
// ArgumentError from the constructor; an input that does not fit throws ShapeError from
// compute_output_shape / forward; a failed call changes nothing. Spatial layers take
// rank-4 inputs, (N, H, W, C) for channels_last and (N, C, H, W) for channels_first.
// Only Normalization has weights (non-trainable); no layer has trainable weights.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bnorm/nn/data_format.hpp"
#include "bnorm/nn/layer.hpp"

namespace bnorm::nn {

// Keras's normalized ((top, bottom), (left, right)) form of ZeroPadding2D's padding and
// Cropping2D's cropping (an int n means ((n, n), (n, n)), a pair (a, b) ((a, a), (b, b))).
using Margins2D = std::array<std::array<std::int64_t, 2>, 2>;
using Size2D = std::array<std::int64_t, 2>;  // (rows, cols): pool_size, strides, size

// The shared part of the layers below that hold no weights.
class WeightlessLayer : public Layer {
 public:
  const std::string& name() const noexcept override { return name_; }
  bool trainable() const noexcept override { return trainable_; }
  void set_trainable(bool t) override { trainable_ = t; }
  // Checks that the shape fits (compute_output_shape); nothing to create.
  void build(const Shape& input_shape) override { compute_output_shape(input_shape); }
  bool built() const noexcept override { return true; }
  std::vector<Variable*> weights() override { return {}; }

 protected:
  explicit WeightlessLayer(std::string name) : name_(std::move(name)) {}
  std::string name_;
  bool trainable_ = true;
};

// ---------------------------------------------------------------- padding, cropping

struct ZeroPadding2DOptions {
  Margins2D padding{{{1, 1}, {1, 1}}};  // ((top, bottom), (left, right)), each >= 0
  DataFormat data_format = DataFormat::channels_last;
  std::string name{};  // empty: "zero_padding2d", "zero_padding2d_1", ...
};

// Keras ZeroPadding2D: zeros around H and W. ((1,2),(3,0)) on 5x5 gives 8x8.
class ZeroPadding2D : public WeightlessLayer {
 public:
  explicit ZeroPadding2D(ZeroPadding2DOptions options = {});
  std::string class_name() const override { return "ZeroPadding2D"; }
  Shape compute_output_shape(const Shape& input_shape) const override;
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  const ZeroPadding2DOptions& options() const noexcept { return options_; }

 private:
  ZeroPadding2DOptions options_;
};

struct Cropping2DOptions {
  Margins2D cropping{{{0, 0}, {0, 0}}};  // ((top, bottom), (left, right)), each >= 0
  DataFormat data_format = DataFormat::channels_last;
  std::string name{};  // empty: "cropping2d", ...
};

// Keras Cropping2D: y = x[top : H - bottom, left : W - right]. The input must keep at
// least one row and column (Keras refuses a crop that leaves none).
class Cropping2D : public WeightlessLayer {
 public:
  explicit Cropping2D(Cropping2DOptions options = {});
  std::string class_name() const override { return "Cropping2D"; }
  Shape compute_output_shape(const Shape& input_shape) const override;
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  const Cropping2DOptions& options() const noexcept { return options_; }

 private:
  Cropping2DOptions options_;
};

// ---------------------------------------------------------------- pooling

struct Pooling2DOptions {
  Size2D pool_size{2, 2};            // each >= 1 (Keras 3 AveragePooling2D requires it; tf.keras (2, 2))
  std::optional<Size2D> strides{};   // nullopt: pool_size (Keras strides=None); each >= 1
  Padding padding = Padding::valid;  // valid or same (causal is refused)
  DataFormat data_format = DataFormat::channels_last;
  std::string name{};  // empty: "max_pooling2d" / "average_pooling2d", ...
};

// Keras MaxPooling2D / AveragePooling2D (kernels/pooling.hpp for the arithmetic): same
// padding splits as TensorFlow (odd extra cell after); padded cells never win a max, and
// an average divides by the number of REAL cells. With valid padding a window larger
// than the input is refused (ShapeError naming the input shape and pool_size).
class Pooling2D : public WeightlessLayer {
 public:
  Shape compute_output_shape(const Shape& input_shape) const override;
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  const Pooling2DOptions& options() const noexcept { return options_; }
  // The strides in use: options().strides, or pool_size when not set.
  Size2D strides() const noexcept { return options_.strides.value_or(options_.pool_size); }

 protected:
  Pooling2D(Pooling2DOptions options, bool max, const std::string& base_name);
  void validate() const;  // from the derived constructors, where class_name() is known

 private:
  Pooling2DOptions options_;
  bool max_;
};

class MaxPooling2D : public Pooling2D {
 public:
  explicit MaxPooling2D(Pooling2DOptions options = {});
  std::string class_name() const override { return "MaxPooling2D"; }
};

class AveragePooling2D : public Pooling2D {
 public:
  explicit AveragePooling2D(Pooling2DOptions options = {});
  std::string class_name() const override { return "AveragePooling2D"; }
};

struct GlobalPooling2DOptions {
  DataFormat data_format = DataFormat::channels_last;
  bool keepdims = false;  // true: (N, 1, 1, C), or (N, C, 1, 1) for channels_first
  std::string name{};     // empty: "global_average_pooling2d" / "global_max_pooling2d", ...
};

// Keras GlobalAveragePooling2D / GlobalMaxPooling2D: (N, H, W, C) -> (N, C) (max: the
// gradient goes to the first maximum in (h, w) order).
class GlobalPooling2D : public WeightlessLayer {
 public:
  Shape compute_output_shape(const Shape& input_shape) const override;
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  const GlobalPooling2DOptions& options() const noexcept { return options_; }

 protected:
  GlobalPooling2D(GlobalPooling2DOptions options, bool max, const std::string& base_name);

 private:
  GlobalPooling2DOptions options_;
  bool max_;
};

class GlobalAveragePooling2D : public GlobalPooling2D {
 public:
  explicit GlobalAveragePooling2D(GlobalPooling2DOptions options = {});
  std::string class_name() const override { return "GlobalAveragePooling2D"; }
};

class GlobalMaxPooling2D : public GlobalPooling2D {
 public:
  explicit GlobalMaxPooling2D(GlobalPooling2DOptions options = {});
  std::string class_name() const override { return "GlobalMaxPooling2D"; }
};

// ---------------------------------------------------------------- upsampling

enum class Interpolation { nearest, bilinear };
// "nearest" / "bilinear" (the two bnorm supports); any other name throws ArgumentError.
Interpolation interpolation_from_name(const std::string& name);
std::string interpolation_name(Interpolation interpolation);

struct UpSampling2DOptions {
  Size2D size{2, 2};  // each >= 1
  DataFormat data_format = DataFormat::channels_last;
  Interpolation interpolation = Interpolation::nearest;
  std::string name{};  // empty: "up_sampling2d", ...
};

// Keras UpSampling2D: nearest repeats each pixel size[0] x size[1] times; bilinear is
// tf.image.resize with half-pixel centres (kernels/pooling.hpp).
class UpSampling2D : public WeightlessLayer {
 public:
  explicit UpSampling2D(UpSampling2DOptions options = {});
  std::string class_name() const override { return "UpSampling2D"; }
  Shape compute_output_shape(const Shape& input_shape) const override;
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  const UpSampling2DOptions& options() const noexcept { return options_; }

 private:
  UpSampling2DOptions options_;
};

// ---------------------------------------------------------------- reshaping

struct ReshapeOptions {
  std::vector<std::int64_t> target_shape;  // without the batch; sizes >= 1, at most one -1
  std::string name{};                      // empty: "reshape", ...
};

// Keras Reshape: (N, ...) -> (N, target_shape...), the -1 inferred. Row-major order is
// kept (no data moves).
class Reshape : public WeightlessLayer {
 public:
  explicit Reshape(ReshapeOptions options);
  std::string class_name() const override { return "Reshape"; }
  Shape compute_output_shape(const Shape& input_shape) const override;
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  const ReshapeOptions& options() const noexcept { return options_; }

 private:
  ReshapeOptions options_;
};

struct PermuteOptions {
  std::vector<int> dims;  // 1-based, a permutation of 1..k (the batch axis 0 stays first)
  std::string name{};     // empty: "permute", ...
};

// Keras Permute: Permute((3, 1, 2)) on (N, 2, 2, 3) gives (N, 3, 2, 2).
class Permute : public WeightlessLayer {
 public:
  explicit Permute(PermuteOptions options);
  std::string class_name() const override { return "Permute"; }
  Shape compute_output_shape(const Shape& input_shape) const override;
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  const PermuteOptions& options() const noexcept { return options_; }

 private:
  PermuteOptions options_;
};

// ---------------------------------------------------------------- activation layers

struct ReLUOptions {
  std::optional<double> max_value{};  // nullopt: no cap (Keras None); else >= 0
  double negative_slope = 0.0;        // >= 0
  double threshold = 0.0;             // >= 0
  std::string name{};                 // empty: "re_lu", ...
};

// Keras ReLU layer, exactly as Keras computes it (kernels::relu_forward, the formula and
// every kink's gradient in kernels/activation.hpp): negative_slope (x - threshold) for
// x <= threshold, x up to max_value, max_value above. MobileNetV2's ReLU(max_value=6)
// is the relu6 op (gradient 0 at 6).
class ReLU : public WeightlessLayer {
 public:
  explicit ReLU(ReLUOptions options = {});
  std::string class_name() const override { return "ReLU"; }
  Shape compute_output_shape(const Shape& input_shape) const override { return input_shape; }
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  const ReLUOptions& options() const noexcept { return options_; }

 private:
  ReLUOptions options_;
};

struct LeakyReLUOptions {
  // Keras 3 key "negative_slope", tf.keras key "alpha" (written as the float32 value
  // 0.30000001192092896); both default 0.3. >= 0.
  double negative_slope = 0.3;
  std::string name{};  // empty: "leaky_re_lu", ...
};

// Keras LeakyReLU: y = x > 0 ? x : negative_slope * x; gradient negative_slope at 0.
class LeakyReLU : public WeightlessLayer {
 public:
  explicit LeakyReLU(LeakyReLUOptions options = {});
  std::string class_name() const override { return "LeakyReLU"; }
  Shape compute_output_shape(const Shape& input_shape) const override { return input_shape; }
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  const LeakyReLUOptions& options() const noexcept { return options_; }

 private:
  LeakyReLUOptions options_;
};

// ---------------------------------------------------------------- preprocessing

struct RescalingOptions {
  // One value: a scalar (written back as a number). Several: per channel (written back
  // as a list). Values are kept in double as the config has them and cast to float32
  // before use, as Keras does.
  std::vector<double> scale{1.0};
  std::vector<double> offset{0.0};
  // Keras's GLOBAL image_data_format (keras.config), not a config key: under
  // channels_first a per-channel SCALE is reshaped to (C, 1, 1), so it runs along axis
  // -3; otherwise, and always for the offset, a list runs along the last axis.
  DataFormat image_data_format = DataFormat::channels_last;
  std::string name{};  // empty: "rescaling", ...
};

// Keras Rescaling: y = x * float(scale) + float(offset) (two float32 operations, as
// Keras). EfficientNet writes scale 1/255. No weights.
class Rescaling : public WeightlessLayer {
 public:
  explicit Rescaling(RescalingOptions options = {});
  std::string class_name() const override { return "Rescaling"; }
  Shape compute_output_shape(const Shape& input_shape) const override;
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  const RescalingOptions& options() const noexcept { return options_; }

 private:
  RescalingOptions options_;
};

struct NormalizationOptions {
  // The kept axes (Keras "axis", always a list in the config; EfficientNet writes [3]).
  // Empty: one mean and variance for everything (Keras axis=None). Not the batch axis 0.
  std::vector<int> axis{-1};
  // Both or neither. Given: they live in the config and the layer has no weights. One
  // value broadcasts; otherwise one value per kept element (kept axes in row-major order).
  std::optional<std::vector<double>> mean{}, variance{};
  bool invert = false;  // y = mean + x * max(sqrt(variance), epsilon)
  std::string name{};   // empty: "normalization", ...
};

// Keras Normalization: y = (x - mean) / max(sqrt(variance), 1e-7) in float32, exactly as
// Keras (epsilon = keras.config.epsilon() floors the standard deviation; it is not added
// to the variance): mean [1, 2], variance [0, 4] on [1.5, 4] gives [5000000, 1].
// Weights, when mean/variance are not given, all non-trainable, in Keras order: "mean"
// (the kept axes' shape, zeros), "variance" (ones), "count" (shape (), 0; Keras stores it
// as int64, bnorm as a float32 scalar, exact up to 2^24).
class Normalization : public Layer {
 public:
  explicit Normalization(NormalizationOptions options = {});
  std::string class_name() const override { return "Normalization"; }
  const std::string& name() const noexcept override { return name_; }
  bool trainable() const noexcept override { return trainable_; }
  void set_trainable(bool t) override { trainable_ = t; }
  void build(const Shape& input_shape) override;
  bool built() const noexcept override { return built_shape_.has_value(); }
  Shape compute_output_shape(const Shape& input_shape) const override;
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  std::vector<Variable*> weights() override;
  const NormalizationOptions& options() const noexcept { return options_; }

  // Keras adapt(): sets mean and the biased variance over the reduced axes of `data` (in
  // double, two passes) and count to the number of values reduced per kept element
  // (tf.keras's count; Keras 3 leaves 0). Builds the layer on first use. StateError when
  // mean/variance were given in the options; ShapeError when data does not fit.
  void adapt(const Tensor& data);

 private:
  NormalizationOptions options_;
  std::string name_;
  bool trainable_ = true;
  std::optional<Shape> built_shape_;  // the build shape (batch -1)
  std::vector<int> kept_;             // normalized kept axes, ascending
  std::optional<Variable> mean_, variance_, count_;
  Tensor given_mean_, given_variance_;  // kept shape, when given in the options
  // Throws unless x fits the build shape (rank and kept dims).
  void check_input(const Tensor& x) const;
};

}  // namespace bnorm::nn
