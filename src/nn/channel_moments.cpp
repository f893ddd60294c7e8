#include "bnorm/nn/channel_moments.hpp"

#include <string>

#include "bnorm/core/error.hpp"

namespace bnorm::nn {

namespace {

constexpr const char* kWhere = "ChannelMoments";

void require_count(std::int64_t count, const char* argument) {
  if (count < 0) throw ArgumentError(kWhere, argument, "a count >= 0", std::to_string(count));
}

void require_consistent(const ChannelMoments& m, const char* argument) {
  require_count(m.count, argument);
  if (m.mean.size() != m.m2.size()) {
    throw ShapeError(
        kWhere, argument, "as many m2 values as means (one per channel)",
        std::to_string(m.mean.size()) + " means and " + std::to_string(m.m2.size()) + " m2 values");
  }
}

// Moments with no channels and no elements: the identity of merge().
bool is_identity(const ChannelMoments& m) {
  return m.count == 0 && m.mean.empty();
}

}  // namespace

ChannelMoments::ChannelMoments(std::int64_t channels) {
  if (channels < 0) throw ArgumentError(kWhere, "channels", "a channel count >= 0", std::to_string(channels));
  mean.assign(static_cast<std::size_t>(channels), 0.0);
  m2.assign(static_cast<std::size_t>(channels), 0.0);
}

ChannelMoments ChannelMoments::from_mean_var(const std::vector<double>& mean, const std::vector<double>& var,
                                             std::int64_t count) {
  require_count(count, "count");
  if (mean.size() != var.size()) {
    throw ShapeError(kWhere, "var", "one variance per mean (" + std::to_string(mean.size()) + ")",
                     std::to_string(var.size()) + " values");
  }
  ChannelMoments m;
  m.count = count;
  m.mean = mean;
  m.m2.resize(var.size());
  const double n = static_cast<double>(count);
  for (std::size_t c = 0; c < var.size(); ++c) m.m2[c] = var[c] * n;
  return m;
}

ChannelMoments ChannelMoments::from_mean_var(const Tensor& mean, const Tensor& var, std::int64_t count) {
  std::vector<double> m(static_cast<std::size_t>(mean.numel())), v(static_cast<std::size_t>(var.numel()));
  for (std::int64_t c = 0; c < mean.numel(); ++c) m[static_cast<std::size_t>(c)] = mean[c];
  for (std::int64_t c = 0; c < var.numel(); ++c) v[static_cast<std::size_t>(c)] = var[c];
  return from_mean_var(m, v, count);
}

std::vector<double> ChannelMoments::variance() const {
  std::vector<double> v(m2.size(), 0.0);
  if (count == 0) return v;
  const double n = static_cast<double>(count);
  for (std::size_t c = 0; c < m2.size(); ++c) v[c] = m2[c] / n;
  return v;
}

void ChannelMoments::merge(const ChannelMoments& other) {
  require_consistent(*this, "moments merged into");
  require_consistent(other, "moments merged");
  if (is_identity(other)) return;
  if (is_identity(*this)) {
    *this = other;
    return;
  }
  if (other.mean.size() != mean.size()) {
    throw ShapeError(kWhere, "moments merged",
                     std::to_string(mean.size()) + " channels (as the moments merged into)",
                     std::to_string(other.mean.size()) + " channels");
  }
  if (other.count == 0) return;
  if (count == 0) {
    *this = other;
    return;
  }
  // Chan et al. (header): the same formula for every channel, in double.
  const double na = static_cast<double>(count), nb = static_cast<double>(other.count), n = na + nb;
  const double weight_b = nb / n;        // n_b / n
  const double between = na * weight_b;  // n_a * n_b / n
  for (std::size_t c = 0; c < mean.size(); ++c) {
    const double delta = other.mean[c] - mean[c];
    const double m2_b = other.m2[c];  // read before writing: `other` may be *this
    mean[c] += delta * weight_b;
    m2[c] += m2_b + delta * delta * between;
  }
  count += other.count;
}

ChannelMoments merge(ChannelMoments a, const ChannelMoments& b) {
  a.merge(b);
  return a;
}

}  // namespace bnorm::nn
