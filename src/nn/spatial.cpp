#include "bnorm/nn/spatial.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "bnorm/core/error.hpp"
#include "bnorm/kernels/activation.hpp"
#include "bnorm/kernels/pooling.hpp"
#include "broadcast.hpp"
#include "layer_context.hpp"

namespace bnorm::nn {

using detail::check_dy;
using detail::context_of;

namespace {

std::string pair_str(std::int64_t a, std::int64_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

std::string margins_str(const Margins2D& m) {
  return "(" + pair_str(m[0][0], m[0][1]) + ", " + pair_str(m[1][0], m[1][1]) + ")";
}

// What the backward of a layer needs: the input's shape, and the input itself for the
// layers whose gradient reads it (max pooling, ReLU).
struct InputContext : LayerContext {
  Shape input_shape;
  Tensor x;  // empty unless the gradient reads it
};

// The context of `layer`'s forward call, once dy is checked to have the output's shape
// (StateError for another layer's context, ShapeError for a dy of another shape).
const InputContext& backward_context(const Layer& layer, const std::string& where,
                                     const LayerContext& context, const Tensor& dy) {
  const auto& c = context_of<InputContext>(context, where);
  check_dy(dy, layer.compute_output_shape(c.input_shape), where);
  return c;
}

std::unique_ptr<InputContext> input_context(const Tensor& x, bool keep_x) {
  auto c = std::make_unique<InputContext>();
  c->input_shape = x.shape();
  if (keep_x) c->x = x;
  return c;
}

void require_rank4(const Shape& s, DataFormat f, const std::string& where) {
  if (s.rank() != 4) {
    throw ShapeError(where, "input",
                     f == DataFormat::channels_last ? "a rank-4 input (batch, rows, cols, channels)"
                                                    : "a rank-4 input (batch, channels, rows, cols)",
                     "shape " + s.str());
  }
}

// The spatial and channel axes of a rank-4 shape.
struct Axes {
  int h, w, c;
};
Axes axes_of(DataFormat f) {
  return f == DataFormat::channels_last ? Axes{1, 2, 3} : Axes{2, 3, 1};
}

kernels::ImageShape image_of(const Shape& s, DataFormat f) {
  const Axes a = axes_of(f);
  return {s[0], s[a.h], s[a.w], s[a.c],
          f == DataFormat::channels_last ? kernels::SpatialLayout::nhwc : kernels::SpatialLayout::nchw};
}

// The shape with new spatial sizes (-1 stays -1).
Shape with_spatial(const Shape& s, DataFormat f, std::int64_t h, std::int64_t w) {
  const Axes a = axes_of(f);
  Shape out = s;
  out[a.h] = h;
  out[a.w] = w;
  return out;
}

void require_non_negative(const Margins2D& m, const std::string& where, const std::string& argument) {
  for (const auto& side : m)
    for (const auto v : side)
      if (v < 0)
        throw ArgumentError(where, argument, "non-negative amounts ((top, bottom), (left, right))",
                            margins_str(m));
}

void require_positive(const Size2D& s, const std::string& where, const std::string& argument) {
  if (s[0] < 1 || s[1] < 1)
    throw ArgumentError(where, argument, "two positive integers", pair_str(s[0], s[1]));
}

kernels::Margins margins_of(const Margins2D& m) {
  return {m[0][0], m[0][1], m[1][0], m[1][1]};
}

}  // namespace

// ---------------------------------------------------------------- ZeroPadding2D

ZeroPadding2D::ZeroPadding2D(ZeroPadding2DOptions options)
    : WeightlessLayer(options.name.empty() ? unique_name("zero_padding2d") : options.name),
      options_(std::move(options)) {
  require_non_negative(options_.padding, where(), "padding");
}

Shape ZeroPadding2D::compute_output_shape(const Shape& input_shape) const {
  require_rank4(input_shape, options_.data_format, where());
  const Axes a = axes_of(options_.data_format);
  const auto& p = options_.padding;
  const auto grow = [](std::int64_t n, std::int64_t by) { return n < 0 ? n : n + by; };
  return with_spatial(input_shape, options_.data_format, grow(input_shape[a.h], p[0][0] + p[0][1]),
                      grow(input_shape[a.w], p[1][0] + p[1][1]));
}

Tensor ZeroPadding2D::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  Tensor y(compute_output_shape(x.shape()));
  kernels::zero_pad2d(image_of(x.shape(), options_.data_format), margins_of(options_.padding), x.data(),
                      y.data());
  if (context) *context = input_context(x, false);
  return y;
}

Tensor ZeroPadding2D::backward(const LayerContext& context, const Tensor& dy, Gradients&) {
  const InputContext& c = backward_context(*this, where(), context, dy);
  Tensor dx(c.input_shape);
  kernels::crop2d(image_of(dy.shape(), options_.data_format), margins_of(options_.padding), dy.data(),
                  dx.data());
  return dx;
}

// ---------------------------------------------------------------- Cropping2D

Cropping2D::Cropping2D(Cropping2DOptions options)
    : WeightlessLayer(options.name.empty() ? unique_name("cropping2d") : options.name),
      options_(std::move(options)) {
  require_non_negative(options_.cropping, where(), "cropping");
}

Shape Cropping2D::compute_output_shape(const Shape& input_shape) const {
  require_rank4(input_shape, options_.data_format, where());
  const Axes a = axes_of(options_.data_format);
  const auto& m = options_.cropping;
  const auto shrink = [&](std::int64_t n, std::int64_t by, const char* what) {
    if (n < 0) return n;
    if (by >= n) {
      throw ShapeError(where(), "input",
                       std::string("more ") + what + " than cropping " + margins_str(m) + " removes",
                       "shape " + input_shape.str());
    }
    return n - by;
  };
  return with_spatial(input_shape, options_.data_format, shrink(input_shape[a.h], m[0][0] + m[0][1], "rows"),
                      shrink(input_shape[a.w], m[1][0] + m[1][1], "columns"));
}

Tensor Cropping2D::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  Tensor y(compute_output_shape(x.shape()));
  kernels::crop2d(image_of(x.shape(), options_.data_format), margins_of(options_.cropping), x.data(),
                  y.data());
  if (context) *context = input_context(x, false);
  return y;
}

Tensor Cropping2D::backward(const LayerContext& context, const Tensor& dy, Gradients&) {
  const InputContext& c = backward_context(*this, where(), context, dy);
  Tensor dx(c.input_shape);
  kernels::zero_pad2d(image_of(dy.shape(), options_.data_format), margins_of(options_.cropping), dy.data(),
                      dx.data());
  return dx;
}

// ---------------------------------------------------------------- Pooling2D

Pooling2D::Pooling2D(Pooling2DOptions options, bool max, const std::string& base_name)
    : WeightlessLayer(options.name.empty() ? unique_name(base_name) : options.name),
      options_(std::move(options)),
      max_(max) {}

void Pooling2D::validate() const {
  require_positive(options_.pool_size, where(), "pool_size");
  if (options_.strides) require_positive(*options_.strides, where(), "strides");
  if (options_.padding == Padding::causal)
    throw ArgumentError(where(), "padding", "\"valid\" or \"same\"", "\"causal\"");
}

MaxPooling2D::MaxPooling2D(Pooling2DOptions options) : Pooling2D(std::move(options), true, "max_pooling2d") {
  validate();
}

AveragePooling2D::AveragePooling2D(Pooling2DOptions options)
    : Pooling2D(std::move(options), false, "average_pooling2d") {
  validate();
}

Shape Pooling2D::compute_output_shape(const Shape& input_shape) const {
  require_rank4(input_shape, options_.data_format, where());
  const Axes a = axes_of(options_.data_format);
  const Size2D k = options_.pool_size, s = strides();
  const auto out = [&](std::int64_t n, int i) -> std::int64_t {
    if (n < 0) return -1;
    if (options_.padding == Padding::same) return kernels::window_same(n, k[i], s[i]).out;
    if (n < k[i]) {
      throw ShapeError(where(), "input",
                       std::string(i == 0 ? "rows" : "columns") + " >= pool_size " + pair_str(k[0], k[1]) +
                           " with padding \"valid\"",
                       "shape " + input_shape.str());
    }
    return kernels::window_valid(n, k[i], s[i]).out;
  };
  return with_spatial(input_shape, options_.data_format, out(input_shape[a.h], 0), out(input_shape[a.w], 1));
}

namespace {
kernels::Pool2d pool_of(const Shape& input, const Pooling2DOptions& o, Size2D strides) {
  kernels::Pool2d p;
  p.input = image_of(input, o.data_format);
  p.pool_h = o.pool_size[0];
  p.pool_w = o.pool_size[1];
  p.stride_h = strides[0];
  p.stride_w = strides[1];
  const auto window = [&](std::int64_t n, int i) {
    return o.padding == Padding::same ? kernels::window_same(n, o.pool_size[i], strides[i])
                                      : kernels::window_valid(n, o.pool_size[i], strides[i]);
  };
  const auto rows = window(p.input.H, 0), cols = window(p.input.W, 1);
  p.out_h = rows.out;
  p.out_w = cols.out;
  p.pad_top = rows.pad_before;
  p.pad_left = cols.pad_before;
  return p;
}
}  // namespace

Tensor Pooling2D::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  Tensor y(compute_output_shape(x.shape()));
  const kernels::Pool2d p = pool_of(x.shape(), options_, strides());
  if (max_)
    kernels::max_pool2d_forward(p, x.data(), y.data());
  else
    kernels::avg_pool2d_forward(p, x.data(), y.data());
  if (context) *context = input_context(x, max_);
  return y;
}

Tensor Pooling2D::backward(const LayerContext& context, const Tensor& dy, Gradients&) {
  const InputContext& c = backward_context(*this, where(), context, dy);
  const kernels::Pool2d p = pool_of(c.input_shape, options_, strides());
  Tensor dx(c.input_shape);
  if (max_)
    kernels::max_pool2d_backward(p, c.x.data(), dy.data(), dx.data());
  else
    kernels::avg_pool2d_backward(p, dy.data(), dx.data());
  return dx;
}

// ---------------------------------------------------------------- GlobalPooling2D

GlobalPooling2D::GlobalPooling2D(GlobalPooling2DOptions options, bool max, const std::string& base_name)
    : WeightlessLayer(options.name.empty() ? unique_name(base_name) : options.name),
      options_(std::move(options)),
      max_(max) {}

GlobalAveragePooling2D::GlobalAveragePooling2D(GlobalPooling2DOptions options)
    : GlobalPooling2D(std::move(options), false, "global_average_pooling2d") {}

GlobalMaxPooling2D::GlobalMaxPooling2D(GlobalPooling2DOptions options)
    : GlobalPooling2D(std::move(options), true, "global_max_pooling2d") {}

Shape GlobalPooling2D::compute_output_shape(const Shape& input_shape) const {
  require_rank4(input_shape, options_.data_format, where());
  const Axes a = axes_of(options_.data_format);
  if (!options_.keepdims) return Shape{input_shape[0], input_shape[a.c]};
  return with_spatial(input_shape, options_.data_format, 1, 1);
}

Tensor GlobalPooling2D::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  Tensor y(compute_output_shape(x.shape()));
  const kernels::ImageShape s = image_of(x.shape(), options_.data_format);
  if (max_ && s.H * s.W == 0 && s.N * s.C > 0) {
    throw ShapeError(where(), "input", "at least one row and column to take a maximum over",
                     "shape " + x.shape().str());
  }
  if (max_)
    kernels::global_max_pool2d_forward(s, x.data(), y.data());
  else
    kernels::global_avg_pool2d_forward(s, x.data(), y.data());
  if (context) *context = input_context(x, max_);
  return y;
}

Tensor GlobalPooling2D::backward(const LayerContext& context, const Tensor& dy, Gradients&) {
  const InputContext& c = backward_context(*this, where(), context, dy);
  const kernels::ImageShape s = image_of(c.input_shape, options_.data_format);
  Tensor dx(c.input_shape);
  // (N, C), (N, 1, 1, C) and (N, C, 1, 1) hold the same values in the same order.
  if (max_)
    kernels::global_max_pool2d_backward(s, c.x.data(), dy.data(), dx.data());
  else
    kernels::global_avg_pool2d_backward(s, dy.data(), dx.data());
  return dx;
}

// ---------------------------------------------------------------- UpSampling2D

Interpolation interpolation_from_name(const std::string& name) {
  if (name == "nearest") return Interpolation::nearest;
  if (name == "bilinear") return Interpolation::bilinear;
  throw ArgumentError("interpolation", "interpolation", "\"nearest\" or \"bilinear\"", "\"" + name + "\"");
}

std::string interpolation_name(Interpolation interpolation) {
  return interpolation == Interpolation::bilinear ? "bilinear" : "nearest";
}

UpSampling2D::UpSampling2D(UpSampling2DOptions options)
    : WeightlessLayer(options.name.empty() ? unique_name("up_sampling2d") : options.name),
      options_(std::move(options)) {
  require_positive(options_.size, where(), "size");
}

Shape UpSampling2D::compute_output_shape(const Shape& input_shape) const {
  require_rank4(input_shape, options_.data_format, where());
  const Axes a = axes_of(options_.data_format);
  const auto times = [](std::int64_t n, std::int64_t by) { return n < 0 ? n : n * by; };
  return with_spatial(input_shape, options_.data_format, times(input_shape[a.h], options_.size[0]),
                      times(input_shape[a.w], options_.size[1]));
}

Tensor UpSampling2D::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  Tensor y(compute_output_shape(x.shape()));
  const kernels::ImageShape s = image_of(x.shape(), options_.data_format);
  if (options_.interpolation == Interpolation::nearest)
    kernels::upsample_nearest2d_forward(s, options_.size[0], options_.size[1], x.data(), y.data());
  else
    kernels::upsample_bilinear2d_forward(s, options_.size[0], options_.size[1], x.data(), y.data());
  if (context) *context = input_context(x, false);
  return y;
}

Tensor UpSampling2D::backward(const LayerContext& context, const Tensor& dy, Gradients&) {
  const InputContext& c = backward_context(*this, where(), context, dy);
  const kernels::ImageShape s = image_of(c.input_shape, options_.data_format);
  Tensor dx(c.input_shape);
  if (options_.interpolation == Interpolation::nearest)
    kernels::upsample_nearest2d_backward(s, options_.size[0], options_.size[1], dy.data(), dx.data());
  else
    kernels::upsample_bilinear2d_backward(s, options_.size[0], options_.size[1], dy.data(), dx.data());
  return dx;
}

// ---------------------------------------------------------------- Reshape

namespace {
std::string dims_str(const std::vector<std::int64_t>& d) {
  return Shape(d).str();
}
}  // namespace

Reshape::Reshape(ReshapeOptions options)
    : WeightlessLayer(options.name.empty() ? unique_name("reshape") : options.name),
      options_(std::move(options)) {
  int unknown = 0;
  for (const auto d : options_.target_shape) {
    if (d == -1) ++unknown;
    if (d < -1 || d == 0 || unknown > 1) {
      throw ArgumentError(where(), "target_shape", "positive sizes and at most one -1",
                          dims_str(options_.target_shape));
    }
  }
}

Shape Reshape::compute_output_shape(const Shape& input_shape) const {
  if (input_shape.rank() < 1) throw ShapeError(where(), "input", "an input with a batch dimension", "rank 0");
  std::int64_t elements = 1;  // per sample; -1 when unknown
  for (int i = 1; i < input_shape.rank() && elements >= 0; ++i)
    elements = input_shape[i] < 0 ? -1 : elements * input_shape[i];
  std::int64_t known = 1;
  int unknown_at = -1;
  for (std::size_t i = 0; i < options_.target_shape.size(); ++i) {
    if (options_.target_shape[i] == -1)
      unknown_at = static_cast<int>(i);
    else
      known *= options_.target_shape[i];
  }
  std::vector<std::int64_t> out{input_shape[0]};
  out.insert(out.end(), options_.target_shape.begin(), options_.target_shape.end());
  if (elements < 0) return Shape(out);
  const bool fits = unknown_at >= 0 ? elements % known == 0 : elements == known;
  if (!fits) {
    throw ShapeError(
        where(), "input",
        "a number of values per sample that target_shape " + dims_str(options_.target_shape) + " holds",
        "shape " + input_shape.str() + " (" + std::to_string(elements) + " per sample)");
  }
  if (unknown_at >= 0) out[static_cast<std::size_t>(unknown_at) + 1] = elements / known;
  return Shape(out);
}

Tensor Reshape::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  Tensor y = x.reshaped(compute_output_shape(x.shape()));
  if (context) *context = input_context(x, false);
  return y;
}

Tensor Reshape::backward(const LayerContext& context, const Tensor& dy, Gradients&) {
  const InputContext& c = backward_context(*this, where(), context, dy);
  return dy.reshaped(c.input_shape);
}

// ---------------------------------------------------------------- Permute

Permute::Permute(PermuteOptions options)
    : WeightlessLayer(options.name.empty() ? unique_name("permute") : options.name),
      options_(std::move(options)) {
  std::vector<int> sorted = options_.dims;
  std::sort(sorted.begin(), sorted.end());
  bool ok = !sorted.empty();
  for (std::size_t i = 0; i < sorted.size(); ++i) ok = ok && sorted[i] == static_cast<int>(i) + 1;
  if (!ok) {
    std::string got = "(";
    for (std::size_t i = 0; i < options_.dims.size(); ++i)
      got += (i ? ", " : "") + std::to_string(options_.dims[i]);
    throw ArgumentError(
        where(), "dims",
        "a permutation of 1.." + std::to_string(options_.dims.size()) + " (1-based, the batch axis excluded)",
        got + (options_.dims.size() == 1 ? ",)" : ")"));
  }
}

Shape Permute::compute_output_shape(const Shape& input_shape) const {
  const int rank = static_cast<int>(options_.dims.size()) + 1;
  if (input_shape.rank() != rank) {
    throw ShapeError(where(), "input",
                     "an input of rank " + std::to_string(rank) + " (dims has " + std::to_string(rank - 1) +
                         " axes, plus the batch)",
                     "shape " + input_shape.str());
  }
  std::vector<std::int64_t> out{input_shape[0]};
  for (const int d : options_.dims) out.push_back(input_shape[d]);
  return Shape(out);
}

Tensor Permute::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  compute_output_shape(x.shape());
  std::vector<int> perm{0};
  perm.insert(perm.end(), options_.dims.begin(), options_.dims.end());
  Tensor y = permute(x, perm);
  if (context) *context = input_context(x, false);
  return y;
}

Tensor Permute::backward(const LayerContext& context, const Tensor& dy, Gradients&) {
  backward_context(*this, where(), context, dy);  // checks only
  std::vector<int> inverse(options_.dims.size() + 1, 0);
  for (std::size_t i = 0; i < options_.dims.size(); ++i)
    inverse[static_cast<std::size_t>(options_.dims[i])] = static_cast<int>(i) + 1;
  return permute(dy, inverse);
}

// ---------------------------------------------------------------- ReLU, LeakyReLU

namespace {
kernels::ReluParams relu_params(const ReLUOptions& o) {
  return {o.negative_slope, o.threshold, o.max_value.has_value(), o.max_value.value_or(0.0)};
}
void require_non_negative(double v, const std::string& where, const std::string& argument) {
  if (!(v >= 0.0)) throw ArgumentError(where, argument, "a non-negative value", std::to_string(v));
}
}  // namespace

ReLU::ReLU(ReLUOptions options)
    : WeightlessLayer(options.name.empty() ? unique_name("re_lu") : options.name),
      options_(std::move(options)) {
  if (options_.max_value) require_non_negative(*options_.max_value, where(), "max_value");
  require_non_negative(options_.negative_slope, where(), "negative_slope");
  require_non_negative(options_.threshold, where(), "threshold");
}

Tensor ReLU::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  Tensor y(x.shape());
  kernels::relu_forward(relu_params(options_), x.data(), x.numel(), y.data());
  if (context) *context = input_context(x, true);
  return y;
}

Tensor ReLU::backward(const LayerContext& context, const Tensor& dy, Gradients&) {
  const InputContext& c = backward_context(*this, where(), context, dy);
  Tensor dx(dy.shape());
  kernels::relu_backward(relu_params(options_), c.x.data(), dy.data(), dy.numel(), dx.data());
  return dx;
}

LeakyReLU::LeakyReLU(LeakyReLUOptions options)
    : WeightlessLayer(options.name.empty() ? unique_name("leaky_re_lu") : options.name),
      options_(std::move(options)) {
  require_non_negative(options_.negative_slope, where(), "negative_slope");
}

// tf.nn.leaky_relu for every slope (including 0, where it differs from relu only by -0).
Tensor LeakyReLU::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  Tensor y(x.shape());
  const auto slope = static_cast<float>(options_.negative_slope);
  for (std::int64_t i = 0; i < x.numel(); ++i) y[i] = x[i] > 0.0f ? x[i] : x[i] * slope;
  if (context) *context = input_context(x, true);
  return y;
}

Tensor LeakyReLU::backward(const LayerContext& context, const Tensor& dy, Gradients&) {
  const InputContext& c = backward_context(*this, where(), context, dy);
  Tensor dx(dy.shape());
  const auto slope = static_cast<float>(options_.negative_slope);
  for (std::int64_t i = 0; i < dy.numel(); ++i) dx[i] = dy[i] * (c.x[i] > 0.0f ? 1.0f : slope);
  return dx;
}

// ---------------------------------------------------------------- Rescaling

Rescaling::Rescaling(RescalingOptions options)
    : WeightlessLayer(options.name.empty() ? unique_name("rescaling") : options.name),
      options_(std::move(options)) {
  if (options_.scale.empty())
    throw ArgumentError(where(), "scale", "one value or one per channel", "an empty list");
  if (options_.offset.empty())
    throw ArgumentError(where(), "offset", "one value or one per channel", "an empty list");
}

namespace {
// The axis a per-channel list of `count` values runs along, and the stride of that axis
// (elements between consecutive channels); count 1: a scalar (axis -1, stride 0).
struct ChannelRun {
  std::int64_t count, stride;
};

ChannelRun channel_run(const Shape& s, std::size_t count, int axis_from_end, const std::string& where,
                       const std::string& argument) {
  if (count == 1) return {1, 0};
  const int axis = s.rank() - axis_from_end;
  if (axis < 0 || s[axis] != static_cast<std::int64_t>(count)) {
    throw ShapeError(where, "input",
                     "axis " + std::to_string(-axis_from_end) + " of size " + std::to_string(count) +
                         " (the length of " + argument + ")",
                     "shape " + s.str());
  }
  std::int64_t stride = 1;
  for (int i = axis + 1; i < s.rank(); ++i) stride *= s[i];
  return {static_cast<std::int64_t>(count), stride};
}

std::int64_t channel_at(const ChannelRun& r, std::int64_t i) {
  return r.stride == 0 ? 0 : (i / r.stride) % r.count;
}

std::vector<float> as_floats(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}
}  // namespace

Shape Rescaling::compute_output_shape(const Shape& input_shape) const {
  const int scale_axis = options_.image_data_format == DataFormat::channels_first ? 3 : 1;
  channel_run(input_shape, options_.scale.size(), scale_axis, where(), "scale");
  channel_run(input_shape, options_.offset.size(), 1, where(), "offset");
  return input_shape;
}

Tensor Rescaling::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  const int scale_axis = options_.image_data_format == DataFormat::channels_first ? 3 : 1;
  const ChannelRun rs = channel_run(x.shape(), options_.scale.size(), scale_axis, where(), "scale");
  const ChannelRun ro = channel_run(x.shape(), options_.offset.size(), 1, where(), "offset");
  const std::vector<float> scale = as_floats(options_.scale), offset = as_floats(options_.offset);
  Tensor y(x.shape());
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const float scaled = x[i] * scale[static_cast<std::size_t>(channel_at(rs, i))];
    y[i] = scaled + offset[static_cast<std::size_t>(channel_at(ro, i))];
  }
  if (context) *context = input_context(x, false);
  return y;
}

Tensor Rescaling::backward(const LayerContext& context, const Tensor& dy, Gradients&) {
  backward_context(*this, where(), context, dy);  // checks only
  const int scale_axis = options_.image_data_format == DataFormat::channels_first ? 3 : 1;
  const ChannelRun rs = channel_run(dy.shape(), options_.scale.size(), scale_axis, where(), "scale");
  const std::vector<float> scale = as_floats(options_.scale);
  Tensor dx(dy.shape());
  for (std::int64_t i = 0; i < dy.numel(); ++i)
    dx[i] = dy[i] * scale[static_cast<std::size_t>(channel_at(rs, i))];
  return dx;
}

// ---------------------------------------------------------------- Normalization

namespace {
constexpr float kNormalizationEpsilon = 1e-7f;  // keras.config.epsilon()

// For each element of x in row-major order, calls f(i, k) with k its flat index in the
// kept axes' tensor (that tensor, size 1 on the reduced axes, broadcast to s).
template <typename F>
void for_each_kept(const Shape& s, const std::vector<int>& kept, F f) {
  std::vector<std::int64_t> kept_dims(static_cast<std::size_t>(s.rank()), 1);
  for (int a : kept) kept_dims[static_cast<std::size_t>(a)] = s[a];
  detail::for_each_broadcast(s, Shape(kept_dims), f);
}
}  // namespace

Normalization::Normalization(NormalizationOptions options)
    : options_(std::move(options)),
      name_(options_.name.empty() ? unique_name("normalization") : options_.name) {
  if (options_.mean.has_value() != options_.variance.has_value()) {
    throw ArgumentError(where(), options_.mean ? "variance" : "mean",
                        "mean and variance both given, or neither",
                        options_.mean ? "only mean" : "only variance");
  }
  if (options_.mean && (options_.mean->empty() || options_.variance->empty())) {
    throw ArgumentError(where(), options_.mean->empty() ? "mean" : "variance", "at least one value",
                        "an empty list");
  }
  if (options_.variance) {
    for (const double v : *options_.variance)
      if (!(v >= 0.0)) throw ArgumentError(where(), "variance", "non-negative values", std::to_string(v));
  }
}

void Normalization::build(const Shape& input_shape) {
  const int rank = input_shape.rank();
  std::vector<int> kept;
  for (const int a : options_.axis) kept.push_back(normalize_axis(a, rank, where(), "axis"));
  std::sort(kept.begin(), kept.end());
  if (std::adjacent_find(kept.begin(), kept.end()) != kept.end()) {
    throw ArgumentError(where(), "axis", "distinct axes",
                        "a repeated axis for an input of rank " + std::to_string(rank));
  }
  if (!kept.empty() && kept.front() == 0) {
    throw ArgumentError(where(), "axis", "axes other than the batch axis 0",
                        "axis 0 for an input of rank " + std::to_string(rank));
  }
  std::vector<std::int64_t> kept_dims;
  for (const int a : kept) {
    if (input_shape[a] < 1) {
      throw ShapeError(where(), "input shape", "known sizes on the kept axes", input_shape.str());
    }
    kept_dims.push_back(input_shape[a]);
  }
  const Shape kept_shape(kept_dims);
  Tensor given_mean, given_variance;
  std::optional<Variable> mean, variance, count;
  if (options_.mean) {
    const auto fill = [&](const std::vector<double>& v, const char* argument) {
      if (v.size() != 1 && static_cast<std::int64_t>(v.size()) != kept_shape.numel()) {
        throw ArgumentError(where(), argument,
                            "1 or " + std::to_string(kept_shape.numel()) + " values (the kept axes' shape " +
                                kept_shape.str() + ")",
                            std::to_string(v.size()) + " values");
      }
      Tensor t(kept_shape);
      for (std::int64_t i = 0; i < t.numel(); ++i)
        t[i] = static_cast<float>(v.size() == 1 ? v[0] : v[static_cast<std::size_t>(i)]);
      return t;
    };
    given_mean = fill(*options_.mean, "mean");
    given_variance = fill(*options_.variance, "variance");
  } else {
    mean = Variable{"mean", Tensor(kept_shape), false, {}, {}};
    variance = Variable{"variance", Tensor(kept_shape, 1.0f), false, {}, {}};
    count = Variable{"count", Tensor(Shape{}), false, {}, {}};
  }
  std::vector<std::int64_t> built = input_shape.dims();
  if (!built.empty()) built[0] = -1;
  built_shape_ = Shape(built);
  kept_ = std::move(kept);
  given_mean_ = std::move(given_mean);
  given_variance_ = std::move(given_variance);
  mean_ = std::move(mean);
  variance_ = std::move(variance);
  count_ = std::move(count);
}

void Normalization::check_input(const Tensor& x) const {
  const Shape& b = *built_shape_;
  bool ok = x.rank() == b.rank();
  for (const int a : kept_) ok = ok && x.dim(a) == b[a];
  if (!ok)
    throw ShapeError(where(), "input", "shape " + b.str() + " on the kept axes " + "(built for it)",
                     x.shape().str());
}

Shape Normalization::compute_output_shape(const Shape& input_shape) const {
  return input_shape;
}

std::vector<Variable*> Normalization::weights() {
  std::vector<Variable*> w;
  if (mean_) w = {&*mean_, &*variance_, &*count_};
  return w;
}

namespace {
struct NormalizationContext : LayerContext {
  Shape input_shape;
  std::vector<float> stddev;  // max(sqrt(variance), epsilon) per kept element
};
}  // namespace

Tensor Normalization::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  if (!built()) build(x.shape());
  check_input(x);
  const Tensor& mean = mean_ ? mean_->value : given_mean_;
  const Tensor& variance = variance_ ? variance_->value : given_variance_;
  std::vector<float> stddev(static_cast<std::size_t>(variance.numel()));
  for (std::size_t k = 0; k < stddev.size(); ++k)
    stddev[k] = std::max(std::sqrt(variance[static_cast<std::int64_t>(k)]), kNormalizationEpsilon);
  Tensor y(x.shape());
  if (options_.invert) {
    for_each_kept(x.shape(), kept_, [&](std::int64_t i, std::int64_t k) {
      y[i] = mean[k] + x[i] * stddev[static_cast<std::size_t>(k)];
    });
  } else {
    for_each_kept(x.shape(), kept_, [&](std::int64_t i, std::int64_t k) {
      y[i] = (x[i] - mean[k]) / stddev[static_cast<std::size_t>(k)];
    });
  }
  if (context) {
    auto c = std::make_unique<NormalizationContext>();
    c->input_shape = x.shape();
    c->stddev = std::move(stddev);
    *context = std::move(c);
  }
  return y;
}

Tensor Normalization::backward(const LayerContext& context, const Tensor& dy, Gradients&) {
  const auto& c = context_of<NormalizationContext>(context, where());
  check_dy(dy, c.input_shape, where());
  Tensor dx(dy.shape());
  for_each_kept(dy.shape(), kept_, [&](std::int64_t i, std::int64_t k) {
    const float s = c.stddev[static_cast<std::size_t>(k)];
    dx[i] = options_.invert ? dy[i] * s : dy[i] / s;
  });
  return dx;
}

void Normalization::adapt(const Tensor& data) {
  if (options_.mean) {
    throw StateError(where(), "adapt",
                     "a layer whose mean and variance are adapted (not given in its options)",
                     "mean and variance given in the options");
  }
  if (data.numel() == 0)
    throw ShapeError(where(), "data", "at least one sample", "shape " + data.shape().str());
  if (!built()) {
    Normalization trial(*this);  // build on a copy first: a failed adapt leaves this unbuilt
    trial.build(data.shape());
    trial.check_input(data);
    build(data.shape());
  }
  check_input(data);
  const std::int64_t kept_count = mean_->value.numel();
  const std::int64_t per = data.numel() / kept_count;
  std::vector<double> sum(static_cast<std::size_t>(kept_count), 0.0),
      sq(static_cast<std::size_t>(kept_count), 0.0);
  for_each_kept(data.shape(), kept_,
                [&](std::int64_t i, std::int64_t k) { sum[static_cast<std::size_t>(k)] += data[i]; });
  for (auto& s : sum) s /= static_cast<double>(per);
  for_each_kept(data.shape(), kept_, [&](std::int64_t i, std::int64_t k) {
    const double d = data[i] - sum[static_cast<std::size_t>(k)];
    sq[static_cast<std::size_t>(k)] += d * d;
  });
  for (std::int64_t k = 0; k < kept_count; ++k) {
    mean_->value[k] = static_cast<float>(sum[static_cast<std::size_t>(k)]);
    variance_->value[k] = static_cast<float>(sq[static_cast<std::size_t>(k)] / static_cast<double>(per));
  }
  count_->value[0] = static_cast<float>(per);
}

}  // namespace bnorm::nn
