#include "bnorm/core/tensor.hpp"

#include <cmath>

#include "bnorm/core/error.hpp"

namespace bnorm {

template <typename T>
std::size_t BasicTensor<T>::checked_numel(const Shape& s) {
  std::int64_t n = 1;
  for (auto d : s.dims()) {
    if (d < 0) throw ShapeError("Tensor", "shape", "non-negative dimensions", s.str());
    n *= d;
  }
  return static_cast<std::size_t>(n);
}

template <typename T>
BasicTensor<T>::BasicTensor(Shape shape, std::vector<T> data)
    : shape_(std::move(shape)), data_(std::move(data)) {
  if (data_.size() != checked_numel(shape_)) {
    throw ShapeError("Tensor", "data", std::to_string(shape_.numel()) + " values for shape " + shape_.str(),
                     std::to_string(data_.size()) + " values");
  }
}

template <typename T>
std::int64_t BasicTensor<T>::flat_index(std::initializer_list<std::int64_t> index) const {
  if (static_cast<int>(index.size()) != rank()) {
    throw ShapeError("Tensor::at", "index", std::to_string(rank()) + " indices",
                     std::to_string(index.size()) + " indices");
  }
  std::int64_t flat = 0;
  int i = 0;
  for (auto v : index) {
    if (v < 0 || v >= shape_[i]) {
      throw ShapeError("Tensor::at", "index " + std::to_string(i),
                       "a value in [0, " + std::to_string(shape_[i]) + ")", std::to_string(v));
    }
    flat = flat * shape_[i] + v;
    ++i;
  }
  return flat;
}

template <typename T>
T& BasicTensor<T>::at(std::initializer_list<std::int64_t> index) {
  return data_[static_cast<std::size_t>(flat_index(index))];
}

template <typename T>
const T& BasicTensor<T>::at(std::initializer_list<std::int64_t> index) const {
  return data_[static_cast<std::size_t>(flat_index(index))];
}

template <typename T>
BasicTensor<T> BasicTensor<T>::reshaped(Shape s) const {
  if (static_cast<std::size_t>(checked_numel(s)) != data_.size()) {
    throw ShapeError("Tensor::reshaped", "shape", "a shape with " + std::to_string(data_.size()) + " elements",
                     s.str());
  }
  return BasicTensor(std::move(s), data_);
}

template <typename T>
BasicTensor<T> permute(const BasicTensor<T>& x, const std::vector<int>& perm) {
  const int r = x.rank();
  std::vector<bool> seen(static_cast<std::size_t>(r), false);
  bool ok = static_cast<int>(perm.size()) == r;
  for (int p : perm) {
    if (!ok || p < 0 || p >= r || seen[static_cast<std::size_t>(p)]) {
      ok = false;
      break;
    }
    seen[static_cast<std::size_t>(p)] = true;
  }
  if (!ok) {
    std::string got = "[";
    for (std::size_t i = 0; i < perm.size(); ++i) got += (i ? ", " : "") + std::to_string(perm[i]);
    throw ArgumentError("permute", "perm", "a permutation of [0, " + std::to_string(r) + ")", got + "]");
  }
  std::vector<std::int64_t> out_dims(static_cast<std::size_t>(r));
  std::vector<std::int64_t> in_strides(static_cast<std::size_t>(r), 1);
  for (int i = r - 2; i >= 0; --i) in_strides[static_cast<std::size_t>(i)] = in_strides[static_cast<std::size_t>(i + 1)] * x.dim(i + 1);
  for (int i = 0; i < r; ++i) out_dims[static_cast<std::size_t>(i)] = x.dim(perm[static_cast<std::size_t>(i)]);
  BasicTensor<T> out{Shape(out_dims)};
  std::vector<std::int64_t> idx(static_cast<std::size_t>(r), 0);
  const std::int64_t n = out.numel();
  for (std::int64_t flat = 0; flat < n; ++flat) {
    std::int64_t src = 0;
    for (int i = 0; i < r; ++i) src += idx[static_cast<std::size_t>(i)] * in_strides[static_cast<std::size_t>(perm[static_cast<std::size_t>(i)])];
    out[flat] = x[src];
    for (int i = r - 1; i >= 0; --i) {
      if (++idx[static_cast<std::size_t>(i)] < out_dims[static_cast<std::size_t>(i)]) break;
      idx[static_cast<std::size_t>(i)] = 0;
    }
  }
  return out;
}

template BasicTensor<float> permute(const BasicTensor<float>&, const std::vector<int>&);
template BasicTensor<double> permute(const BasicTensor<double>&, const std::vector<int>&);

template class BasicTensor<float>;
template class BasicTensor<double>;

bool all_finite(std::span<const float> v) noexcept {
  for (float f : v)
    if (!std::isfinite(f)) return false;
  return true;
}

}  // namespace bnorm
