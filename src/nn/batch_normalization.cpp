#include "bnorm/nn/batch_normalization.hpp"

#include <algorithm>
#include <cmath>

#include "batch_norm_common.hpp"
#include "bnorm/core/error.hpp"
#include "bnorm/kernels/activation.hpp"
#include "bnorm/nn/updates.hpp"
#include "channel_view.hpp"

namespace bnorm::nn {

namespace {


}  // namespace

BatchNormalization::BatchNormalization(BatchNormalizationOptions options)
    : options_(std::move(options)) {
  name_ = options_.name.empty() ? unique_name("batch_normalization") : options_.name;
  const std::string where = "BatchNormalization '" + name_ + "'";
  if (!(options_.momentum >= 0.0 && options_.momentum <= 1.0)) {
    throw ArgumentError(where, "momentum",
                        "a value in [0, 1] (Keras convention: the weight of the old moving value)",
                        detail::format_number(options_.momentum));
  }
  if (!(options_.epsilon > 0.0) || !std::isfinite(options_.epsilon)) {
    throw ArgumentError(where, "epsilon", "a finite value > 0", detail::format_number(options_.epsilon));
  }
  if (options_.axis.empty()) throw ArgumentError(where, "axis", "at least one axis", "[]");
  if (options_.version == KerasVersion::keras3 && options_.fused != Fused::automatic) {
    throw ArgumentError(where, "fused", "Fused::automatic with KerasVersion::keras3 (fused is a Keras 2 option)",
                        options_.fused == Fused::yes ? "Fused::yes" : "Fused::no");
  }
  if (options_.fused == Fused::yes) {
    // tf_keras rejects fused=True for several axes or an axis outside {-4,-3,-1,1,3,4}.
    const bool one = options_.axis.size() == 1;
    const int a = options_.axis.front();
    if (!one || !(a == -4 || a == -3 || a == -1 || a == 1 || a == 3 || a == 4)) {
      throw ArgumentError(where, "fused", "fused=False or automatic for axis " + detail::to_string(options_.axis),
                          "Fused::yes (the fused kernel supports one axis in {-4, -3, -1, 1, 3, 4})");
    }
  }
  if (!(options_.renorm_momentum >= 0.0 && options_.renorm_momentum <= 1.0)) {
    throw ArgumentError(where, "renorm_momentum", "a value in [0, 1]", detail::format_number(options_.renorm_momentum));
  }
  const RenormClipping& rc = options_.renorm_clipping;
  if (options_.renorm && options_.version == KerasVersion::keras3) {  // Keras 3's own checks
    if (rc.rmax && rc.rmin && *rc.rmax < *rc.rmin) {
      throw ArgumentError(where, "renorm_clipping", "rmax >= rmin",
                          "rmax " + detail::format_number(*rc.rmax) + ", rmin " + detail::format_number(*rc.rmin));
    }
    if (rc.dmax && *rc.dmax < 0) {
      throw ArgumentError(where, "renorm_clipping", "dmax >= 0", "dmax " + detail::format_number(*rc.dmax));
    }
  }
  if (options_.renorm && options_.fused == Fused::yes) {
    throw ArgumentError(where, "fused", "fused=False or automatic with renorm (the fused kernel has no renorm)",
                        "Fused::yes");
  }
  if (const auto& vbs = options_.virtual_batch_size) {
    if (options_.version == KerasVersion::keras3) {
      throw ArgumentError(where, "virtual_batch_size",
                          "none with KerasVersion::keras3 (ghost batch normalization is a tf_keras option)",
                          std::to_string(*vbs));
    }
    if (*vbs <= 0) throw ArgumentError(where, "virtual_batch_size", "a positive integer", std::to_string(*vbs));
    if (options_.fused == Fused::yes) {
      throw ArgumentError(where, "fused", "fused=False or automatic with virtual_batch_size", "Fused::yes");
    }
  }
  trainable_ = options_.trainable;
}

void BatchNormalization::build(const Shape& input_shape) {
  const std::string where = "BatchNormalization '" + name_ + "'";
  const int rank = input_shape.rank();
  if (rank < 1) throw ShapeError(where, "input rank", "an input of rank >= 1", "rank 0");
  const std::vector<int> axes = detail::normalize_axes(options_.axis, rank, where, "axis");
  for (int a : axes) {
    if (input_shape[a] < 0) {
      throw ShapeError(where, "input shape", "a known size on channel axis " + std::to_string(a),
                       input_shape.str());
    }
  }
  if (options_.virtual_batch_size && std::find(axes.begin(), axes.end(), 0) != axes.end()) {
    throw ArgumentError(where, "axis", "axes other than 0 with virtual_batch_size (axis 0 is the batch)",
                        detail::to_string(options_.axis));
  }
  bool fused = false;
  // tf_keras: renorm and virtual_batch_size never take the fused kernel.
  if (options_.version == KerasVersion::keras2 && options_.fused != Fused::no && !options_.renorm &&
      !options_.virtual_batch_size) {
    const int a = axes.front();
    const bool fusable = axes.size() == 1 && ((rank == 4 && (a == 1 || a == 3)) || (rank == 5 && (a == 1 || a == 4)));
    if (options_.fused == Fused::yes && !fusable) {
      throw ArgumentError(where, "fused", "an input of rank 4 (axis 1 or 3) or rank 5 (axis 1 or 4) with fused=True",
                          "input shape " + input_shape.str() + " with axis " + detail::to_string(options_.axis));
    }
    fused = fusable;
  }
  Shape param_shape;
  if (axes.size() == 1 && !options_.virtual_batch_size) {
    param_shape = Shape{input_shape[axes.front()]};
  } else {  // Keras 2: rank-R parameters with size 1 on the reduced axes
    std::vector<std::int64_t> d(static_cast<std::size_t>(rank), 1);
    for (int a : axes) d[static_cast<std::size_t>(a)] = input_shape[a];
    // Ghost batches: tf_keras adds a size-1 dimension at index 1 (the ghost-batch index).
    if (options_.virtual_batch_size) d.insert(d.begin() + 1, 1);
    param_shape = Shape(d);
  }
  auto make = [&](const char* name, const Initializer& init, bool trainable) {
    Variable v{name, Tensor(param_shape), trainable, {}, {}};
    init.fill(v.value);
    return v;
  };
  std::optional<Variable> gamma, beta;
  if (options_.scale) {
    gamma = make("gamma", options_.gamma_initializer, trainable_);
    gamma->regularizer = options_.gamma_regularizer;
    gamma->constraint = options_.gamma_constraint;
  }
  if (options_.center) {
    beta = make("beta", options_.beta_initializer, trainable_);
    beta->regularizer = options_.beta_regularizer;
    beta->constraint = options_.beta_constraint;
  }
  Variable mm = make("moving_mean", options_.moving_mean_initializer, false);
  Variable mv = make("moving_variance", options_.moving_variance_initializer, false);
  std::optional<Variable> ms, rm, rs;
  if (options_.renorm) {
    ms = make("moving_stddev", options_.moving_variance_initializer, false);
    for (std::int64_t i = 0; i < ms->value.numel(); ++i) ms->value[i] = std::sqrt(ms->value[i]);
    rm = make("renorm_mean", options_.moving_mean_initializer, false);
    rs = *ms;
    rs->name = "renorm_stddev";
  }

  // Commit (nothing below throws).
  std::vector<std::int64_t> dims = input_shape.dims();
  dims[0] = -1;
  input_shape_ = Shape(dims);
  axes_ = axes;
  fused_ = fused;
  param_shape_ = param_shape;
  gamma_ = std::move(gamma);
  beta_ = std::move(beta);
  moving_mean_ = std::move(mm);
  moving_variance_ = std::move(mv);
  moving_stddev_ = std::move(ms);
  renorm_mean_ = std::move(rm);
  renorm_stddev_ = std::move(rs);
  built_ = true;
}

void BatchNormalization::check_input(const Tensor& x) const {
  const std::string where = "BatchNormalization '" + name_ + "'";
  if (x.rank() != input_shape_.rank()) {
    throw ShapeError(where, "input rank",
                     "rank " + std::to_string(input_shape_.rank()) + " (the layer was built for shape " +
                         input_shape_.str() + ")",
                     "rank " + std::to_string(x.rank()) + ", shape " + x.shape().str());
  }
  for (int a : axes_) {
    if (x.dim(a) != input_shape_[a]) {
      throw ShapeError(where, "input axis " + std::to_string(a),
                       "size " + std::to_string(input_shape_[a]) + " (the number of channels the layer was built for)",
                       "size " + std::to_string(x.dim(a)) + ", input shape " + x.shape().str());
    }
  }
}

Tensor BatchNormalization::run(const Tensor& x, bool batch_statistics, StatisticsUpdate& update,
                               BatchNormContext* context, const Tensor* mask, bool relu) const {
  if (!relu) return run(x, batch_statistics, update, context, mask);
  const bool fused_kernel = batch_statistics && mask == nullptr && fusable_with_relu() && !synchronizing();
  Tensor y;
  if (fused_kernel) {
    const detail::ChannelView view = detail::channel_view(x.shape(), axes_);
    BatchNormContext local;
    BatchNormContext& ctx = context ? *context : local;
    y = detail::normalize_with_batch(x, view, param_shape_, gamma_ ? gamma_->value.data() : nullptr,
                                     beta_ ? beta_->value.data() : nullptr, options_.epsilon, ctx,
                                     &update.moments, true);
    update.batch_mean = ctx.mean;
    update.batch_variance = ctx.var;
    update.count = view.dims.count();
  } else {
    // The ReLU as the Activation layer computes it, in place.
    y = run(x, batch_statistics, update, context, mask);
    kernels::activation_forward(kernels::Activation::relu, y.data(), 1, y.numel(), y.data());
  }
  if (context) {
    context->relu = true;
    context->relu_output = y;
  }
  return y;
}

Tensor BatchNormalization::run(const Tensor& x, bool batch_statistics, StatisticsUpdate& update,
                               BatchNormContext* context, const Tensor* mask) const {
  const detail::ChannelView view = detail::channel_view(x.shape(), axes_);
  Tensor weights;
  if (mask != nullptr) weights = mask_weights(x, *mask);  // validates in any mode
  // tf_keras's fused kernel ignores the mask (with a warning).
  if (fused_) weights = Tensor();
  if (batch_statistics && synchronizing()) {
    // Before the empty-batch test: an empty shard still takes part (count 0).
    if (options_.renorm || options_.virtual_batch_size || weights.numel() > 0) {
      throw ArgumentError("BatchNormalization '" + name_ + "'", "communicator",
                          "a plain training call when synchronized (no renorm, virtual_batch_size or mask)",
                          options_.renorm               ? "renorm"
                          : options_.virtual_batch_size ? "virtual_batch_size"
                                                        : "a mask");
    }
    BatchNormContext local;
    BatchNormContext& ctx = context ? *context : local;
    Tensor y = detail::normalize_synchronized(x, view, param_shape_, gamma_ ? gamma_->value.data() : nullptr,
                                              beta_ ? beta_->value.data() : nullptr, options_.epsilon,
                                              communicator_, ctx, update.moments);
    update.batch_mean = ctx.mean;
    update.batch_variance = ctx.var;
    update.count = ctx.global_count;
    return y;
  }
  if (batch_statistics && view.dims.count() > 0 &&
      (options_.renorm || options_.virtual_batch_size || weights.numel() > 0)) {
    BatchNormContext local;
    return run_variant(x, weights, update, context ? *context : local);
  }
  const float* g = gamma_ ? gamma_->value.data() : nullptr;
  const float* b = beta_ ? beta_->value.data() : nullptr;
  BatchNormContext local;
  BatchNormContext& ctx = context ? *context : local;
  if (!batch_statistics) {
    update.count = 0;
    update.moments = ChannelMoments();
    return detail::normalize_with(x, view, moving_mean_->value, moving_variance_->value, g, b,
                                  options_.epsilon, ctx);
  }
  Tensor y =
      detail::normalize_with_batch(x, view, param_shape_, g, b, options_.epsilon, ctx, &update.moments);
  update.batch_mean = ctx.mean;
  update.batch_variance = ctx.var;
  update.count = view.dims.count();
  return y;
}

// The mask's weights in x's shape (SEMANTICS 1.4, 1.9): the mask has one dimension less
// than x, each equal to x's or 1, and is expanded on x's last axis. keras3: 1 where the
// mask is nonzero (Keras casts it to bool); keras2: the mask's values (frequency weights).
Tensor BatchNormalization::mask_weights(const Tensor& x, const Tensor& mask) const {
  const std::string where = "BatchNormalization '" + name_ + "'";
  if (mask.rank() != x.rank() - 1) {
    throw ShapeError(where, "mask", "a mask with one dimension less than the input " + x.shape().str(),
                     "mask shape " + mask.shape().str());
  }
  if (options_.virtual_batch_size) {
    throw ArgumentError(where, "mask", "no mask with virtual_batch_size (tf_keras does not support both)",
                        "mask shape " + mask.shape().str());
  }
  for (int a = 0; a < mask.rank(); ++a) {
    if (mask.dim(a) != x.dim(a) && mask.dim(a) != 1) {
      throw ShapeError(where, "mask", "a mask broadcastable to " + x.shape().str() + " without its last axis",
                       "mask shape " + mask.shape().str());
    }
  }
  const bool k3 = options_.version == KerasVersion::keras3;
  Tensor w(x.shape());
  const int rank = x.rank();
  const std::int64_t last = x.dim(rank - 1);
  std::vector<std::int64_t> idx(static_cast<std::size_t>(rank), 0);
  for (std::int64_t i = 0; i < x.numel(); i += last) {
    std::int64_t m = 0;  // flat index into the mask (broadcast dimensions stay at 0)
    for (int a = 0; a < rank - 1; ++a) m = m * mask.dim(a) + (mask.dim(a) == 1 ? 0 : idx[static_cast<std::size_t>(a)]);
    const float v = k3 ? (mask[m] != 0.0f ? 1.0f : 0.0f) : mask[m];
    for (std::int64_t j = 0; j < last; ++j) w[i + j] = v;
    for (int a = rank - 2; a >= 0; --a) {  // next position of the leading dimensions
      if (++idx[static_cast<std::size_t>(a)] < x.dim(a)) break;
      idx[static_cast<std::size_t>(a)] = 0;
    }
  }
  return w;
}

namespace {

// The denominator of masked statistics: keras3 count + 1e-7 in float32 (Keras's
// backend epsilon), keras2 sum(w); without a mask, the count.
double stat_denominator(double weight_sum, bool masked, bool keras3) {
  if (masked && keras3) return static_cast<float>(static_cast<float>(weight_sum) + 1e-7f);
  return weight_sum;
}

}  // namespace

// Reference-style loops (double accumulation, two passes against the float mean as
// tf.nn.moments) over the kernels' (N, C, S) view: statistics per ghost batch and
// channel, optionally weighted by the mask; renorm's r and d; then
//   y = x * inv + (offset - mean_g * inv),  inv = rsqrt(var_g + eps) * gamma_eff,
//   gamma_eff = r * gamma, offset = d * gamma + beta   (tf.nn.batch_normalization)
Tensor BatchNormalization::run_variant(const Tensor& x, const Tensor& weights, StatisticsUpdate& update,
                                       BatchNormContext& ctx) const {
  const std::string where = "BatchNormalization '" + name_ + "'";
  const detail::ChannelView view = detail::channel_view(x.shape(), axes_);
  const auto& d = view.dims;
  const std::int64_t B = x.dim(0);
  std::int64_t G = 1;
  if (options_.virtual_batch_size) {
    const std::int64_t vbs = *options_.virtual_batch_size;
    if (B % vbs != 0) {
      throw ShapeError(where, "input batch size",
                       "a multiple of virtual_batch_size " + std::to_string(vbs) +
                           " in training (tf_keras reshapes to [" + std::to_string(vbs) + ", -1, ...] and fails)",
                       std::to_string(B) + ", input shape " + x.shape().str());
    }
    G = B / vbs;
  }
  const bool masked = weights.numel() > 0;
  const bool k3 = options_.version == KerasVersion::keras3;
  const Tensor xv = detail::in_view(x, view);
  const Tensor wv = masked ? detail::in_view(weights, view) : Tensor();
  const std::int64_t rows_per_example = B > 0 ? d.N / B : 1;
  auto group_of = [&](std::int64_t n) { return (n / rows_per_example) % G; };
  const std::int64_t C = d.C;
  std::vector<double> sum(static_cast<std::size_t>(G * C), 0.0), wsum(sum.size(), 0.0), sq(sum.size(), 0.0);
  auto at = [&](std::int64_t n, std::int64_t c, std::int64_t s) { return (n * C + c) * d.S + s; };
  for (std::int64_t n = 0; n < d.N; ++n) {
    const std::int64_t g = group_of(n);
    for (std::int64_t c = 0; c < C; ++c) {
      for (std::int64_t s = 0; s < d.S; ++s) {
        const std::int64_t i = at(n, c, s);
        const double w = masked ? wv[i] : 1.0;
        sum[static_cast<std::size_t>(g * C + c)] += w * xv[i];
        wsum[static_cast<std::size_t>(g * C + c)] += w;
      }
    }
  }
  Tensor gmean(Shape{G * C}), gvar(Shape{G * C});
  for (std::int64_t k = 0; k < G * C; ++k) {
    const double den = stat_denominator(wsum[static_cast<std::size_t>(k)], masked, k3);
    gmean[k] = den > 0 ? static_cast<float>(sum[static_cast<std::size_t>(k)] / den) : 0.0f;
  }
  for (std::int64_t n = 0; n < d.N; ++n) {
    const std::int64_t g = group_of(n);
    for (std::int64_t c = 0; c < C; ++c) {
      const double m = gmean[g * C + c];
      for (std::int64_t s = 0; s < d.S; ++s) {
        const std::int64_t i = at(n, c, s);
        const double w = masked ? wv[i] : 1.0;
        const double diff = xv[i] - m;
        sq[static_cast<std::size_t>(g * C + c)] += w * diff * diff;
      }
    }
  }
  for (std::int64_t k = 0; k < G * C; ++k) {
    const double den = stat_denominator(wsum[static_cast<std::size_t>(k)], masked, k3);
    gvar[k] = den > 0 ? static_cast<float>(sq[static_cast<std::size_t>(k)] / den) : 0.0f;
  }
  // The statistics of the update: the averages over ghost batches (tf_keras reduce_mean).
  Tensor mean(param_shape_), var(param_shape_);
  for (std::int64_t c = 0; c < C; ++c) {
    double m = 0, v = 0;
    for (std::int64_t g = 0; g < G; ++g) {
      m += gmean[g * C + c];
      v += gvar[g * C + c];
    }
    mean[c] = static_cast<float>(m / static_cast<double>(G));
    var[c] = static_cast<float>(v / static_cast<double>(G));
  }
  if (options_.nan_policy == NanPolicy::reject) {
    detail::require_finite(mean, where, "batch mean");
    detail::require_finite(var, where, "batch variance");
  }
  const auto eps = static_cast<float>(options_.epsilon);
  std::vector<float> gamma_eff(static_cast<std::size_t>(C)), beta_eff(static_cast<std::size_t>(C));
  Tensor r, dd;
  if (options_.renorm) {
    r = Tensor(Shape{C});
    dd = Tensor(Shape{C});
    const RenormClipping& rc = options_.renorm_clipping;
    for (std::int64_t c = 0; c < C; ++c) {
      const float stddev = std::sqrt(var[c] + eps);
      const float rs = std::max(renorm_stddev_->value[c], std::sqrt(eps));
      float rc_ = stddev / rs;
      float dc = (mean[c] - renorm_mean_->value[c]) / rs;
      if (rc.rmin) rc_ = std::max(rc_, static_cast<float>(*rc.rmin));
      if (rc.rmax) rc_ = std::min(rc_, static_cast<float>(*rc.rmax));
      if (rc.dmax) dc = std::min(std::max(dc, -static_cast<float>(*rc.dmax)), static_cast<float>(*rc.dmax));
      r[c] = rc_;
      dd[c] = dc;
    }
  }
  for (std::int64_t c = 0; c < C; ++c) {
    const float g = gamma_ ? gamma_->value[c] : 1.0f;
    const float b = beta_ ? beta_->value[c] : 0.0f;
    if (options_.renorm) {
      gamma_eff[static_cast<std::size_t>(c)] = gamma_ ? r[c] * g : r[c];
      beta_eff[static_cast<std::size_t>(c)] = (gamma_ ? dd[c] * g : dd[c]) + b;
    } else {
      gamma_eff[static_cast<std::size_t>(c)] = g;
      beta_eff[static_cast<std::size_t>(c)] = b;
    }
  }
  std::vector<float> inv(static_cast<std::size_t>(G * C)), shift(inv.size());
  for (std::int64_t g = 0; g < G; ++g) {
    for (std::int64_t c = 0; c < C; ++c) {
      const std::int64_t k = g * C + c;
      const float a = 1.0f / std::sqrt(gvar[k] + eps) * gamma_eff[static_cast<std::size_t>(c)];
      inv[static_cast<std::size_t>(k)] = a;
      shift[static_cast<std::size_t>(k)] = beta_eff[static_cast<std::size_t>(c)] - gmean[k] * a;
    }
  }
  Tensor yv(xv.shape());
  for (std::int64_t n = 0; n < d.N; ++n) {
    const std::int64_t g = group_of(n);
    for (std::int64_t c = 0; c < C; ++c) {
      const float a = inv[static_cast<std::size_t>(g * C + c)], sh = shift[static_cast<std::size_t>(g * C + c)];
      for (std::int64_t s = 0; s < d.S; ++s) {
        const std::int64_t i = at(n, c, s);
        yv[i] = xv[i] * a + sh;
      }
    }
  }
  ctx = BatchNormContext();
  ctx.x = x;
  ctx.used_batch_statistics = true;
  ctx.variant = true;
  ctx.r = r;
  ctx.d = dd;
  ctx.groups = G;
  ctx.group_mean = gmean;
  ctx.group_var = gvar;
  ctx.weights = weights;
  update.batch_mean = mean;
  update.batch_variance = var;
  update.count = d.count();
  update.moments = ChannelMoments();  // merges start from the float fields
  return view.perm.empty() ? yv : permute(yv, view.inverse);
}

// Gradients of sum(y * dy) for a variant training call, per ghost batch g and channel,
// with weights w (1 without a mask), W the statistics' denominator, ge = r * gamma
// (renorm) or gamma, r and d constants:
//   dvar  = -1/2 ge invstd^3 sum_all dy (x - mean)
//   dmean = -ge invstd sum_all dy + dvar * (-2 sum w (x - mean) / W)
//   dx    = ge invstd dy + dmean w / W + dvar 2 w (x - mean) / W
//   dgamma = sum dy (r xhat + d)  (r = 1, d = 0 without renorm),  dbeta = sum dy
BatchNormGradients BatchNormalization::backward_variant(const BatchNormContext& ctx, const Tensor& dy) const {
  const std::string where = "BatchNormalization '" + name_ + "'";
  if (dy.shape() != ctx.x.shape()) {
    throw ShapeError(where, "dy", "the shape of the forward input " + ctx.x.shape().str(), dy.shape().str());
  }
  const detail::ChannelView view = detail::channel_view(ctx.x.shape(), axes_);
  const auto& d = view.dims;
  const std::int64_t C = d.C, G = ctx.groups, B = ctx.x.dim(0);
  const bool masked = ctx.weights.numel() > 0;
  const bool k3 = options_.version == KerasVersion::keras3;
  const Tensor xv = detail::in_view(ctx.x, view);
  const Tensor dyv = detail::in_view(dy, view);
  const Tensor wv = masked ? detail::in_view(ctx.weights, view) : Tensor();
  const std::int64_t rows_per_example = B > 0 ? d.N / B : 1;
  auto group_of = [&](std::int64_t n) { return (n / rows_per_example) % G; };
  auto at = [&](std::int64_t n, std::int64_t c, std::int64_t s) { return (n * C + c) * d.S + s; };
  const double eps = static_cast<float>(options_.epsilon);
  const std::size_t K = static_cast<std::size_t>(G * C);
  std::vector<double> sum_dy(K, 0), sum_dy_xm(K, 0), sum_w(K, 0), sum_w_xm(K, 0);
  for (std::int64_t n = 0; n < d.N; ++n) {
    const std::int64_t g = group_of(n);
    for (std::int64_t c = 0; c < C; ++c) {
      const std::size_t k = static_cast<std::size_t>(g * C + c);
      const double m = ctx.group_mean[g * C + c];
      for (std::int64_t s = 0; s < d.S; ++s) {
        const std::int64_t i = at(n, c, s);
        const double w = masked ? wv[i] : 1.0;
        sum_dy[k] += dyv[i];
        sum_dy_xm[k] += dyv[i] * (xv[i] - m);
        sum_w[k] += w;
        sum_w_xm[k] += w * (xv[i] - m);
      }
    }
  }
  std::vector<double> ge(static_cast<std::size_t>(C)), invstd(K), dmean(K), dvar(K), den(K);
  for (std::int64_t c = 0; c < C; ++c) {
    const double r = ctx.r.numel() ? ctx.r[c] : 1.0;
    ge[static_cast<std::size_t>(c)] = gamma_ ? r * gamma_->value[c] : r;
  }
  Tensor dgamma(param_shape_), dbeta(param_shape_);
  for (std::int64_t c = 0; c < C; ++c) {
    double dg = 0, db = 0;
    for (std::int64_t g = 0; g < G; ++g) {
      const std::size_t k = static_cast<std::size_t>(g * C + c);
      invstd[k] = 1.0 / std::sqrt(static_cast<double>(ctx.group_var[g * C + c]) + eps);
      den[k] = stat_denominator(sum_w[k], masked, k3);
      const double gc = ge[static_cast<std::size_t>(c)];
      dvar[k] = -0.5 * gc * invstd[k] * invstd[k] * invstd[k] * sum_dy_xm[k];
      dmean[k] = -gc * invstd[k] * sum_dy[k] + (den[k] > 0 ? dvar[k] * (-2.0 * sum_w_xm[k] / den[k]) : 0.0);
      const double r = ctx.r.numel() ? ctx.r[c] : 1.0, dd = ctx.d.numel() ? ctx.d[c] : 0.0;
      dg += r * invstd[k] * sum_dy_xm[k] + dd * sum_dy[k];
      db += sum_dy[k];
    }
    dgamma[c] = static_cast<float>(dg);
    dbeta[c] = static_cast<float>(db);
  }
  Tensor dxv(xv.shape());
  for (std::int64_t n = 0; n < d.N; ++n) {
    const std::int64_t g = group_of(n);
    for (std::int64_t c = 0; c < C; ++c) {
      const std::size_t k = static_cast<std::size_t>(g * C + c);
      const double m = ctx.group_mean[g * C + c];
      const double gc = ge[static_cast<std::size_t>(c)];
      for (std::int64_t s = 0; s < d.S; ++s) {
        const std::int64_t i = at(n, c, s);
        const double w = masked ? wv[i] : 1.0;
        double v = gc * invstd[k] * dyv[i];
        if (den[k] > 0) v += dmean[k] * w / den[k] + dvar[k] * 2.0 * w * (xv[i] - m) / den[k];
        dxv[i] = static_cast<float>(v);
      }
    }
  }
  BatchNormGradients out;
  out.dx = view.perm.empty() ? std::move(dxv) : permute(dxv, view.inverse);
  if (gamma_) out.dgamma = std::move(dgamma);
  if (beta_) out.dbeta = std::move(dbeta);
  return out;
}

Tensor BatchNormalization::call(const Tensor& x, std::optional<bool> training) {
  return forward(x, training, nullptr);
}

Tensor BatchNormalization::forward(const Tensor& x, std::optional<bool> training, BatchNormContext* context) {
  return forward_masked(x, nullptr, training, context);
}

Tensor BatchNormalization::forward_masked(const Tensor& x, const Tensor* mask, std::optional<bool> training,
                                          BatchNormContext* context) {
  return forward_impl(x, mask, training, context, false);
}

Tensor BatchNormalization::forward_impl(const Tensor& x, const Tensor* mask, std::optional<bool> training,
                                        BatchNormContext* context, bool relu) {
  if (!built_) build(x.shape());
  check_input(x);
  StatisticsUpdate update;
  // Keras: batch statistics (and an update) only when `training and self.trainable`.
  const bool batch_statistics = training.value_or(false) && trainable_;
  Tensor y = run(x, batch_statistics, update, context, mask, relu);
  if (update.count > 0) apply_update(update);  // validates before changing anything
  return y;
}

Tensor BatchNormalization::forward_collect(const Tensor& x, StatisticsUpdate& update, BatchNormContext* context,
                                          const Tensor* mask) {
  return collect(x, update, context, mask, false);
}

Tensor BatchNormalization::collect(const Tensor& x, StatisticsUpdate& update, BatchNormContext* context,
                                   const Tensor* mask, bool relu) {
  if (!built_) build(x.shape());
  check_input(x);
  StatisticsUpdate local;
  Tensor y = run(x, trainable_, local, context, mask, relu);
  if (local.count > 0 && options_.nan_policy == NanPolicy::reject) {
    const std::string where = "BatchNormalization '" + name_ + "'";
    detail::require_finite(local.batch_mean, where, "batch mean");
    detail::require_finite(local.batch_variance, where, "batch variance");
  }
  update = std::move(local);
  return y;
}

void BatchNormalization::apply_update(const StatisticsUpdate& update) {
  const std::string where = "BatchNormalization '" + name_ + "'";
  if (update.count == 0) return;
  if (!built_) throw StateError(where, "layer", "a built layer (call it once first)", "an unbuilt layer");
  const std::int64_t c = param_shape_.numel();
  if (update.batch_mean.numel() != c || update.batch_variance.numel() != c) {
    throw ShapeError(where, "update", std::to_string(c) + " values per statistic",
                     std::to_string(update.batch_mean.numel()) + " and " +
                         std::to_string(update.batch_variance.numel()));
  }
  if (options_.nan_policy == NanPolicy::reject) {
    detail::require_finite(update.batch_mean, where, "batch mean");
    detail::require_finite(update.batch_variance, where, "batch variance");
  }
  Tensor mean = moving_mean_->value, var = moving_variance_->value;
  const float* bm = update.batch_mean.data();
  const float* bv = update.batch_variance.data();
  if (options_.renorm) {
    // Renorm: both versions update renorm_mean / renorm_stddev (renorm_momentum), the
    // moving mean and moving_stddev (momentum) in their EMA form, then derive the variance.
    Tensor rmean = renorm_mean_->value, rstd = renorm_stddev_->value, mstd = moving_stddev_->value;
    const auto eps = static_cast<float>(options_.epsilon);
    const bool k3 = options_.version == KerasVersion::keras3;
    auto ema = [k3](float a, float b, double momentum) {
      if (k3) return a * static_cast<float>(momentum) + b * static_cast<float>(1.0 - momentum);
      return a - (a - b) * static_cast<float>(1.0 - momentum);
    };
    for (std::int64_t i = 0; i < c; ++i) {
      const float s = std::sqrt(bv[i] + eps);
      rmean[i] = ema(rmean[i], bm[i], options_.renorm_momentum);
      rstd[i] = ema(rstd[i], s, options_.renorm_momentum);
      mean[i] = ema(mean[i], bm[i], options_.momentum);
      mstd[i] = ema(mstd[i], s, options_.momentum);
      var[i] = std::max(mstd[i] * mstd[i] - eps, 0.0f);
    }
    renorm_mean_->value = std::move(rmean);
    renorm_stddev_->value = std::move(rstd);
    moving_stddev_->value = std::move(mstd);
  } else if (options_.version == KerasVersion::keras3) {
    // Keras 3: assign(M * momentum + mean * (1 - momentum)), float32 weak-typed scalars.
    const auto m = static_cast<float>(options_.momentum);
    const auto om = static_cast<float>(1.0 - options_.momentum);
    for (std::int64_t i = 0; i < c; ++i) {
      mean[i] = mean[i] * m + bm[i] * om;
      var[i] = var[i] * m + bv[i] * om;
    }
  } else if (!fused_) {
    // tf_keras non-fused: assign_sub((V - v) * decay), decay = 1 - momentum.
    const auto decay = static_cast<float>(1.0 - options_.momentum);
    for (std::int64_t i = 0; i < c; ++i) {
      mean[i] = mean[i] - (mean[i] - bm[i]) * decay;
      var[i] = var[i] - (var[i] - bv[i]) * decay;
    }
  } else {
    // tf_keras fused kernel, exponential_avg_factor f = 1 - momentum: the stored
    // variance is Bessel-corrected, N/(N-1) with N-1 taken as 1 when N == 1.
    const auto f = static_cast<float>(1.0 - options_.momentum);
    const float one_minus_f = 1.0f - f;
    const float n = static_cast<float>(update.count);
    const float adjust = n / (update.count > 1 ? n - 1.0f : 1.0f);
    for (std::int64_t i = 0; i < c; ++i) {
      mean[i] = one_minus_f * mean[i] + f * bm[i];
      var[i] = one_minus_f * var[i] + f * adjust * bv[i];
    }
  }
  moving_mean_->value = std::move(mean);
  moving_variance_->value = std::move(var);
}

BatchNormGradients BatchNormalization::backward(const BatchNormContext& context, const Tensor& dy) const {
  const std::string where = "BatchNormalization '" + name_ + "'";
  if (!built_) throw StateError(where, "layer", "a built layer (call forward first)", "an unbuilt layer");
  if (context.variant && context.relu) {
    // A ReLU after a variant (renorm, ghost batches): its gradient, then the variant's.
    if (dy.shape() != context.relu_output.shape()) {
      throw ShapeError(where, "dy", "the shape of the forward input " + context.x.shape().str(),
                       dy.shape().str());
    }
    Tensor masked(dy.shape());
    kernels::activation_backward(kernels::Activation::relu, nullptr, context.relu_output.data(), dy.data(), 1,
                                 masked.numel(), masked.data());
    return backward_variant(context, masked);
  }
  if (context.variant) return backward_variant(context, dy);
  const detail::ChannelView view = detail::channel_view(context.x.shape(), axes_);
  return detail::backward(context, view, dy, gamma_ ? gamma_->value.data() : nullptr, options_.epsilon,
                          gamma_.has_value(), beta_.has_value(), param_shape_, where);
}

void BatchNormalization::set_trainable(bool trainable) {
  trainable_ = trainable;
  if (gamma_) gamma_->trainable = trainable;
  if (beta_) beta_->trainable = trainable;
}

BatchNormalizationOptions BatchNormalization::get_config() const {
  BatchNormalizationOptions c = options_;
  c.name = name_;
  c.trainable = trainable_;
  return c;
}

std::vector<Variable*> BatchNormalization::weights() {
  std::vector<Variable*> w;
  for (auto* v : {&gamma_, &beta_, &moving_mean_, &moving_variance_, &moving_stddev_, &renorm_mean_, &renorm_stddev_})
    if (*v) w.push_back(&**v);
  return w;
}

namespace {
struct BatchNormLayerContext : LayerContext {
  BatchNormContext context;
};
}  // namespace

Tensor BatchNormalization::forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                                   UpdateSink* updates) {
  return forward_layer(x, training, context, updates, false);
}

Tensor BatchNormalization::forward_relu(const Tensor& x, bool training,
                                        std::unique_ptr<LayerContext>* context, UpdateSink* updates) {
  return forward_layer(x, training, context, updates, true);
}

Tensor BatchNormalization::forward_layer(const Tensor& x, bool training,
                                         std::unique_ptr<LayerContext>* context, UpdateSink* updates,
                                         bool relu) {
  auto saved = context ? std::make_unique<BatchNormLayerContext>() : nullptr;
  BatchNormContext* ctx = saved ? &saved->context : nullptr;
  Tensor y;
  if (updates && training) {
    StatisticsUpdate update;
    y = collect(x, update, ctx, nullptr, relu);
    if (update.count > 0) updates->record(*this, update);
  } else {
    y = forward_impl(x, nullptr, std::optional<bool>(training), ctx, relu);
  }
  if (context) *context = std::move(saved);
  return y;
}

Tensor BatchNormalization::backward(const LayerContext& context, const Tensor& dy, Gradients& grads) {
  const auto* saved = dynamic_cast<const BatchNormLayerContext*>(&context);
  if (!saved) throw StateError(where(), "context", "the context of this layer's forward call", "another layer's");
  BatchNormGradients g = backward(saved->context, dy);
  if (gamma_ && g.dgamma) accumulate(grads, &*gamma_, *g.dgamma);
  if (beta_ && g.dbeta) accumulate(grads, &*beta_, *g.dbeta);
  return std::move(g.dx);
}

}  // namespace bnorm::nn
