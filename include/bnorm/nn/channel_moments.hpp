// bnorm/nn/channel_moments.hpp: per-channel batch statistics that merge exactly.
//
// ChannelMoments summarizes the elements of each channel of a batch by, in double,
//   count    elements per channel (the same for every channel)
//   mean_c = (1/count) sum x
//   m2_c   = sum (x - mean_c)^2            (biased variance = m2_c / count)
// and merge() turns the moments of two disjoint sets of elements into those of their
// union (Chan, Golub and LeVeque's parallel formula):
//   n = n_a + n_b,  delta_c = mean_b,c - mean_a,c
//   mean_c = mean_a,c + delta_c * n_b / n
//   m2_c   = m2_a,c + m2_b,c + delta_c^2 * n_a * n_b / n
// When one side has count 0 the result is the other side, copied exactly.
//
// This is what combines statistics of the same channels taken in several pieces:
// collected updates of micro-batches (bnorm/nn/updates.hpp), and in the same way the
// replicas of a synchronized batch normalization or the batches of a recalibration
// pass. Any split (unequal, one-element and empty parts, in any order or as a tree)
// merges to the moments of one pass over the whole batch: m2 is a sum of non-negative
// terms and delta a difference of means that are exact to a few double ulps, so a merge
// adds a relative error of a few 2^-53 to mean and m2, and about 2^-53 * |mean| / spread
// to m2 through delta (tested: 4e-10 at an offset of 1e7 times the spread, from exact
// parts; with parts from the kernels' double statistics the parts' own error dominates,
// 3e-8). The means must be kept in double: a float mean of data at 1e6 is off by up to
// 0.03, which the delta^2 term turns into a variance error of several percent for a
// spread of 1 (what merging the float statistics of collected updates did: 6 % at 1e7).
//
// A merge is as accurate as its parts: the kernels' double statistics (mean_d, var_d of
// bnorm/kernels/batch_norm.hpp) are within 3e-7 standard deviations (mean) and 3e-6
// relative (variance, typically 1e-7) of a double two-pass computation.
//
// Layout: channel c of the vectors is channel c of the kernels' (N, C, S) view, i.e.
// element c of a layer's parameter (flattened row-major for several channel axes).
#pragma once

#include <cstdint>
#include <vector>

#include "bnorm/core/tensor.hpp"

namespace bnorm::nn {

struct ChannelMoments {
  std::int64_t count = 0;    // elements per channel, >= 0
  std::vector<double> mean;  // (C) per-channel mean (0 for an empty set)
  std::vector<double> m2;    // (C) per-channel sum of squared deviations from mean

  // No channels, no elements: merges as the identity with moments of any channel count.
  ChannelMoments() = default;
  // `channels` channels, no elements (count 0, mean = m2 = 0). ArgumentError for
  // channels < 0.
  explicit ChannelMoments(std::int64_t channels);

  // From per-channel mean and BIASED variance over `count` elements each:
  // m2_c = var_c * count. ArgumentError for count < 0; ShapeError when mean and var have
  // different sizes. The float overload widens the values as they are: a mean already
  // rounded to float stays rounded (use the kernels' double statistics where they exist).
  static ChannelMoments from_mean_var(const std::vector<double>& mean, const std::vector<double>& var,
                                      std::int64_t count);
  static ChannelMoments from_mean_var(const Tensor& mean, const Tensor& var, std::int64_t count);

  std::int64_t channels() const noexcept { return static_cast<std::int64_t>(mean.size()); }
  // Biased variance m2_c / count per channel (0 for count 0).
  std::vector<double> variance() const;

  // *this <- the moments of the union of both sets (formula above). ASSIGNED into *this;
  // `other` may be *this (the moments of the set taken twice). Preconditions, checked:
  // count >= 0 on both sides (ArgumentError), mean and m2 of the same size on each side
  // and the same channel count on both sides (ShapeError), except that moments with no
  // channels and count 0 (the default) merge with any as the identity. Throws before
  // changing anything.
  void merge(const ChannelMoments& other);

  friend bool operator==(const ChannelMoments&, const ChannelMoments&) = default;
};

// The moments of the union of a and b: a.merge(b) on a copy.
ChannelMoments merge(ChannelMoments a, const ChannelMoments& b);

}  // namespace bnorm::nn
