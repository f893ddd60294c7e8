#include "bnorm/nn/ops.hpp"

#include <algorithm>

#include "bnorm/core/error.hpp"
#include "bnorm/kernels/batch_norm.hpp"
#include "channel_view.hpp"

namespace bnorm::nn {

Moments moments(const Tensor& x, const std::vector<int>& axes, bool keepdims) {
  const int r = x.rank();
  const std::vector<int> reduced = detail::normalize_axes(axes, r, "moments", "axes");
  std::vector<int> kept;
  std::vector<std::int64_t> out_dims;
  for (int i = 0; i < r; ++i) {
    const bool is_reduced = std::binary_search(reduced.begin(), reduced.end(), i);
    if (!is_reduced) kept.push_back(i);
    if (!is_reduced) out_dims.push_back(x.dim(i));
    else if (keepdims) out_dims.push_back(1);
  }
  const detail::ChannelView view = detail::channel_view(x.shape(), kept);
  Moments m{Tensor(Shape(out_dims)), Tensor(Shape(out_dims))};
  const Tensor xv = detail::in_view(x, view);
  kernels::moments(xv.data(), view.dims, m.mean.data(), m.variance.data());
  return m;
}

namespace {

// Expands `p` (broadcastable to x) to one value per channel of the block of x's axes
// [first, last], where p varies only inside the block.
std::vector<float> expand_to_block(const Tensor& p, const Shape& xs, int first, int last) {
  const int r = xs.rank(), offset = r - p.rank();
  std::int64_t c = 1;
  for (int i = first; i <= last; ++i) c *= xs[i];
  std::vector<float> out(static_cast<std::size_t>(c));
  std::vector<std::int64_t> idx(static_cast<std::size_t>(std::max(last - first + 1, 0)), 0);
  for (std::int64_t k = 0; k < c; ++k) {
    // Flat index into p of the block position idx (broadcast dims contribute 0).
    std::int64_t flat = 0;
    for (int a = offset; a < r; ++a) {
      const std::int64_t extent = p.dim(a - offset);
      const std::int64_t i = (a >= first && a <= last && extent != 1) ? idx[static_cast<std::size_t>(a - first)] : 0;
      flat = flat * extent + i;
    }
    out[static_cast<std::size_t>(k)] = p[flat];
    for (int a = last - first; a >= 0; --a) {
      if (++idx[static_cast<std::size_t>(a)] < xs[first + a]) break;
      idx[static_cast<std::size_t>(a)] = 0;
    }
  }
  return out;
}

}  // namespace

Tensor batch_normalization(const Tensor& x, const Tensor& mean, const Tensor& variance,
                           const std::optional<Tensor>& offset, const std::optional<Tensor>& scale,
                           float variance_epsilon) {
  const char* where = "batch_normalization";
  if (!(variance_epsilon >= 0.0f)) {
    throw ArgumentError(where, "variance_epsilon", "a value >= 0", std::to_string(variance_epsilon));
  }
  const Shape& xs = x.shape();
  const int r = xs.rank();
  int first = r, last = -1;
  auto inspect = [&](const Tensor& p, const char* name) {
    if (p.rank() > r) {
      throw ShapeError(where, name, "a shape that broadcasts to x's shape " + xs.str(), p.shape().str());
    }
    const int off = r - p.rank();
    for (int i = 0; i < p.rank(); ++i) {
      const std::int64_t d = p.dim(i), xd = xs[off + i];
      if (d != 1 && d != xd) {
        throw ShapeError(where, name, "a shape that broadcasts to x's shape " + xs.str(), p.shape().str());
      }
      if (d != 1) {
        first = std::min(first, off + i);
        last = std::max(last, off + i);
      }
    }
  };
  inspect(mean, "mean");
  inspect(variance, "variance");
  if (offset) inspect(*offset, "offset");
  if (scale) inspect(*scale, "scale");

  kernels::BatchNormDims dims;
  if (last < 0) {  // every argument is a scalar (or all ones): one channel
    first = r;
    last = r - 1;
    dims = {xs.numel(), 1, 1};
  } else {
    std::int64_t n = 1, c = 1, s = 1;
    for (int i = 0; i < first; ++i) n *= xs[i];
    for (int i = first; i <= last; ++i) c *= xs[i];
    for (int i = last + 1; i < r; ++i) s *= xs[i];
    dims = {n, c, s};
  }
  const auto m = expand_to_block(mean, xs, first, last);
  const auto v = expand_to_block(variance, xs, first, last);
  std::vector<float> o, g;
  if (offset) o = expand_to_block(*offset, xs, first, last);
  if (scale) g = expand_to_block(*scale, xs, first, last);
  Tensor y(xs);
  kernels::forward_inference(x.data(), dims, m.data(), v.data(), scale ? g.data() : nullptr,
                             offset ? o.data() : nullptr, variance_epsilon, y.data());
  return y;
}

}  // namespace bnorm::nn
