// Broadcasting one tensor's shape to another's (NumPy / Keras rules on equal ranks), for
// the layers that index a broadcast operand themselves (merge layers, Normalization).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "bnorm/core/shape.hpp"

namespace bnorm::nn::detail {

// The strides of `in` broadcast to `out` (same rank; dimensions of `in` equal or 1): 0
// along a broadcast dimension.
inline std::vector<std::int64_t> broadcast_strides(const Shape& out, const Shape& in) {
  const int r = out.rank();
  std::vector<std::int64_t> in_stride(static_cast<std::size_t>(r));
  std::int64_t stride = 1;
  for (int d = r - 1; d >= 0; --d) {
    in_stride[static_cast<std::size_t>(d)] = (in[d] == 1 && out[d] != 1) ? 0 : stride;
    stride *= in[d];
  }
  return in_stride;
}

// f(k, j) for every flat index k of `out`, in order, with j the flat index of the element
// of `in` that k reads when `in` is broadcast to `out` (same rank; dimensions of `in`
// equal or 1): row by row along the last axis, whose stride in `in` is 1 or 0, so the
// inner loops are plain. Rank 0: f(0, 0).
template <typename F>
void for_each_broadcast(const Shape& out, const Shape& in, F&& f) {
  const int r = out.rank();
  if (r == 0) {
    f(std::int64_t{0}, std::int64_t{0});
    return;
  }
  const std::vector<std::int64_t> in_stride = broadcast_strides(out, in);
  const std::int64_t last = out[r - 1];
  const std::int64_t rows = last == 0 ? 0 : out.numel() / last;
  const bool along = in_stride[static_cast<std::size_t>(r - 1)] != 0;
  std::vector<std::int64_t> index(static_cast<std::size_t>(r), 0);
  std::int64_t o = 0;  // the flat index in `in` of the row's first element
  for (std::int64_t row = 0; row < rows; ++row) {
    const std::int64_t k0 = row * last;
    if (along) {
      for (std::int64_t j = 0; j < last; ++j) f(k0 + j, o + j);
    } else {
      for (std::int64_t j = 0; j < last; ++j) f(k0 + j, o);
    }
    for (int d = r - 2; d >= 0; --d) {
      const auto du = static_cast<std::size_t>(d);
      ++index[du];
      o += in_stride[du];
      if (index[du] < out[d]) break;
      o -= in_stride[du] * out[d];
      index[du] = 0;
    }
  }
}

}  // namespace bnorm::nn::detail
