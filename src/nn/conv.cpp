// The Keras convolution layers. Semantics and errors: bnorm/nn/conv.hpp; arithmetic:
// bnorm/kernels/conv.hpp.
#include "bnorm/nn/conv.hpp"

#include <cmath>
#include <tuple>
#include <utility>

#include "bnorm/core/error.hpp"
#include "layer_context.hpp"

namespace bnorm::nn {

using detail::context_of;

namespace {

std::string pair_str(std::int64_t a, std::int64_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

// Keras's fans for a kernel of rank > 2 (keras/src/initializers/random_initializers.py
// compute_fans): the receptive field (product of the leading dims) times the last two
// dims. Initializer::fill's glorot_uniform takes the last two dims only, which is Keras's
// rule for rank 2 (Dense) but not for convolution kernels, so the conv layers compute the
// limit themselves and draw U(-limit, limit) from the same seed.
void fill_kernel(const Initializer& init, Tensor& t) {
  if (init.kind() != Initializer::Kind::glorot_uniform || t.rank() <= 2) {
    init.fill(t);
    return;
  }
  double receptive = 1.0;
  for (int i = 0; i + 2 < t.rank(); ++i) receptive *= static_cast<double>(t.dim(i));
  const double fan_in = receptive * static_cast<double>(t.dim(t.rank() - 2));
  const double fan_out = receptive * static_cast<double>(t.dim(t.rank() - 1));
  const auto limit = static_cast<float>(std::sqrt(6.0 / (fan_in + fan_out)));
  Initializer::random_uniform(-limit, limit, init.seed()).fill(t);
}

Variable make_variable(const std::string& name, Shape shape, const Initializer& init, const Regularizer& r,
                       const Constraint& c) {
  Variable v{name, Tensor(std::move(shape)), true, r, c};
  fill_kernel(init, v.value);
  return v;
}

struct ConvContext : LayerContext {
  kernels::Conv2dDesc desc;       // the main convolution
  kernels::Conv2dDesc pointwise;  // SeparableConv2D's 1x1 step
  Tensor x;                       // the input
  Tensor mid;                     // SeparableConv2D: the depthwise output
  Tensor z;                       // pre-activation output, kept when the activation's gradient reads it
  Tensor y;                       // the output, kept only when the activation's gradient reads it
  Shape y_shape;                  // the output's shape
};

void check_positive(std::int64_t v, const std::string& where, const std::string& argument) {
  if (v < 1) throw ArgumentError(where, argument, "a positive integer", std::to_string(v));
}

// Conv1D and Conv2D: filters and groups positive, groups dividing filters.
void check_filters_and_groups(std::int64_t filters, std::int64_t groups, const std::string& where) {
  check_positive(filters, where, "filters");
  check_positive(groups, where, "groups");
  if (filters % groups != 0) {
    throw ArgumentError(where, "groups", "a divisor of filters (" + std::to_string(filters) + ")",
                        std::to_string(groups));
  }
}

// The layer's "bias" of `size` entries from its options' bias_* settings, or none
// without use_bias.
template <typename Options>
std::optional<Variable> make_bias(const Options& o, std::int64_t size) {
  if (!o.use_bias) return std::nullopt;
  return make_variable("bias", Shape{size}, o.bias_initializer, o.bias_regularizer, o.bias_constraint);
}

// Conv1D and Conv2D: the "kernel" from the kernel_* settings, then the bias (filters).
// Both are made before the caller assigns either, so a failure leaves the layer unchanged.
template <typename Options>
std::pair<Variable, std::optional<Variable>> kernel_and_bias(const Options& o, Shape kernel_shape,
                                                             std::int64_t filters) {
  Variable kernel = make_variable("kernel", std::move(kernel_shape), o.kernel_initializer,
                                  o.kernel_regularizer, o.kernel_constraint);
  return {std::move(kernel), make_bias(o, filters)};
}

}  // namespace

// ---------------------------------------------------------------- ConvLayerBase

ConvLayerBase::ConvLayerBase(const std::string& default_name, const std::string& name, Spatial spatial,
                             const std::string& activation, bool trainable)
    : spatial_(spatial),
      name_(name.empty() ? unique_name(default_name) : name),
      trainable_(trainable),
      activation_(kernels::activation_from_name(activation)),
      data_format_(spatial.data_format),
      padding_(spatial.padding) {}

void ConvLayerBase::check_settings(bool refuse_strides_with_dilation) const {
  const std::string w = where();
  const bool one_d = spatial_.rank == 1;
  check_positive(spatial_.kw, w, "kernel_size");
  if (!one_d) check_positive(spatial_.kh, w, "kernel_size");
  check_positive(spatial_.sw, w, "strides");
  if (!one_d) check_positive(spatial_.sh, w, "strides");
  check_positive(spatial_.dw, w, "dilation_rate");
  if (!one_d) check_positive(spatial_.dh, w, "dilation_rate");
  if (spatial_.padding == Padding::causal && !one_d) {
    throw ArgumentError(w, "padding", "\"valid\" or \"same\" (\"causal\" is for Conv1D only)", "\"causal\"");
  }
  if (refuse_strides_with_dilation && std::max(spatial_.sh, spatial_.sw) > 1 &&
      std::max(spatial_.dh, spatial_.dw) > 1) {
    throw ArgumentError(
        w, "strides",
        "strides of 1 when dilation_rate > 1 (`strides > 1` not supported in conjunction with "
        "`dilation_rate > 1`)",
        one_d ? std::to_string(spatial_.sw) + " with dilation_rate " + std::to_string(spatial_.dw)
              : pair_str(spatial_.sh, spatial_.sw) + " with dilation_rate " +
                    pair_str(spatial_.dh, spatial_.dw));
  }
}

kernels::Conv2dDesc ConvLayerBase::describe(const Shape& s) const {
  const int want_rank = spatial_.rank + 2;
  const std::string w = where();
  const std::string layout =
      spatial_.rank == 1 ? (data_format_ == DataFormat::channels_last ? "(batch, steps, channels)"
                                                                      : "(batch, channels, steps)")
                         : (data_format_ == DataFormat::channels_last ? "(batch, height, width, channels)"
                                                                      : "(batch, channels, height, width)");
  if (s.rank() != want_rank) {
    throw ShapeError(w, "input", "an input of rank " + std::to_string(want_rank) + " " + layout,
                     "shape " + s.str());
  }
  const bool last = data_format_ == DataFormat::channels_last;
  const int c_axis = last ? want_rank - 1 : 1;
  const std::int64_t cin = s[c_axis];
  if (cin < 1) {
    throw ShapeError(w, "input",
                     "a known, positive channel count on axis " + std::to_string(c_axis) + " " + layout,
                     "shape " + s.str());
  }
  if (built_ && cin != cin_) {
    throw ShapeError(w, "input",
                     std::to_string(cin_) + " channels on axis " + std::to_string(c_axis) +
                         " (the layer's input channels)",
                     "shape " + s.str());
  }
  const std::int64_t groups = groups_for(cin);
  if (cin % groups != 0) {
    throw ShapeError(w, "input",
                     "a channel count divisible by groups = " + std::to_string(groups) + " on axis " +
                         std::to_string(c_axis),
                     "shape " + s.str());
  }
  kernels::Conv2dDesc d;
  d.N = s[0] < 0 ? 0 : s[0];
  const int h_axis = last ? 1 : 2;
  d.H = spatial_.rank == 1 ? 1 : s[h_axis];
  d.W = s[spatial_.rank == 1 ? h_axis : h_axis + 1];
  if (d.H < 1 || d.W < 1) {
    throw ShapeError(w, "input", "known, positive spatial sizes " + layout, "shape " + s.str());
  }
  d.Cin = cin;
  d.Cout = main_channels(cin);
  d.kh = spatial_.kh;
  d.kw = spatial_.kw;
  d.stride_h = spatial_.sh;
  d.stride_w = spatial_.sw;
  d.dilation_h = spatial_.dh;
  d.dilation_w = spatial_.dw;
  d.groups = groups;
  d.layout = last ? kernels::ConvLayout::nhwc : kernels::ConvLayout::nchw;
  if (padding_ == Padding::same) {
    const auto ph = kernels::same_padding(d.H, d.kh, d.stride_h, d.dilation_h);
    const auto pw = kernels::same_padding(d.W, d.kw, d.stride_w, d.dilation_w);
    d.pad_top = ph.before;
    d.pad_bottom = ph.after;
    d.pad_left = pw.before;
    d.pad_right = pw.after;
  } else if (padding_ == Padding::causal) {
    d.pad_left = d.dilation_w * (d.kw - 1);
  }
  kernels::conv2d_check(d, w);  // ShapeError when the dilated kernel is larger than the padded input
  return d;
}

Shape ConvLayerBase::compute_output_shape(const Shape& s) const {
  const int want_rank = spatial_.rank + 2;
  if (s.rank() != want_rank) {
    throw ShapeError(where(), "input", "an input of rank " + std::to_string(want_rank), "shape " + s.str());
  }
  const bool last = data_format_ == DataFormat::channels_last;
  const int c_axis = last ? want_rank - 1 : 1;
  const int first_spatial = last ? 1 : 2;
  std::vector<std::int64_t> d = s.dims();
  const std::int64_t cin = built_ ? cin_ : s[c_axis];
  d[c_axis] = cin < 1 ? -1 : output_channels(cin);
  for (int a = 0; a < spatial_.rank; ++a) {
    const int axis = first_spatial + a;
    const bool w_axis = a == spatial_.rank - 1;
    const std::int64_t k = w_axis ? spatial_.kw : spatial_.kh, st = w_axis ? spatial_.sw : spatial_.sh,
                       dil = w_axis ? spatial_.dw : spatial_.dh, n = s[axis];
    if (n < 0) continue;
    if (padding_ == Padding::valid) {
      d[axis] = kernels::valid_output_size(n, k, st, dil);
    } else {
      d[axis] = (n + st - 1) / st;  // same and causal
    }
  }
  return Shape(d);
}

void ConvLayerBase::build(const Shape& input_shape) {
  // Everything that can fail is checked before a variable is made.
  const int want_rank = spatial_.rank + 2;
  if (input_shape.rank() != want_rank) {
    throw ShapeError(where(), "input", "an input of rank " + std::to_string(want_rank),
                     "shape " + input_shape.str());
  }
  const int c_axis = data_format_ == DataFormat::channels_last ? want_rank - 1 : 1;
  const std::int64_t cin = input_shape[c_axis];
  if (cin < 1) {
    throw ShapeError(where(), "input", "a known, positive channel count on axis " + std::to_string(c_axis),
                     "shape " + input_shape.str());
  }
  if (cin % groups_for(cin) != 0) {
    throw ShapeError(where(), "input",
                     "a channel count divisible by groups = " + std::to_string(groups_for(cin)) +
                         " on axis " + std::to_string(c_axis),
                     "shape " + input_shape.str());
  }
  make_variables(cin);
  cin_ = cin;
  built_ = true;
}

std::vector<Variable*> ConvLayerBase::weights() {
  std::vector<Variable*> w;
  if (kernel_) w.push_back(&*kernel_);
  if (pointwise_) w.push_back(&*pointwise_);
  if (bias_) w.push_back(&*bias_);
  return w;
}

Tensor ConvLayerBase::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  const kernels::Conv2dDesc d = describe(x.shape());  // validates before anything changes
  if (!built_) build(x.shape());
  const Shape out_shape = compute_output_shape(x.shape());
  auto c = std::make_unique<ConvContext>();
  c->desc = d;
  const float* bias = bias_ ? bias_->value.data() : nullptr;
  Tensor z(out_shape);
  if (pointwise_) {
    // SeparableConv2D: the depthwise step (no bias), then the 1x1 step with the bias.
    kernels::Conv2dDesc p = d;
    p.H = d.out_h();
    p.W = d.out_w();
    p.Cin = d.Cout;
    p.Cout = pointwise_->value.dim(3);
    p.kh = p.kw = p.stride_h = p.stride_w = p.dilation_h = p.dilation_w = 1;
    p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = 0;
    p.groups = 1;
    c->pointwise = p;
    std::vector<std::int64_t> mid_dims = out_shape.dims();
    mid_dims[data_format_ == DataFormat::channels_last ? out_shape.rank() - 1 : 1] = d.Cout;
    Tensor mid{Shape(mid_dims)};
    kernels::conv2d_forward(d, x.data(), kernel_->value.data(), nullptr, mid.data());
    kernels::conv2d_forward(p, mid.data(), pointwise_->value.data(), bias, z.data());
    c->mid = std::move(mid);
  } else {
    kernels::conv2d_forward(d, x.data(), kernel_->value.data(), bias, z.data());
  }
  Tensor y;
  if (activation_ == kernels::Activation::linear) {
    y = std::move(z);  // (no copy: z is not needed afterwards)
  } else {
    y = Tensor(out_shape);
    const std::int64_t cols = out_shape[out_shape.rank() - 1];
    const std::int64_t rows = cols ? y.numel() / cols : 0;
    kernels::activation_forward(activation_, z.data(), rows, cols, y.data());
    if (kernels::activation_backward_reads(activation_) == kernels::BackwardReads::x) c->z = std::move(z);
  }
  if (context) {
    c->x = x;
    c->y_shape = y.shape();
    // The output is copied only for an activation whose gradient reads it.
    if (activation_ != kernels::Activation::linear &&
        kernels::activation_backward_reads(activation_) != kernels::BackwardReads::x)
      c->y = y;
    *context = std::move(c);
  }
  return y;
}

Tensor ConvLayerBase::backward(const LayerContext& context, const Tensor& dy, Gradients& grads) {
  Tensor dx;
  backward_into(context, dy, grads, &dx);
  return dx;
}

void ConvLayerBase::backward_variables(const LayerContext& context, const Tensor& dy, Gradients& grads) {
  backward_into(context, dy, grads, nullptr);
}

void ConvLayerBase::backward_into(const LayerContext& context, const Tensor& dy, Gradients& grads,
                                  Tensor* dx) {
  const auto& c = context_of<ConvContext>(context, where());
  if (dy.shape() != c.y_shape) throw ShapeError(where(), "dy", "shape " + c.y_shape.str(), dy.shape().str());
  if (!built_ || c.desc.Cin != cin_) {
    throw StateError(where(), "context", "a forward call of this layer as built",
                     "a context from another build");
  }
  // dz: the gradient at the activation's input; dy itself (no copy) for a linear one.
  Tensor dz_store;
  const Tensor* dz_ptr = &dy;
  if (activation_ != kernels::Activation::linear) {
    dz_store = dy;
    const std::int64_t cols = dy.rank() ? dy.dim(dy.rank() - 1) : 1;
    const std::int64_t rows = cols ? dy.numel() / cols : 0;
    const bool reads_x = kernels::activation_backward_reads(activation_) == kernels::BackwardReads::x;
    kernels::activation_backward(activation_, reads_x ? c.z.data() : nullptr, reads_x ? nullptr : c.y.data(),
                                 dy.data(), rows, cols, dz_store.data());
    dz_ptr = &dz_store;
  }
  const Tensor& dz = *dz_ptr;
  Tensor dkernel(kernel_->value.shape());
  Tensor dbias(bias_ ? bias_->value.shape() : Shape{0});
  const Tensor* d_main = &dz;  // the gradient at the main convolution's output
  Tensor dmid;
  if (pointwise_) {
    Tensor dpoint(pointwise_->value.shape());
    kernels::conv2d_backward_weights(c.pointwise, c.mid.data(), dz.data(), dpoint.data(),
                                     bias_ ? dbias.data() : nullptr);
    dmid = Tensor(c.mid.shape());
    kernels::conv2d_backward_data(c.pointwise, dz.data(), pointwise_->value.data(), dmid.data());
    kernels::conv2d_backward_weights(c.desc, c.x.data(), dmid.data(), dkernel.data(), nullptr);
    d_main = &dmid;
    accumulate(grads, &*kernel_, dkernel);
    accumulate(grads, &*pointwise_, dpoint);
  } else {
    kernels::conv2d_backward_weights(c.desc, c.x.data(), dz.data(), dkernel.data(),
                                     bias_ ? dbias.data() : nullptr);
    accumulate(grads, &*kernel_, dkernel);
  }
  if (bias_) accumulate(grads, &*bias_, dbias);
  if (dx != nullptr) {
    *dx = Tensor(c.x.shape());
    kernels::conv2d_backward_data(c.desc, d_main->data(), kernel_->value.data(), dx->data());
  }
}

// ---------------------------------------------------------------- Conv2D

namespace {
ConvLayerBase::Spatial spatial_2d(std::array<std::int64_t, 2> k, std::array<std::int64_t, 2> s,
                                  std::array<std::int64_t, 2> d, Padding p, DataFormat f) {
  return {.rank = 2,
          .kh = k[0],
          .kw = k[1],
          .sh = s[0],
          .sw = s[1],
          .dh = d[0],
          .dw = d[1],
          .padding = p,
          .data_format = f};
}
}  // namespace

Conv2D::Conv2D(std::int64_t filters, std::array<std::int64_t, 2> kernel_size, Conv2DOptions options)
    : ConvLayerBase("conv2d", options.name,
                    spatial_2d(kernel_size, options.strides, options.dilation_rate, options.padding,
                               options.data_format),
                    options.activation, options.trainable),
      filters_(filters),
      kernel_size_(kernel_size),
      options_(std::move(options)) {
  check_filters_and_groups(filters_, options_.groups, where());
  check_settings(true);
}

void Conv2D::make_variables(std::int64_t cin) {
  std::tie(kernel_, bias_) = kernel_and_bias(
      options_, Shape{kernel_size_[0], kernel_size_[1], cin / options_.groups, filters_}, filters_);
}

// ---------------------------------------------------------------- Conv1D

namespace {
ConvLayerBase::Spatial spatial_1d(std::int64_t k, std::int64_t s, std::int64_t d, Padding p, DataFormat f) {
  return {.rank = 1, .kh = 1, .kw = k, .sh = 1, .sw = s, .dh = 1, .dw = d, .padding = p, .data_format = f};
}
}  // namespace

Conv1D::Conv1D(std::int64_t filters, std::int64_t kernel_size, Conv1DOptions options)
    : ConvLayerBase("conv1d", options.name,
                    spatial_1d(kernel_size, options.strides, options.dilation_rate, options.padding,
                               options.data_format),
                    options.activation, options.trainable),
      filters_(filters),
      kernel_size_(kernel_size),
      options_(std::move(options)) {
  check_filters_and_groups(filters_, options_.groups, where());
  check_settings(true);
}

void Conv1D::make_variables(std::int64_t cin) {
  std::tie(kernel_, bias_) =
      kernel_and_bias(options_, Shape{kernel_size_, cin / options_.groups, filters_}, filters_);
}

// ---------------------------------------------------------------- DepthwiseConv2D

DepthwiseConv2D::DepthwiseConv2D(std::array<std::int64_t, 2> kernel_size, DepthwiseConv2DOptions options)
    : ConvLayerBase("depthwise_conv2d", options.name,
                    spatial_2d(kernel_size, options.strides, options.dilation_rate, options.padding,
                               options.data_format),
                    options.activation, options.trainable),
      kernel_size_(kernel_size),
      options_(std::move(options)) {
  check_positive(options_.depth_multiplier, where(), "depth_multiplier");
  check_settings(false);
}

void DepthwiseConv2D::make_variables(std::int64_t cin) {
  // Keras 3 names it "kernel" (tf.keras "depthwise_kernel"); the grouped-kernel layout
  // of the same memory is kernels::depthwise_kernel_shape.
  Variable kernel = make_variable(
      "kernel", Shape{kernel_size_[0], kernel_size_[1], cin, options_.depth_multiplier},
      options_.depthwise_initializer, options_.depthwise_regularizer, options_.depthwise_constraint);
  std::optional<Variable> bias = make_bias(options_, cin * options_.depth_multiplier);
  kernel_ = std::move(kernel);
  bias_ = std::move(bias);
}

// ---------------------------------------------------------------- SeparableConv2D

SeparableConv2D::SeparableConv2D(std::int64_t filters, std::array<std::int64_t, 2> kernel_size,
                                 SeparableConv2DOptions options)
    : ConvLayerBase("separable_conv2d", options.name,
                    spatial_2d(kernel_size, options.strides, options.dilation_rate, options.padding,
                               options.data_format),
                    options.activation, options.trainable),
      filters_(filters),
      kernel_size_(kernel_size),
      options_(std::move(options)) {
  check_positive(filters_, where(), "filters");
  check_positive(options_.depth_multiplier, where(), "depth_multiplier");
  check_settings(false);
}

void SeparableConv2D::make_variables(std::int64_t cin) {
  const std::int64_t dm = options_.depth_multiplier;
  Variable depthwise = make_variable("depthwise_kernel", Shape{kernel_size_[0], kernel_size_[1], cin, dm},
                                     options_.depthwise_initializer, options_.depthwise_regularizer,
                                     options_.depthwise_constraint);
  Variable pointwise =
      make_variable("pointwise_kernel", Shape{1, 1, cin * dm, filters_}, options_.pointwise_initializer,
                    options_.pointwise_regularizer, options_.pointwise_constraint);
  std::optional<Variable> bias = make_bias(options_, filters_);
  kernel_ = std::move(depthwise);
  pointwise_ = std::move(pointwise);
  bias_ = std::move(bias);
}

}  // namespace bnorm::nn
