#include "bnorm/nn/layers.hpp"

#include "bnorm/core/error.hpp"
#include "bnorm/kernels/dense.hpp"
#include "layer_context.hpp"

namespace bnorm::nn {

using detail::check_dy;
using detail::context_of;

namespace {

// Rows and columns of a tensor seen as (rows, last dimension).
std::pair<std::int64_t, std::int64_t> rows_cols(const Tensor& t) {
  const std::int64_t cols = t.rank() ? t.dim(t.rank() - 1) : 1;
  return {cols ? t.numel() / cols : 0, cols};
}

// What an activation's backward reads: the forward output y, or the input x for the
// activations whose gradient needs it (kernels::activation_backward_reads).
struct OutputContext : LayerContext {
  Tensor forward;  // y or x, shaped as the output
};

}  // namespace

// ---------------------------------------------------------------- InputLayer

InputLayer::InputLayer(std::vector<std::int64_t> shape, std::string name)
    : shape_(std::move(shape)), name_(name.empty() ? unique_name("input_layer") : std::move(name)) {
  for (auto d : shape_) {
    if (d < 0) throw ShapeError(where(), "shape", "known non-negative sizes", Shape(shape_).str());
  }
}

Shape InputLayer::batch_shape() const {
  std::vector<std::int64_t> d{-1};
  d.insert(d.end(), shape_.begin(), shape_.end());
  return Shape(d);
}

Tensor InputLayer::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  const Shape want = batch_shape();
  bool ok = x.rank() == want.rank();
  for (int i = 1; ok && i < x.rank(); ++i) ok = x.dim(i) == want[i];
  if (!ok) throw ShapeError(where(), "input", "shape " + want.str() + " (-1: any batch size)", x.shape().str());
  if (context) *context = std::make_unique<LayerContext>();
  return x;
}

Tensor InputLayer::backward(const LayerContext&, const Tensor& dy, Gradients&) { return dy; }

// ---------------------------------------------------------------- Dense

Dense::Dense(std::int64_t units, DenseOptions options)
    : units_(units),
      options_(std::move(options)),
      activation_(kernels::activation_from_name(options_.activation)),
      name_(options_.name.empty() ? unique_name("dense") : options_.name),
      trainable_(options_.trainable) {
  if (units_ < 1) throw ArgumentError(where(), "units", "a positive integer", std::to_string(units_));
}

void Dense::build(const Shape& input_shape) {
  if (input_shape.rank() < 2) {
    throw ShapeError(where(), "input rank", "an input of rank >= 2 (batch, ..., features)", input_shape.str());
  }
  const std::int64_t k = input_shape[input_shape.rank() - 1];
  if (k < 1) throw ShapeError(where(), "input shape", "a known last dimension", input_shape.str());
  Variable kernel{"kernel", Tensor(Shape{k, units_}), true, options_.kernel_regularizer, options_.kernel_constraint};
  options_.kernel_initializer.fill(kernel.value);
  std::optional<Variable> bias;
  if (options_.use_bias) {
    bias = Variable{"bias", Tensor(Shape{units_}), true, options_.bias_regularizer, options_.bias_constraint};
    options_.bias_initializer.fill(bias->value);
  }
  kernel_ = std::move(kernel);
  bias_ = std::move(bias);
}

Shape Dense::compute_output_shape(const Shape& input_shape) const {
  std::vector<std::int64_t> d = input_shape.dims();
  if (!d.empty()) d.back() = units_;
  return Shape(d);
}

std::vector<Variable*> Dense::weights() {
  std::vector<Variable*> w;
  if (kernel_) w.push_back(&*kernel_);
  if (bias_) w.push_back(&*bias_);
  return w;
}

namespace {
struct DenseContext : LayerContext {
  Tensor x;
  Shape y_shape;  // the output's shape (what dy must have)
  // The output y, or the pre-activation z = x @ kernel + bias when the activation's
  // gradient reads its input (kernels::activation_backward_reads); empty for a linear
  // Dense, whose backward needs neither.
  Tensor a;
};

// Where a Dense backward puts the gradient of v: straight into grads when v has no
// gradient yet (a zero tensor the kernel accumulates into: the same bits as the zeroed
// temporary it replaces), else into `temporary` (zeroed), which the caller adds to the
// existing gradient with accumulate() (a layer called more than once).
float* gradient_target(Gradients& grads, const Variable& v, Tensor& temporary, bool& added) {
  auto it = grads.find(&v);
  added = it == grads.end();
  if (added) return grads.emplace(&v, Tensor(v.value.shape())).first->second.data();
  temporary = Tensor(v.value.shape());
  return temporary.data();
}
}  // namespace

Tensor Dense::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  if (!built()) build(x.shape());
  const std::int64_t k = kernel_->value.dim(0);
  if (x.rank() < 2 || x.dim(x.rank() - 1) != k) {
    throw ShapeError(where(), "input", "last dimension " + std::to_string(k) + " (the layer's input width)",
                     "shape " + x.shape().str());
  }
  const std::int64_t n = x.numel() / k;
  Tensor y(compute_output_shape(x.shape()));
  kernels::dense_forward(x.data(), kernel_->value.data(), bias_ ? bias_->value.data() : nullptr, n, k, units_,
                         y.data());
  if (activation_ == kernels::Activation::linear) {
    if (context) {
      auto c = std::make_unique<DenseContext>();
      c->x = x;
      c->y_shape = y.shape();
      *context = std::move(c);
    }
    return y;
  }
  std::unique_ptr<DenseContext> c;
  if (context) {
    c = std::make_unique<DenseContext>();
    c->x = x;
    c->y_shape = y.shape();
  }
  const bool reads_x = kernels::activation_backward_reads(activation_) == kernels::BackwardReads::x;
  if (c && reads_x) c->a = y;  // z, before the in-place activation
  kernels::activation_forward(activation_, y.data(), n, units_, y.data());
  if (c) {
    if (!reads_x) c->a = y;
    *context = std::move(c);
  }
  return y;
}

Tensor Dense::backward(const LayerContext& context, const Tensor& dy, Gradients& grads) {
  Tensor dx;
  backward_into(context, dy, grads, &dx);
  return dx;
}

void Dense::backward_variables(const LayerContext& context, const Tensor& dy, Gradients& grads) {
  backward_into(context, dy, grads, nullptr);
}

void Dense::backward_into(const LayerContext& context, const Tensor& dy, Gradients& grads, Tensor* dx) {
  const auto& c = context_of<DenseContext>(context, where());
  check_dy(dy, c.y_shape, where());
  const std::int64_t k = kernel_->value.dim(0), n = c.x.numel() / k;
  // dz = dL/dz for the pre-activation z: dy itself for a linear Dense (no copy).
  Tensor dz_storage;
  const Tensor* dz = &dy;
  if (activation_ != kernels::Activation::linear) {
    dz_storage = Tensor(dy.shape());
    const bool reads_x = kernels::activation_backward_reads(activation_) == kernels::BackwardReads::x;
    kernels::activation_backward(activation_, reads_x ? c.a.data() : nullptr, reads_x ? nullptr : c.a.data(),
                                 dy.data(), n, units_, dz_storage.data());
    dz = &dz_storage;
  }
  if (dx != nullptr) *dx = Tensor(c.x.shape());
  Tensor dw_temporary, db_temporary;
  bool dw_added = false, db_added = false;
  float* dw = gradient_target(grads, *kernel_, dw_temporary, dw_added);
  float* db = bias_ ? gradient_target(grads, *bias_, db_temporary, db_added) : nullptr;
  kernels::dense_backward(dz->data(), c.x.data(), kernel_->value.data(), n, k, units_,
                          dx != nullptr ? dx->data() : nullptr, dw, db);
  if (!dw_added) accumulate(grads, &*kernel_, dw_temporary);
  if (bias_ && !db_added) accumulate(grads, &*bias_, db_temporary);
}

// ---------------------------------------------------------------- Activation

Activation::Activation(const std::string& activation, std::string name)
    : Activation(kernels::activation_from_name(activation), std::move(name)) {}

Activation::Activation(kernels::Activation activation, std::string name)
    : activation_(activation), name_(name.empty() ? unique_name("activation") : std::move(name)) {
  kernels::activation_name(activation_);  // an out-of-range value throws ArgumentError here
}

Tensor Activation::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  Tensor y(x.shape());
  const auto [rows, cols] = rows_cols(x);
  kernels::activation_forward(activation_, x.data(), rows, cols, y.data());
  if (context) {
    auto c = std::make_unique<OutputContext>();
    c->forward = kernels::activation_backward_reads(activation_) == kernels::BackwardReads::x ? x : y;
    *context = std::move(c);
  }
  return y;
}

Tensor Activation::backward(const LayerContext& context, const Tensor& dy, Gradients&) {
  const auto& c = context_of<OutputContext>(context, where());
  check_dy(dy, c.forward.shape(), where());
  Tensor dx(dy.shape());
  const auto [rows, cols] = rows_cols(dy);
  const bool reads_x = kernels::activation_backward_reads(activation_) == kernels::BackwardReads::x;
  kernels::activation_backward(activation_, reads_x ? c.forward.data() : nullptr, reads_x ? nullptr : c.forward.data(),
                               dy.data(), rows, cols, dx.data());
  return dx;
}

// ---------------------------------------------------------------- Dropout

Dropout::Dropout(double rate, std::uint64_t seed, std::string name)
    : rate_(rate), seed_(seed), name_(name.empty() ? unique_name("dropout") : std::move(name)) {
  if (!(rate >= 0.0 && rate < 1.0)) throw ArgumentError(where(), "rate", "a value in [0, 1)", std::to_string(rate));
}

namespace {
struct MaskContext : LayerContext {
  Tensor mask;  // 0 or 1 / (1 - rate); empty in inference
};
std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
}  // namespace

Tensor Dropout::forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  auto c = std::make_unique<MaskContext>();
  if (!training || rate_ == 0.0) {
    if (context) *context = std::move(c);
    return x;
  }
  const auto scale = static_cast<float>(1.0 / (1.0 - rate_));
  Tensor mask(x.shape()), y(x.shape());
  const std::uint64_t stream = mix64(seed_ ^ mix64(calls_));
  if (!noise_shape_.empty() && static_cast<int>(noise_shape_.size()) != x.rank()) {
    throw ShapeError(where(), "noise_shape", "rank " + std::to_string(x.rank()) + " (the input's)",
                     "rank " + std::to_string(noise_shape_.size()));
  }
  // With a noise_shape, one draw per element of that shape (-1: the input's size), shared
  // along its dimensions of 1 (Keras: EfficientNet drops whole samples with (None, 1, 1, 1)).
  std::vector<std::int64_t> index(static_cast<std::size_t>(x.rank()), 0);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    std::uint64_t draw = static_cast<std::uint64_t>(i);
    if (!noise_shape_.empty()) {
      draw = 0;
      for (int d = 0; d < x.rank(); ++d) {
        const std::int64_t n = noise_shape_[static_cast<std::size_t>(d)] < 0 ? x.dim(d) : noise_shape_[static_cast<std::size_t>(d)];
        draw = draw * static_cast<std::uint64_t>(n) + static_cast<std::uint64_t>(n == 1 ? 0 : index[static_cast<std::size_t>(d)]);
      }
      for (int d = x.rank() - 1; d >= 0; --d) {
        if (++index[static_cast<std::size_t>(d)] < x.dim(d)) break;
        index[static_cast<std::size_t>(d)] = 0;
      }
    }
    const double u = static_cast<double>(mix64(stream + draw) >> 11) * 0x1.0p-53;
    mask[i] = u < rate_ ? 0.0f : scale;
    y[i] = x[i] * mask[i];
  }
  ++calls_;
  c->mask = std::move(mask);
  if (context) *context = std::move(c);
  return y;
}

Tensor Dropout::backward(const LayerContext& context, const Tensor& dy, Gradients&) {
  const auto& c = context_of<MaskContext>(context, where());
  if (c.mask.empty() && c.mask.rank() == 0) return dy;  // inference: identity
  check_dy(dy, c.mask.shape(), where());
  Tensor dx(dy.shape());
  for (std::int64_t i = 0; i < dy.numel(); ++i) dx[i] = dy[i] * c.mask[i];
  return dx;
}

// ---------------------------------------------------------------- Flatten

Flatten::Flatten(std::string name, DataFormat data_format)
    : name_(name.empty() ? unique_name("flatten") : std::move(name)), data_format_(data_format) {}

namespace {
// channels_first (N, C, d1, ..., dk) -> channels_last (N, d1, ..., dk, C), and back.
std::vector<int> to_channels_last(int rank) {
  std::vector<int> perm{0};
  for (int i = 2; i < rank; ++i) perm.push_back(i);
  perm.push_back(1);
  return perm;
}
std::vector<int> to_channels_first(int rank) {
  std::vector<int> perm{0, rank - 1};
  for (int i = 1; i < rank - 1; ++i) perm.push_back(i);
  return perm;
}
}  // namespace

Shape Flatten::compute_output_shape(const Shape& input_shape) const {
  std::int64_t rest = 1;
  for (int i = 1; i < input_shape.rank(); ++i) rest *= input_shape[i];
  return Shape{input_shape.rank() ? input_shape[0] : 1, rest};
}

namespace {
struct ShapeContext : LayerContext {
  Shape input_shape;
};
}  // namespace

Tensor Flatten::forward(const Tensor& x, bool, std::unique_ptr<LayerContext>* context, UpdateSink*) {
  if (x.rank() < 1) throw ShapeError(where(), "input", "an input of rank >= 1", "rank 0");
  if (context) {
    auto c = std::make_unique<ShapeContext>();
    c->input_shape = x.shape();
    *context = std::move(c);
  }
  // Keras flattens channels_first input in channels_last order (h, w, c): CNN.md 2.2.
  if (data_format_ == DataFormat::channels_first && x.rank() > 2) {
    return permute(x, to_channels_last(x.rank())).reshaped(compute_output_shape(x.shape()));
  }
  return x.reshaped(compute_output_shape(x.shape()));
}

Tensor Flatten::backward(const LayerContext& context, const Tensor& dy, Gradients&) {
  const auto& c = context_of<ShapeContext>(context, where());
  check_dy(dy, compute_output_shape(c.input_shape), where());
  if (data_format_ == DataFormat::channels_first && c.input_shape.rank() > 2) {
    std::vector<std::int64_t> last{c.input_shape[0]};
    for (int i = 2; i < c.input_shape.rank(); ++i) last.push_back(c.input_shape[i]);
    last.push_back(c.input_shape[1]);
    return permute(dy.reshaped(Shape(last)), to_channels_first(c.input_shape.rank()));
  }
  return dy.reshaped(c.input_shape);
}

}  // namespace bnorm::nn
