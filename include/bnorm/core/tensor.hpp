// bnorm/core/tensor.hpp: a small dense N-D tensor, row-major, owning its storage.
//
// Value semantics: copying a Tensor copies its data. Scalar type T is float for all
// library tensors; double is used by the reference kernels' tests.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

#include "bnorm/core/shape.hpp"

namespace bnorm {

template <typename T>
class BasicTensor {
 public:
  BasicTensor() = default;
  // Zero-filled tensor of the given shape.
  explicit BasicTensor(Shape shape) : shape_(std::move(shape)), data_(checked_numel(shape_)) {}
  BasicTensor(Shape shape, T fill) : shape_(std::move(shape)), data_(checked_numel(shape_), fill) {}
  // Throws ShapeError when data.size() != shape.numel().
  BasicTensor(Shape shape, std::vector<T> data);

  static BasicTensor zeros(Shape s) { return BasicTensor(std::move(s)); }
  static BasicTensor ones(Shape s) { return BasicTensor(std::move(s), T(1)); }

  const Shape& shape() const noexcept { return shape_; }
  int rank() const noexcept { return shape_.rank(); }
  std::int64_t dim(int i) const { return shape_[i]; }
  std::int64_t numel() const noexcept { return static_cast<std::int64_t>(data_.size()); }
  bool empty() const noexcept { return data_.empty(); }

  T* data() noexcept { return data_.data(); }
  const T* data() const noexcept { return data_.data(); }
  std::span<T> values() noexcept { return data_; }
  std::span<const T> values() const noexcept { return data_; }
  const std::vector<T>& vector() const noexcept { return data_; }

  T& operator[](std::int64_t i) { return data_[static_cast<std::size_t>(i)]; }
  const T& operator[](std::int64_t i) const { return data_[static_cast<std::size_t>(i)]; }
  // Element at a multi-index (bounds checked: throws ShapeError).
  T& at(std::initializer_list<std::int64_t> index);
  const T& at(std::initializer_list<std::int64_t> index) const;

  // Same data, new shape with the same element count (else ShapeError).
  BasicTensor reshaped(Shape s) const;
  void fill(T v) { std::fill(data_.begin(), data_.end(), v); }

  // Element-type conversion (float <-> double).
  template <typename U>
  BasicTensor<U> cast() const {
    return BasicTensor<U>(shape_, std::vector<U>(data_.begin(), data_.end()));
  }

 private:
  static std::size_t checked_numel(const Shape& s);
  std::int64_t flat_index(std::initializer_list<std::int64_t> index) const;

  Shape shape_;
  std::vector<T> data_;
};

using Tensor = BasicTensor<float>;
using TensorD = BasicTensor<double>;

extern template class BasicTensor<float>;
extern template class BasicTensor<double>;

// Axis permutation (numpy.transpose): out.shape[i] = x.shape[perm[i]]. Throws
// ArgumentError when perm is not a permutation of [0, rank).
template <typename T>
BasicTensor<T> permute(const BasicTensor<T>& x, const std::vector<int>& perm);

// True when every element is finite.
bool all_finite(std::span<const float> v) noexcept;

}  // namespace bnorm
