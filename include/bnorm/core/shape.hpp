// bnorm/core/shape.hpp: tensor shapes (row-major dimension lists).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace bnorm {

// Maximum rank bnorm tensors support (the frameworks' batch norm inputs are rank 1-5;
// the limit is generous so that reshapes never hit it).
inline constexpr int kMaxRank = 8;

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims);
  explicit Shape(std::vector<std::int64_t> dims);

  int rank() const noexcept { return static_cast<int>(dims_.size()); }
  std::int64_t operator[](int i) const { return dims_[static_cast<std::size_t>(i)]; }
  std::int64_t& operator[](int i) { return dims_[static_cast<std::size_t>(i)]; }
  // Product of the dimensions (1 for rank 0).
  std::int64_t numel() const noexcept;
  const std::vector<std::int64_t>& dims() const noexcept { return dims_; }

  // "(3, 2)", in the Python tuple notation the frameworks print.
  std::string str() const;

  friend bool operator==(const Shape& a, const Shape& b) { return a.dims_ == b.dims_; }
  friend bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }

 private:
  std::vector<std::int64_t> dims_;
};

// Turns a possibly negative axis into [0, rank). Throws ArgumentError naming `argument`
// when it is out of range. `where` names the caller for the message.
int normalize_axis(int axis, int rank, const std::string& where,
                   const std::string& argument = "axis");

}  // namespace bnorm
