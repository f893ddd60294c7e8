// bnorm/nn/initializers.hpp: Keras weight initializers (zeros, ones, constant, seeded
// random normal / uniform), as values that can be compared and serialized.
//
// The random initializers are deterministic for a given seed on every platform
// (counter-based generator), but they do not reproduce TensorFlow's random streams:
// to start from Keras's exact weights, load or set the weights.
#pragma once

#include <cstdint>
#include <string>

#include "bnorm/core/tensor.hpp"

namespace bnorm::nn {

class Initializer {
 public:
  enum class Kind { zeros, ones, constant, random_normal, random_uniform, glorot_uniform };

  static Initializer zeros() { return Initializer(Kind::zeros, 0, 0, 0); }
  static Initializer ones() { return Initializer(Kind::ones, 0, 0, 0); }
  static Initializer constant(float value) { return Initializer(Kind::constant, value, 0, 0); }
  // Keras RandomNormal defaults: mean 0, stddev 0.05.
  static Initializer random_normal(float mean = 0.0f, float stddev = 0.05f, std::uint64_t seed = 0) {
    return Initializer(Kind::random_normal, mean, stddev, seed);
  }
  // Keras RandomUniform defaults: minval -0.05, maxval 0.05.
  static Initializer random_uniform(float minval = -0.05f, float maxval = 0.05f, std::uint64_t seed = 0) {
    return Initializer(Kind::random_uniform, minval, maxval, seed);
  }
  // Keras GlorotUniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)) with fan_in, fan_out
  // the last two dimensions of the filled tensor (both the size for a vector).
  static Initializer glorot_uniform(std::uint64_t seed = 0) { return Initializer(Kind::glorot_uniform, 0, 0, seed); }
  // By Keras name: "zeros", "ones", "random_normal", "random_uniform", "glorot_uniform"
  // (with Keras's default arguments). Throws ArgumentError.
  static Initializer from_name(const std::string& name);

  // Assigns every element of `t`.
  void fill(Tensor& t) const;

  Kind kind() const noexcept { return kind_; }
  // constant: value; random_normal: mean, stddev; random_uniform: minval, maxval.
  float a() const noexcept { return a_; }
  float b() const noexcept { return b_; }
  std::uint64_t seed() const noexcept { return seed_; }
  // Keras class name: "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform",
  // "GlorotUniform".
  std::string keras_class_name() const;

  friend bool operator==(const Initializer&, const Initializer&) = default;

 private:
  Initializer(Kind k, float a, float b, std::uint64_t seed) : kind_(k), a_(a), b_(b), seed_(seed) {}
  Kind kind_;
  float a_, b_;
  std::uint64_t seed_;
};

}  // namespace bnorm::nn
