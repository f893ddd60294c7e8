// Shared by the example programs: a check that prints and counts, and a final verdict,
// so that every example is also a test (non-zero exit when a claim does not hold).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>

#include "bnorm/core/tensor.hpp"

namespace example {

inline int failures = 0;

inline void check(bool ok, const std::string& what) {
  std::printf("  [%s] %s\n", ok ? " ok " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

// Exit status of the example: 0 when every check held.
inline int verdict() {
  std::printf("%s\n", failures == 0 ? "all checks passed" : "SOME CHECKS FAILED");
  return failures == 0 ? 0 : 1;
}

inline double max_abs_diff(const bnorm::Tensor& a, const bnorm::Tensor& b) {
  double d = 0.0;
  for (std::int64_t i = 0; i < a.numel(); ++i) d = std::fmax(d, std::fabs(double{a[i]} - b[i]));
  return d;
}

// "[v0, v1, ...]" with at most `most` values.
inline std::string str(const bnorm::Tensor& t, std::int64_t most = 8) {
  std::string s = "[";
  char buf[32];
  for (std::int64_t i = 0; i < t.numel() && i < most; ++i) {
    std::snprintf(buf, sizeof buf, "%s%.6f", i ? ", " : "", static_cast<double>(t[i]));
    s += buf;
  }
  return s + (t.numel() > most ? ", ...]" : "]");
}

// N(mean, scale^2) samples from a fixed splitmix64 + Box-Muller stream: a deterministic
// stand-in for numpy / tf.random.normal (whose streams C++ cannot reproduce).
inline bnorm::Tensor normal(bnorm::Shape shape, std::uint64_t seed, float mean = 0.0f, float scale = 1.0f) {
  bnorm::Tensor t(std::move(shape));
  std::uint64_t s = seed * 0x9E3779B97F4A7C15ull;
  auto uniform = [&s] {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return static_cast<double>((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
  };
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    t[i] = mean + scale * static_cast<float>(std::sqrt(-2.0 * std::log(1.0 - uniform())) *
                                             std::cos(6.283185307179586 * uniform()));
  }
  return t;
}

}  // namespace example
