// Shared helpers for the nn tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "bnorm/core/tensor.hpp"

namespace bnorm::test {

// Deterministic pseudo-random tensor: values offset + scale * u, u in [-1, 1).
inline Tensor random_tensor(const Shape& s, std::uint32_t seed, float scale = 1.0f, float offset = 0.0f) {
  Tensor t(s);
  std::uint64_t state = 0x9e3779b97f4a7c15ULL ^ seed;
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    const double u = static_cast<double>(state >> 11) * 0x1.0p-53 * 2.0 - 1.0;
    t[i] = static_cast<float>(offset + scale * u);
  }
  return t;
}

inline double dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

}  // namespace bnorm::test
