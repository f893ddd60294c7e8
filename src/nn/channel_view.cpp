#include "channel_view.hpp"

#include <algorithm>
#include <sstream>

#include "bnorm/core/error.hpp"

namespace bnorm::nn::detail {

std::string to_string(const std::vector<int>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

std::string format_number(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

std::vector<int> normalize_axes(const std::vector<int>& axes, int rank, const std::string& where,
                                const std::string& argument) {
  std::vector<int> out;
  out.reserve(axes.size());
  for (int a : axes) out.push_back(normalize_axis(a, rank, where, argument));
  std::vector<int> sorted = out;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    throw ArgumentError(where, argument, "distinct axes for an input of rank " + std::to_string(rank),
                        to_string(axes));
  }
  return sorted;
}

ChannelView channel_view(const Shape& shape, const std::vector<int>& channel_axes) {
  ChannelView v;
  const int r = shape.rank();
  if (channel_axes.empty()) {
    v.dims = {shape.numel(), 1, 1};
    return v;
  }
  const int first = channel_axes.front(), last = channel_axes.back();
  const bool contiguous = last - first + 1 == static_cast<int>(channel_axes.size());
  std::int64_t n = 1, c = 1, s = 1;
  if (contiguous) {
    for (int i = 0; i < first; ++i) n *= shape[i];
    for (int i = first; i <= last; ++i) c *= shape[i];
    for (int i = last + 1; i < r; ++i) s *= shape[i];
    v.dims = {n, c, s};
    return v;
  }
  for (int i = 0; i < r; ++i) {
    if (!std::binary_search(channel_axes.begin(), channel_axes.end(), i)) {
      v.perm.push_back(i);
      n *= shape[i];
    }
  }
  for (int a : channel_axes) {
    v.perm.push_back(a);
    c *= shape[a];
  }
  v.inverse.assign(static_cast<std::size_t>(r), 0);
  for (int i = 0; i < r; ++i) v.inverse[static_cast<std::size_t>(v.perm[static_cast<std::size_t>(i)])] = i;
  v.dims = {n, c, 1};
  return v;
}

}  // namespace bnorm::nn::detail
