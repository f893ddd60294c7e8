#include "bnorm/nn/batch_normalization.hpp"

#include <algorithm>
#include <cmath>

#include "batch_norm_common.hpp"
#include "bnorm/core/error.hpp"
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
  bool fused = false;
  if (options_.version == KerasVersion::keras2 && options_.fused != Fused::no) {
    const int a = axes.front();
    const bool fusable = axes.size() == 1 && ((rank == 4 && (a == 1 || a == 3)) || (rank == 5 && (a == 1 || a == 4)));
    if (options_.fused == Fused::yes && !fusable) {
      throw ArgumentError(where, "fused", "an input of rank 4 (axis 1 or 3) or rank 5 (axis 1 or 4) with fused=True",
                          "input shape " + input_shape.str() + " with axis " + detail::to_string(options_.axis));
    }
    fused = fusable;
  }
  Shape param_shape;
  if (axes.size() == 1) {
    param_shape = Shape{input_shape[axes.front()]};
  } else {  // Keras 2: rank-R parameters with size 1 on the reduced axes
    std::vector<std::int64_t> d(static_cast<std::size_t>(rank), 1);
    for (int a : axes) d[static_cast<std::size_t>(a)] = input_shape[a];
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
                               BatchNormContext* context) const {
  const detail::ChannelView view = detail::channel_view(x.shape(), axes_);
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

Tensor BatchNormalization::call(const Tensor& x, std::optional<bool> training) {
  return forward(x, training, nullptr);
}

Tensor BatchNormalization::forward(const Tensor& x, std::optional<bool> training, BatchNormContext* context) {
  if (!built_) build(x.shape());
  check_input(x);
  StatisticsUpdate update;
  // Keras: batch statistics (and an update) only when `training and self.trainable`.
  const bool batch_statistics = training.value_or(false) && trainable_;
  Tensor y = run(x, batch_statistics, update, context);
  if (update.count > 0) apply_update(update);  // validates before changing anything
  return y;
}

Tensor BatchNormalization::forward_collect(const Tensor& x, StatisticsUpdate& update, BatchNormContext* context) {
  if (!built_) build(x.shape());
  check_input(x);
  StatisticsUpdate local;
  Tensor y = run(x, trainable_, local, context);
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
  if (options_.version == KerasVersion::keras3) {
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
  for (auto* v : {&gamma_, &beta_, &moving_mean_, &moving_variance_})
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
  auto saved = context ? std::make_unique<BatchNormLayerContext>() : nullptr;
  BatchNormContext* ctx = saved ? &saved->context : nullptr;
  Tensor y;
  if (updates && training) {
    StatisticsUpdate update;
    y = forward_collect(x, update, ctx);
    if (update.count > 0) updates->record(*this, update);
  } else {
    y = forward(x, std::optional<bool>(training), ctx);
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
