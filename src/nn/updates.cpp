#include "bnorm/nn/updates.hpp"

#include <cstdio>

#include "bnorm/core/error.hpp"
#include "batch_norm_common.hpp"

namespace bnorm::nn {

namespace {

// The double moments of an update: the recorded ones, else its float statistics widened
// (an update built by hand).
ChannelMoments moments_of(const StatisticsUpdate& u) {
  if (u.moments.count == u.count && u.moments.channels() == u.batch_mean.numel() && u.moments.channels() > 0)
    return u.moments;
  return ChannelMoments::from_mean_var(u.batch_mean, u.batch_variance, u.count);
}

}  // namespace

void merge_update(StatisticsUpdate& a, const StatisticsUpdate& b) {
  if (b.count == 0) return;
  if (a.count == 0) {
    a = b;
    return;
  }
  if (b.batch_mean.numel() != a.batch_mean.numel() || b.batch_variance.numel() != a.batch_variance.numel()) {
    throw ShapeError(
        "merge_update", "update merged",
        std::to_string(a.batch_mean.numel()) + " values per statistic (as the update merged into)",
        std::to_string(b.batch_mean.numel()) + " and " + std::to_string(b.batch_variance.numel()));
  }
  ChannelMoments merged = moments_of(a);
  merged.merge(moments_of(b));  // Chan's formula in double (channel_moments.hpp)
  const std::vector<double> var = merged.variance();
  for (std::int64_t c = 0; c < a.batch_mean.numel(); ++c) {
    a.batch_mean[c] = static_cast<float>(merged.mean[static_cast<std::size_t>(c)]);
    a.batch_variance[c] = static_cast<float>(var[static_cast<std::size_t>(c)]);
  }
  a.count = merged.count;
  a.moments = std::move(merged);
}

UpdateCollection::~UpdateCollection() {
  if (pending_.empty()) return;
  std::string names;
  for (const auto& p : pending_) names += (names.empty() ? "" : ", ") + p.layer->name();
  std::fprintf(stderr,
               "bnorm: warning: %zu moving-statistic update(s) were collected but never applied or "
               "discarded (layers: %s)\n",
               pending_.size(), names.c_str());
}

void UpdateCollection::record(BatchNormalization& layer, const StatisticsUpdate& update) {
  if (update.count == 0) return;
  const Variable* mean = layer.moving_mean();
  const std::int64_t c = mean ? mean->value.numel() : -1;
  const std::int64_t moments_c = update.moments.channels();
  if (update.batch_mean.numel() != c || update.batch_variance.numel() != c ||
      (moments_c != 0 && moments_c != c)) {
    throw ShapeError(
        "UpdateCollection", "update for '" + layer.name() + "'", std::to_string(c) + " values per statistic",
        std::to_string(update.batch_mean.numel()) + " and " + std::to_string(update.batch_variance.numel()) +
            (moments_c != 0 ? ", double moments of " + std::to_string(moments_c) + " channels" : ""));
  }
  for (auto& p : pending_) {
    if (p.layer == &layer) {
      merge_update(p.update, update);
      return;
    }
  }
  pending_.push_back({&layer, update});
}

void UpdateCollection::apply() {
  // Validate everything first, so that a bad update leaves every layer unchanged.
  for (const auto& p : pending_) {
    if (p.layer->options().nan_policy == NanPolicy::reject) {
      const std::string where = "UpdateCollection: BatchNormalization '" + p.layer->name() + "'";
      detail::require_finite(p.update.batch_mean, where, "batch mean");
      detail::require_finite(p.update.batch_variance, where, "batch variance");
    }
  }
  for (const auto& p : pending_) p.layer->apply_update(p.update);
  pending_.clear();
}

const StatisticsUpdate* UpdateCollection::find(const BatchNormalization& layer) const {
  for (const auto& p : pending_)
    if (p.layer == &layer) return &p.update;
  return nullptr;
}

}  // namespace bnorm::nn
