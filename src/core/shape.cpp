#include "bnorm/core/shape.hpp"

#include "bnorm/core/error.hpp"

namespace bnorm {

Shape::Shape(std::initializer_list<std::int64_t> dims) : dims_(dims) {}
Shape::Shape(std::vector<std::int64_t> dims) : dims_(std::move(dims)) {}

std::int64_t Shape::numel() const noexcept {
  std::int64_t n = 1;
  for (auto d : dims_) n *= d;
  return n;
}

std::string Shape::str() const {
  std::string s = "(";
  for (std::size_t i = 0; i < dims_.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[i]);
  }
  if (dims_.size() == 1) s += ",";
  return s + ")";
}

int normalize_axis(int axis, int rank, const std::string& where, const std::string& argument) {
  if (axis < -rank || axis >= rank) {
    throw ArgumentError(where, argument,
                        "an axis in [" + std::to_string(-rank) + ", " + std::to_string(rank - 1) +
                            "] for an input of rank " + std::to_string(rank),
                        std::to_string(axis));
  }
  return axis < 0 ? axis + rank : axis;
}

}  // namespace bnorm
