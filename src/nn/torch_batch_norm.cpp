#include "bnorm/nn/torch_batch_norm.hpp"

#include <cmath>

#include "batch_norm_common.hpp"
#include "bnorm/core/error.hpp"
#include "channel_view.hpp"

namespace bnorm::nn {

namespace {


const char* class_name(TorchBatchNorm::Rank r) {
  switch (r) {
    case TorchBatchNorm::Rank::d1: return "BatchNorm1d";
    case TorchBatchNorm::Rank::d2: return "BatchNorm2d";
    case TorchBatchNorm::Rank::d3: return "BatchNorm3d";
    case TorchBatchNorm::Rank::any: return "BatchNorm";
  }
  return "BatchNorm";
}

void check_momentum(const std::optional<double>& m, const std::string& where) {
  if (m && !(*m >= 0.0 && *m <= 1.0)) {
    throw ArgumentError(where, "momentum",
                        "a value in [0, 1] (PyTorch convention: the weight of the new batch) or nullopt "
                        "(cumulative average)",
                        detail::format_number(*m));
  }
}

}  // namespace

TorchBatchNorm::TorchBatchNorm(Rank rank, TorchBatchNormOptions options)
    : rank_(rank), options_(std::move(options)), track_running_stats_(options_.track_running_stats) {
  const std::string where = class_name(rank_);
  if (options_.num_features < 0) {
    throw ArgumentError(where, "num_features", "a value >= 1 (or 0 for a lazy module)",
                        std::to_string(options_.num_features));
  }
  if (std::isnan(options_.eps)) throw ArgumentError(where, "eps", "a number > 0", "nan");
  check_momentum(options_.momentum, where);
  if (options_.num_features > 0) materialize(options_.num_features);
}

void TorchBatchNorm::materialize(std::int64_t c) {
  num_features_ = c;
  const Shape s{c};
  if (options_.affine) {
    weight_ = Tensor::ones(s);
    bias_ = Tensor::zeros(s);
  }
  if (options_.track_running_stats) {
    running_mean_ = Tensor::zeros(s);
    running_var_ = Tensor::ones(s);
    num_batches_tracked_ = 0;
  }
}

void TorchBatchNorm::set_momentum(std::optional<double> momentum) {
  check_momentum(momentum, class_name(rank_));
  options_.momentum = momentum;
}

void TorchBatchNorm::reset_running_stats() {
  if (running_mean_) running_mean_->fill(0.0f);
  if (running_var_) running_var_->fill(1.0f);
  num_batches_tracked_ = 0;
}

void TorchBatchNorm::reset_parameters() {
  reset_running_stats();
  if (weight_) weight_->fill(1.0f);
  if (bias_) bias_->fill(0.0f);
}

void TorchBatchNorm::check_input(const Tensor& x) const {
  const std::string where = class_name(rank_);
  const int r = x.rank();
  bool ok = false;
  std::string expected;
  switch (rank_) {
    case Rank::d1: ok = r == 2 || r == 3; expected = "2D or 3D input"; break;
    case Rank::d2: ok = r == 4; expected = "4D input"; break;
    case Rank::d3: ok = r == 5; expected = "5D input"; break;
    case Rank::any: ok = r >= 2; expected = "at least 2D input"; break;
  }
  if (!ok) {
    throw ShapeError(where, "input", expected, std::to_string(r) + "D input of shape " + x.shape().str());
  }
  if (initialized() && x.dim(1) != num_features_) {
    throw ShapeError(where, "input channels (dim 1)", std::to_string(num_features_) + " (num_features)",
                     std::to_string(x.dim(1)) + ", input shape " + x.shape().str());
  }
}

Tensor TorchBatchNorm::forward(const Tensor& x, BatchNormContext* context) {
  const std::string where = class_name(rank_);
  check_input(x);
  // A lazy module materializes from its first input; done on a copy so that a call that
  // fails leaves the module as it was.
  if (!initialized()) {
    TorchBatchNorm built = *this;
    built.materialize(x.dim(1));
    Tensor y = built.forward(x, context);
    *this = std::move(built);
    return y;
  }
  const bool has_stats = running_mean_.has_value();
  const bool update = training_ && track_running_stats_ && has_stats;
  const bool batch_statistics = training_ || !has_stats;
  if (batch_statistics && !(options_.eps > 0.0)) {
    throw ArgumentError(where, "eps", "a value > 0 when normalizing with batch statistics", detail::format_number(options_.eps));
  }
  if (!(options_.eps >= 0.0)) throw ArgumentError(where, "eps", "a value >= 0", detail::format_number(options_.eps));

  const detail::ChannelView view = detail::channel_view(x.shape(), {1});
  const std::int64_t count = view.dims.count();
  const bool synchronized = batch_statistics && synchronizing();
  if (batch_statistics && !synchronized && count == 1) {
    throw ShapeError(where, "input", "more than 1 value per channel when training",
                     "input size " + x.shape().str());
  }
  const float* w = weight_ ? weight_->data() : nullptr;
  const float* b = bias_ ? bias_->data() : nullptr;
  BatchNormContext local;
  BatchNormContext& ctx = context ? *context : local;
  if (!batch_statistics) {
    return detail::normalize_with(x, view, *running_mean_, *running_var_, w, b, options_.eps, ctx);
  }
  Tensor y;
  std::int64_t n = count;  // elements per channel of the statistics: every rank's with a communicator
  if (synchronized) {      // SyncBatchNorm: statistics of every rank's batch (batch_normalization.hpp)
    ChannelMoments merged;
    y = detail::normalize_synchronized(x, view, Shape{num_features_}, w, b, options_.eps, communicator_, ctx,
                                       merged);
    n = ctx.global_count;
    if (n == 1) {  // PyTorch's SyncBatchNorm: the check is on the global count
      throw ShapeError(where, "input", "more than 1 value per channel over all processes when training",
                       "input size " + x.shape().str() + " and 1 value in all");
    }
  } else {
    y = detail::normalize_with_batch(x, view, Shape{num_features_}, w, b, options_.eps, ctx);
  }
  if (!update || n == 0) return y;  // an empty batch changes nothing

  if (options_.nan_policy == NanPolicy::reject) {
    detail::require_finite(ctx.mean, where, "batch mean");
    detail::require_finite(ctx.var, where, "batch variance");
  }
  const std::int64_t counter = num_batches_tracked_ + 1;
  // PyTorch: factor = momentum, or 1 / num_batches_tracked for a cumulative average.
  const double factor = options_.momentum ? *options_.momentum : 1.0 / static_cast<double>(counter);
  const double bessel = static_cast<double>(n) / static_cast<double>(n - 1);
  Tensor rm = *running_mean_, rv = *running_var_;
  for (std::int64_t c = 0; c < num_features_; ++c) {
    rm[c] = static_cast<float>(factor * ctx.mean[c] + (1.0 - factor) * rm[c]);
    rv[c] = static_cast<float>(factor * (ctx.var[c] * bessel) + (1.0 - factor) * rv[c]);
  }
  *running_mean_ = std::move(rm);
  *running_var_ = std::move(rv);
  num_batches_tracked_ = counter;
  return y;
}

BatchNormGradients TorchBatchNorm::backward(const BatchNormContext& context, const Tensor& dy) const {
  const std::string where = class_name(rank_);
  if (!initialized()) throw StateError(where, "module", "an initialized module (call forward first)", "a lazy module");
  const detail::ChannelView view = detail::channel_view(context.x.shape(), {1});
  return detail::backward(context, view, dy, weight_ ? weight_->data() : nullptr, options_.eps,
                          weight_.has_value(), bias_.has_value(), Shape{num_features_}, where);
}

TorchBatchNorm BatchNorm1d(std::int64_t n, TorchBatchNormOptions o) {
  o.num_features = n;
  if (n < 1) throw ArgumentError("BatchNorm1d", "num_features", "a value >= 1", std::to_string(n));
  return TorchBatchNorm(TorchBatchNorm::Rank::d1, o);
}
TorchBatchNorm BatchNorm2d(std::int64_t n, TorchBatchNormOptions o) {
  o.num_features = n;
  if (n < 1) throw ArgumentError("BatchNorm2d", "num_features", "a value >= 1", std::to_string(n));
  return TorchBatchNorm(TorchBatchNorm::Rank::d2, o);
}
TorchBatchNorm BatchNorm3d(std::int64_t n, TorchBatchNormOptions o) {
  o.num_features = n;
  if (n < 1) throw ArgumentError("BatchNorm3d", "num_features", "a value >= 1", std::to_string(n));
  return TorchBatchNorm(TorchBatchNorm::Rank::d3, o);
}
TorchBatchNorm LazyBatchNorm1d(TorchBatchNormOptions o) {
  o.num_features = 0;
  return TorchBatchNorm(TorchBatchNorm::Rank::d1, o);
}
TorchBatchNorm LazyBatchNorm2d(TorchBatchNormOptions o) {
  o.num_features = 0;
  return TorchBatchNorm(TorchBatchNorm::Rank::d2, o);
}
TorchBatchNorm LazyBatchNorm3d(TorchBatchNormOptions o) {
  o.num_features = 0;
  return TorchBatchNorm(TorchBatchNorm::Rank::d3, o);
}

}  // namespace bnorm::nn
