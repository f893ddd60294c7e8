#include "bnorm/nn/updates.hpp"

#include <cstdio>

#include "bnorm/core/error.hpp"
#include "batch_norm_common.hpp"

namespace bnorm::nn {

void merge_update(StatisticsUpdate& a, const StatisticsUpdate& b) {
  if (b.count == 0) return;
  if (a.count == 0) {
    a = b;
    return;
  }
  // Chan et al.: combine (mean, biased variance, count) of two disjoint sets, in double.
  const double na = static_cast<double>(a.count), nb = static_cast<double>(b.count), n = na + nb;
  for (std::int64_t c = 0; c < a.batch_mean.numel(); ++c) {
    const double ma = a.batch_mean[c], mb = b.batch_mean[c];
    const double delta = mb - ma;
    const double m2 = a.batch_variance[c] * na + b.batch_variance[c] * nb + delta * delta * na * nb / n;
    a.batch_mean[c] = static_cast<float>(ma + delta * nb / n);
    a.batch_variance[c] = static_cast<float>(m2 / n);
  }
  a.count += b.count;
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
  if (update.batch_mean.numel() != c || update.batch_variance.numel() != c) {
    throw ShapeError("UpdateCollection", "update for '" + layer.name() + "'",
                     std::to_string(c) + " values per statistic",
                     std::to_string(update.batch_mean.numel()) + " and " + std::to_string(update.batch_variance.numel()));
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
