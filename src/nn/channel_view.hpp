// Internal: how a tensor with some channel axes maps to the kernels' (N, C, S) view.
#pragma once

#include <string>
#include <vector>

#include "bnorm/core/tensor.hpp"
#include "bnorm/kernels/batch_norm.hpp"

namespace bnorm::nn::detail {

// Channels are flattened row-major over the channel axes in increasing order, so a
// parameter of shape (C1, C2) (or Keras 2's (1, C1, 1, C2)) lines up with channel index
// c1 * C2 + c2.
struct ChannelView {
  kernels::BatchNormDims dims;
  // Empty when the channel axes are contiguous (no copy needed). Otherwise the input
  // must be permuted by `perm` (reduced axes first, then channel axes, so S = 1), and
  // the output back by `inverse`.
  std::vector<int> perm;
  std::vector<int> inverse;
};

// channel_axes: distinct, in [0, rank), sorted. None means a single channel.
ChannelView channel_view(const Shape& shape, const std::vector<int>& channel_axes);

// Normalizes and validates an axis list against `rank`: each in range, no repeats.
// Returns them sorted. Throws ArgumentError naming `argument`.
std::vector<int> normalize_axes(const std::vector<int>& axes, int rank, const std::string& where,
                                const std::string& argument);

std::string to_string(const std::vector<int>& v);
// A double in its shortest exact decimal form, for error messages ("1.5", "0.1").
std::string format_number(double v);

// Runs f(const float* x_view, float* y_view) in the view's layout and returns y in x's
// layout. Copies only when the view needs a permutation.
template <typename F>
Tensor run_in_view(const Tensor& x, const ChannelView& view, F&& f) {
  if (view.perm.empty()) {
    Tensor y(x.shape());
    f(x.data(), y.data());
    return y;
  }
  const Tensor xp = permute(x, view.perm);
  Tensor yp(xp.shape());
  f(xp.data(), yp.data());
  return permute(yp, view.inverse);
}

// x in the view's layout (a copy only when permuted).
inline Tensor in_view(const Tensor& x, const ChannelView& view) {
  return view.perm.empty() ? x : permute(x, view.perm);
}

}  // namespace bnorm::nn::detail
