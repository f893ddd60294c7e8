#include "bnorm/nn/initializers.hpp"

#include <cmath>
#include <numbers>

#include "bnorm/core/error.hpp"

namespace bnorm::nn {

namespace {
// splitmix64: a counter-based generator, so element i's value depends only on (seed, i).
std::uint64_t mix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
// Uniform in (0, 1), 53 bits.
double uniform01(std::uint64_t seed, std::uint64_t i) {
  return (static_cast<double>(mix(seed * 0x100000001b3ULL + i) >> 11) + 0.5) * 0x1.0p-53;
}
}  // namespace

Initializer Initializer::from_name(const std::string& name) {
  if (name == "zeros") return zeros();
  if (name == "ones") return ones();
  if (name == "random_normal") return random_normal();
  if (name == "random_uniform") return random_uniform();
  if (name == "glorot_uniform") return glorot_uniform();
  throw ArgumentError("Initializer", "name",
                      "one of \"zeros\", \"ones\", \"random_normal\", \"random_uniform\", \"glorot_uniform\"",
                      "\"" + name + "\"");
}

void Initializer::fill(Tensor& t) const {
  const auto n = static_cast<std::uint64_t>(t.numel());
  switch (kind_) {
    case Kind::zeros: t.fill(0.0f); break;
    case Kind::ones: t.fill(1.0f); break;
    case Kind::constant: t.fill(a_); break;
    case Kind::random_normal:
      for (std::uint64_t i = 0; i < n; ++i) {
        // Box-Muller on two independent uniforms of the element's own counter pair.
        const double u1 = uniform01(seed_, 2 * i), u2 = uniform01(seed_, 2 * i + 1);
        const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
        t[static_cast<std::int64_t>(i)] = static_cast<float>(a_ + b_ * z);
      }
      break;
    case Kind::random_uniform:
      for (std::uint64_t i = 0; i < n; ++i) {
        t[static_cast<std::int64_t>(i)] = static_cast<float>(a_ + (b_ - a_) * uniform01(seed_, i));
      }
      break;
    case Kind::glorot_uniform: {
      const int r = t.rank();
      const double fan_out = r >= 1 ? static_cast<double>(t.dim(r - 1)) : 1.0;
      const double fan_in = r >= 2 ? static_cast<double>(t.dim(r - 2)) : fan_out;
      const double limit = std::sqrt(6.0 / (fan_in + fan_out));
      for (std::uint64_t i = 0; i < n; ++i) {
        t[static_cast<std::int64_t>(i)] = static_cast<float>(limit * (2.0 * uniform01(seed_, i) - 1.0));
      }
      break;
    }
  }
}

std::string Initializer::keras_class_name() const {
  switch (kind_) {
    case Kind::zeros: return "Zeros";
    case Kind::ones: return "Ones";
    case Kind::constant: return "Constant";
    case Kind::random_normal: return "RandomNormal";
    case Kind::random_uniform: return "RandomUniform";
    case Kind::glorot_uniform: return "GlorotUniform";
  }
  return "Unknown";
}

}  // namespace bnorm::nn
