// Mergeable statistics (bnorm/nn/channel_moments.hpp): merges of any split against one
// double pass over the whole batch, and collected updates of micro-batches against one
// training call on the whole batch, on data whose mean is large against its spread.
#include "bnorm/nn/channel_moments.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/kernels/batch_norm.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/updates.hpp"

using bnorm::Shape;
using bnorm::Tensor;
namespace nn = bnorm::nn;

namespace {

// offset[c] + N(0, spread) per channel, deterministic (LCG, Box-Muller).
class Gaussian {
 public:
  explicit Gaussian(std::uint64_t seed) : state_(0x9e3779b97f4a7c15ULL ^ seed) {}
  double next() {
    const double u1 = uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  double uniform() {  // (0, 1)
    state_ = state_ * 6364136223846793005ULL + 1442695040888963407ULL;
    return (static_cast<double>(state_ >> 11) + 0.5) * 0x1.0p-53;
  }
  std::uint64_t state_;
};

constexpr double kOffsets[] = {0.0, 1e3, 1e4, 1e6, 1e7};
constexpr int kOffsetCount = 5;

// x of `shape`, channel axes `axes` (sorted, non-negative): element of channel c (the
// flat index over the channel axes) is kOffsets[c % 5] + spread * N(0, 1).
Tensor offset_data(const Shape& shape, const std::vector<int>& axes, double spread, std::uint64_t seed) {
  Tensor x(shape);
  Gaussian g(seed);
  const int rank = shape.rank();
  std::vector<std::int64_t> index(static_cast<std::size_t>(rank), 0);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    std::int64_t rest = i;
    for (int d = rank - 1; d >= 0; --d) {
      index[static_cast<std::size_t>(d)] = rest % shape[d];
      rest /= shape[d];
    }
    std::int64_t c = 0;
    for (int a : axes) c = c * shape[a] + index[static_cast<std::size_t>(a)];
    x[i] = static_cast<float>(kOffsets[c % kOffsetCount] + spread * g.next());
  }
  return x;
}

// Rows [n0, n1) of x along axis 0.
Tensor rows(const Tensor& x, std::int64_t n0, std::int64_t n1) {
  std::vector<std::int64_t> dims = x.shape().dims();
  const std::int64_t row = dims[0] > 0 ? x.numel() / dims[0] : 0;
  dims[0] = n1 - n0;
  const auto& v = x.vector();
  return Tensor(Shape(dims), std::vector<float>(v.begin() + n0 * row, v.begin() + n1 * row));
}

struct LayerCase {
  std::string name;
  nn::KerasVersion version;
  std::vector<int> axis;  // as given to the layer
  std::vector<int> axes;  // non-negative, sorted
  Shape shape;            // the whole batch
};

std::vector<LayerCase> layer_cases() {
  return {
      {"keras3 (N, C)", nn::KerasVersion::keras3, {-1}, {1}, Shape{64, 5}},
      {"keras3 (N, C, H, W) axis 1", nn::KerasVersion::keras3, {1}, {1}, Shape{64, 5, 2, 3}},
      {"keras2 non-fused (N, C)", nn::KerasVersion::keras2, {-1}, {1}, Shape{64, 5}},
      {"keras2 fused (N, C, H, W) axis 1", nn::KerasVersion::keras2, {1}, {1}, Shape{64, 5, 2, 3}},
      {"keras2 fused (N, H, W, C) axis 3", nn::KerasVersion::keras2, {3}, {3}, Shape{64, 2, 1, 5}},
      {"keras2 axes {1, 2} (N, 2, C)", nn::KerasVersion::keras2, {1, 2}, {1, 2}, Shape{64, 2, 5}},
  };
}

// Micro-batch sizes along axis 0, each summing to 64: unequal, one-element and empty parts.
std::vector<std::vector<std::int64_t>> splits() {
  return {{64}, {1, 0, 7, 13, 1, 30, 12}, {32, 32}, {63, 1}, {0, 1, 63, 0}, std::vector<std::int64_t>(64, 1)};
}

}  // namespace

// The header's promise: one apply() of the merged updates of micro-batches equals one
// training call on the whole batch. Momentum 0 makes the moving statistics the batch
// statistics themselves (the most sensitive check); 0.9 checks the blend.
TEST(CollectedUpdates, MergeOfAnySplitEqualsOneCallOnTheWholeBatchWhateverTheOffset) {
  double worst_var = 0.0, worst_mean = 0.0;
  for (const LayerCase& lc : layer_cases()) {
    for (const double momentum : {0.0, 0.9}) {
      const Tensor x = offset_data(lc.shape, lc.axes, 1.0, 7);
      for (const auto& split : splits()) {
        SCOPED_TRACE(lc.name + ", momentum " + std::to_string(momentum) + ", " +
                     std::to_string(split.size()) + " parts");
        nn::BatchNormalizationOptions o{.axis = lc.axis, .momentum = momentum, .version = lc.version};
        o.name = "whole";
        nn::BatchNormalization whole(o);
        o.name = "parts";
        nn::BatchNormalization parts(o);
        whole.build(lc.shape);
        parts.build(lc.shape);
        whole(x, true);
        nn::UpdateCollection updates;
        std::int64_t n0 = 0;
        for (const std::int64_t size : split) {
          parts.forward(rows(x, n0, n0 + size), true, nullptr, &updates);
          n0 += size;
        }
        ASSERT_EQ(n0, lc.shape[0]);
        updates.apply();
        const Tensor& want_mean = whole.moving_mean()->value;
        const Tensor& want_var = whole.moving_variance()->value;
        const Tensor& got_mean = parts.moving_mean()->value;
        const Tensor& got_var = parts.moving_variance()->value;
        ASSERT_EQ(got_mean.shape(), want_mean.shape());
        for (std::int64_t c = 0; c < want_var.numel(); ++c) {
          const double var_error = std::fabs(got_var[c] - static_cast<double>(want_var[c])) / want_var[c];
          // The mean's scale: its size or, near 0, the spread.
          const double mean_scale = std::fabs(want_mean[c]) + std::sqrt(static_cast<double>(want_var[c]));
          const double mean_error = std::fabs(got_mean[c] - static_cast<double>(want_mean[c])) / mean_scale;
          worst_var = std::max(worst_var, var_error);
          worst_mean = std::max(worst_mean, mean_error);
          EXPECT_LE(var_error, 1e-6) << "channel " << c << ": moving variance " << got_var[c] << ", one call "
                                     << want_var[c];
          EXPECT_LE(mean_error, 1e-6)
              << "channel " << c << ": moving mean " << got_mean[c] << ", one call " << want_mean[c];
        }
      }
    }
  }
  std::printf("collected updates against one call: worst relative error, variance %.3g, mean %.3g\n",
              worst_var, worst_mean);
}

// ---------------------------------------------------------------------------------------
// ChannelMoments: merges of any split against one pass over the whole batch.

namespace {

// Channel c of the (N, C) test data: offset + spread * N(0, 1), in float.
struct Channel {
  double offset, spread;
};
const std::vector<Channel> kChannels = {{0.0, 1.0}, {1e3, 1.0}, {1e3, 0.01}, {1e6, 1.0},
                                        {1e6, 0.1}, {1e7, 1.0}, {1e7, 4.0}};

std::vector<float> channel_data(std::int64_t N, std::uint64_t seed) {
  const std::int64_t C = static_cast<std::int64_t>(kChannels.size());
  std::vector<float> x(static_cast<std::size_t>(N * C));
  Gaussian g(seed);
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t c = 0; c < C; ++c) {
      const Channel& ch = kChannels[static_cast<std::size_t>(c)];
      x[static_cast<std::size_t>(n * C + c)] = static_cast<float>(ch.offset + ch.spread * g.next());
    }
  return x;
}

// Plain double two-pass moments of rows [n0, n1) of (N, C) data.
nn::ChannelMoments two_pass(const std::vector<float>& x, std::int64_t C, std::int64_t n0, std::int64_t n1) {
  nn::ChannelMoments m(C);
  m.count = n1 - n0;
  if (m.count == 0) return m;
  for (std::int64_t c = 0; c < C; ++c) {
    double sum = 0.0;
    for (std::int64_t n = n0; n < n1; ++n) sum += x[static_cast<std::size_t>(n * C + c)];
    const double mean = sum / static_cast<double>(m.count);
    double m2 = 0.0;
    for (std::int64_t n = n0; n < n1; ++n) {
      const double d = x[static_cast<std::size_t>(n * C + c)] - mean;
      m2 += d * d;
    }
    m.mean[static_cast<std::size_t>(c)] = mean;
    m.m2[static_cast<std::size_t>(c)] = m2;
  }
  return m;
}

// The kernels' double statistics of rows [n0, n1) (what a layer records).
nn::ChannelMoments kernel_moments(const std::vector<float>& x, std::int64_t C, std::int64_t n0,
                                  std::int64_t n1, bnorm::kernels::Impl impl) {
  const bnorm::kernels::BatchNormDims dims{n1 - n0, C, 1};
  std::vector<float> mean(static_cast<std::size_t>(C)), var(mean.size());
  std::vector<double> mean_d(mean.size()), var_d(mean.size());
  bnorm::kernels::moments(x.data() + n0 * C, dims, mean.data(), var.data(), mean_d.data(), var_d.data(),
                          impl);
  return nn::ChannelMoments::from_mean_var(mean_d, var_d, n1 - n0);
}

// Part sizes summing to N: fixed ones (unequal, one-element and empty parts) and random
// ones (cut points drawn with repeats, so empty and one-element parts come up).
std::vector<std::vector<std::int64_t>> moment_splits(std::int64_t N) {
  std::vector<std::vector<std::int64_t>> s = {{N},
                                              {0, N},
                                              {N, 0},
                                              {1, N - 1},
                                              {N - 1, 1},
                                              {0, 1, 0, N - 2, 1, 0},
                                              std::vector<std::int64_t>(static_cast<std::size_t>(N), 1)};
  std::uint64_t state = 12345;
  auto next = [&state](std::int64_t bound) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<std::int64_t>((state >> 33) % static_cast<std::uint64_t>(bound));
  };
  for (int r = 0; r < 40; ++r) {
    std::vector<std::int64_t> cuts = {0, N};
    const std::int64_t parts = 1 + next(16);
    for (std::int64_t k = 1; k < parts; ++k) cuts.push_back(next(N + 1));
    std::sort(cuts.begin(), cuts.end());
    std::vector<std::int64_t> sizes;
    for (std::size_t k = 1; k < cuts.size(); ++k) sizes.push_back(cuts[k] - cuts[k - 1]);
    s.push_back(sizes);
  }
  return s;
}

// Relative errors of got against want: mean against |mean| + spread, m2 against m2.
struct Errors {
  double mean = 0.0, m2 = 0.0;
};
Errors compare(const nn::ChannelMoments& got, const nn::ChannelMoments& want) {
  Errors e;
  for (std::size_t c = 0; c < want.mean.size(); ++c) {
    const double sd = std::sqrt(want.m2[c] / static_cast<double>(want.count));
    e.mean = std::max(e.mean, std::fabs(got.mean[c] - want.mean[c]) / (std::fabs(want.mean[c]) + sd));
    e.m2 = std::max(e.m2, std::fabs(got.m2[c] - want.m2[c]) / want.m2[c]);
  }
  return e;
}

}  // namespace

TEST(ChannelMoments, MergeOfAnySplitEqualsOnePassOverTheWholeBatchWhateverTheOffset) {
  const std::int64_t N = 97, C = static_cast<std::int64_t>(kChannels.size());
  const std::vector<float> x = channel_data(N, 3);
  const nn::ChannelMoments want = two_pass(x, C, 0, N);
  enum Source { exact, kernel_cpu, kernel_reference };
  Errors worst[3];
  for (const Source source : {exact, kernel_cpu, kernel_reference}) {
    for (const auto& split : moment_splits(N)) {
      std::vector<nn::ChannelMoments> parts;
      std::int64_t n0 = 0;
      for (const std::int64_t size : split) {
        parts.push_back(source == exact
                            ? two_pass(x, C, n0, n0 + size)
                            : kernel_moments(x, C, n0, n0 + size,
                                             source == kernel_cpu ? bnorm::kernels::Impl::cpu
                                                                  : bnorm::kernels::Impl::reference));
        n0 += size;
      }
      ASSERT_EQ(n0, N);
      // Three merge orders: left to right into the default (no channels), right to left,
      // and pairwise (a tree, as an all-reduce would).
      nn::ChannelMoments forward;
      for (const auto& p : parts) forward.merge(p);
      nn::ChannelMoments backward = parts.back();
      for (std::size_t k = parts.size() - 1; k-- > 0;) backward = nn::merge(parts[k], backward);
      std::vector<nn::ChannelMoments> level = parts;
      while (level.size() > 1) {
        std::vector<nn::ChannelMoments> up;
        for (std::size_t k = 0; k + 1 < level.size(); k += 2) up.push_back(nn::merge(level[k], level[k + 1]));
        if (level.size() % 2 == 1) up.push_back(level.back());
        level = std::move(up);
      }
      for (const nn::ChannelMoments* got : {&forward, &backward, &level.front()}) {
        SCOPED_TRACE("source " + std::to_string(source) + ", " + std::to_string(split.size()) + " parts");
        ASSERT_EQ(got->count, N);
        ASSERT_EQ(got->channels(), C);
        const Errors e = compare(*got, want);
        worst[source].mean = std::max(worst[source].mean, e.mean);
        worst[source].m2 = std::max(worst[source].m2, e.m2);
        EXPECT_LE(e.mean, 1e-6);
        EXPECT_LE(e.m2, 1e-6);
      }
    }
  }
  // The merge itself adds only double rounding: from exact parts, far below the bound
  // (about 2^-53 * offset / spread = 1e-9 at 1e7 times the spread).
  EXPECT_LE(worst[exact].m2, 1e-8);
  EXPECT_LE(worst[exact].mean, 1e-12);
  std::printf(
      "merged against one pass: worst relative error of m2 / mean: exact parts %.3g / %.3g, "
      "cpu kernel parts %.3g / %.3g, reference kernel parts %.3g / %.3g\n",
      worst[exact].m2, worst[exact].mean, worst[kernel_cpu].m2, worst[kernel_cpu].mean,
      worst[kernel_reference].m2, worst[kernel_reference].mean);
}

// Empty and one-element parts, the identity, merging with itself, and the float
// statistics' loss the double ones avoid.
TEST(ChannelMoments, EdgeCases) {
  const nn::ChannelMoments a = nn::ChannelMoments::from_mean_var({1e6 + 0.25, -2.0}, {4.0, 0.5}, 8);
  EXPECT_EQ(a.m2, (std::vector<double>{32.0, 4.0}));
  EXPECT_EQ(a.variance(), (std::vector<double>{4.0, 0.5}));

  nn::ChannelMoments none;  // the identity, either side
  EXPECT_EQ(nn::merge(none, a), a);
  EXPECT_EQ(nn::merge(a, none), a);
  const nn::ChannelMoments empty(2);  // count 0 with channels: also the identity
  EXPECT_EQ(empty.count, 0);
  EXPECT_EQ(empty.variance(), (std::vector<double>{0.0, 0.0}));
  EXPECT_EQ(nn::merge(empty, a), a);
  EXPECT_EQ(nn::merge(a, empty), a);
  EXPECT_EQ(nn::merge(none, none), none);

  // One element: m2 0, mean the element; merging it moves the mean by delta / n.
  const nn::ChannelMoments one = nn::ChannelMoments::from_mean_var({1e6 + 9.25, -2.0}, {0.0, 0.0}, 1);
  const nn::ChannelMoments ab = nn::merge(a, one);
  EXPECT_EQ(ab.count, 9);
  EXPECT_DOUBLE_EQ(ab.mean[0], 1e6 + 0.25 + 9.0 / 9.0);
  EXPECT_DOUBLE_EQ(ab.m2[0], 32.0 + 81.0 * 8.0 / 9.0);
  EXPECT_DOUBLE_EQ(ab.mean[1], -2.0);
  EXPECT_DOUBLE_EQ(ab.m2[1], 4.0);

  // Merging with itself: the same set twice (count and m2 double, mean stays).
  nn::ChannelMoments twice = a;
  twice.merge(twice);
  EXPECT_EQ(twice.count, 16);
  EXPECT_EQ(twice.mean, a.mean);
  EXPECT_EQ(twice.m2, (std::vector<double>{64.0, 8.0}));

  // Errors leave the moments unchanged.
  nn::ChannelMoments target = a;
  EXPECT_THROW(target.merge(nn::ChannelMoments::from_mean_var({1.0, 2.0, 3.0}, {1.0, 1.0, 1.0}, 2)),
               bnorm::ShapeError);
  EXPECT_THROW(target.merge(nn::ChannelMoments(3)), bnorm::ShapeError);
  nn::ChannelMoments bad = a;
  bad.count = -1;
  EXPECT_THROW(target.merge(bad), bnorm::ArgumentError);
  bad = a;
  bad.m2.pop_back();
  EXPECT_THROW(target.merge(bad), bnorm::ShapeError);
  EXPECT_EQ(target, a);
  EXPECT_THROW(nn::ChannelMoments::from_mean_var({1.0}, {1.0, 2.0}, 2), bnorm::ShapeError);
  EXPECT_THROW(nn::ChannelMoments::from_mean_var({1.0}, {1.0}, -2), bnorm::ArgumentError);
  EXPECT_THROW(nn::ChannelMoments(-1), bnorm::ArgumentError);

  // Why double: two halves of {1e6 + 0.01, 1e6 + 0.03} | {1e6 + 0.05, 1e6 + 0.07}
  // (spread 0.022). With their means rounded to float (ulp 0.0625 at 1e6) the merged
  // variance is 0.0025 instead of 0.0005; in double it is exact to rounding.
  const double lo = 1e6 + 0.02, hi = 1e6 + 0.06;
  const nn::ChannelMoments exact = nn::merge(nn::ChannelMoments::from_mean_var({lo}, {1e-4}, 2),
                                             nn::ChannelMoments::from_mean_var({hi}, {1e-4}, 2));
  EXPECT_NEAR(exact.variance()[0], 5e-4, 1e-12);
  const nn::ChannelMoments rounded =
      nn::merge(nn::ChannelMoments::from_mean_var({static_cast<float>(lo)}, {1e-4}, 2),
                nn::ChannelMoments::from_mean_var({static_cast<float>(hi)}, {1e-4}, 2));
  EXPECT_GT(std::fabs(rounded.variance()[0] - 5e-4), 1e-4);
}

// merge_update: the recorded double moments win over the float fields; an update built
// by hand (no moments) still merges from its float fields; mismatches are ShapeErrors.
TEST(CollectedUpdates, MergeUpdateUsesTheDoubleMoments) {
  const Tensor x = offset_data(Shape{40, 5}, {1}, 1.0, 21);
  nn::BatchNormalization layer(nn::BatchNormalizationOptions{.momentum = 0.0});
  layer.build(x.shape());
  nn::StatisticsUpdate whole, a, b;
  layer.forward_collect(x, whole);
  layer.forward_collect(rows(x, 0, 13), a);
  layer.forward_collect(rows(x, 13, 40), b);
  ASSERT_EQ(whole.moments.count, 40);
  ASSERT_EQ(whole.moments.channels(), 5);
  EXPECT_EQ(a.moments.count, 13);
  nn::merge_update(a, b);
  EXPECT_EQ(a.count, 40);
  EXPECT_EQ(a.moments.count, 40);
  EXPECT_EQ(a.batch_mean.shape(), whole.batch_mean.shape());
  const Errors e = compare(a.moments, whole.moments);
  EXPECT_LE(e.m2, 1e-6);
  EXPECT_LE(e.mean, 1e-6);
  for (std::int64_t c = 0; c < 5; ++c) {
    EXPECT_EQ(a.batch_mean[c], static_cast<float>(a.moments.mean[static_cast<std::size_t>(c)]));
    EXPECT_NEAR(a.batch_variance[c], whole.batch_variance[c], 1e-6 * whole.batch_variance[c]);
  }

  // By hand, without moments: the float fields are merged (what older code built).
  nn::StatisticsUpdate h1{Tensor(Shape{2}, {1.0f, 4.0f}), Tensor(Shape{2}, {1.0f, 0.0f}), 2};
  const nn::StatisticsUpdate h2{Tensor(Shape{2}, {3.0f, 4.0f}), Tensor(Shape{2}, {1.0f, 0.0f}), 2};
  nn::merge_update(h1, h2);
  EXPECT_EQ(h1.count, 4);
  EXPECT_EQ(h1.batch_mean.vector(), (std::vector<float>{2.0f, 4.0f}));
  EXPECT_EQ(h1.batch_variance.vector(), (std::vector<float>{2.0f, 0.0f}));

  nn::StatisticsUpdate wrong{Tensor(Shape{3}), Tensor(Shape{3}), 2};
  const nn::StatisticsUpdate before = h1;
  EXPECT_THROW(nn::merge_update(h1, wrong), bnorm::ShapeError);
  EXPECT_EQ(h1.count, before.count);
  EXPECT_EQ(h1.batch_mean.vector(), before.batch_mean.vector());
  EXPECT_EQ(h1.moments, before.moments);

  // A collection refuses moments of another channel count, as it does float fields.
  nn::UpdateCollection updates;
  nn::StatisticsUpdate odd = whole;
  odd.moments = nn::ChannelMoments(4);
  odd.moments.count = odd.count;
  EXPECT_THROW(updates.record(layer, odd), bnorm::ShapeError);
  EXPECT_EQ(updates.pending(), 0u);
}
