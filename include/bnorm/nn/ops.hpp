// bnorm/nn/ops.hpp: the stateless TensorFlow ops batch normalization is built from,
// so a hand-written layer (its own moving variables, updated by assignment) reads line
// for line like its Python original.
//
//   Python                                             C++
//   mean, variance = tf.nn.moments(x, axes=[0, 1, 2])  auto [mean, variance] = nn::moments(x, {0, 1, 2});
//   tf.nn.batch_normalization(x, mean, variance,       nn::batch_normalization(x, mean, variance,
//       offset=None, scale=None, variance_epsilon=1e-5)    std::nullopt, std::nullopt, 1e-5f);
#pragma once

#include <optional>
#include <vector>

#include "bnorm/core/tensor.hpp"

namespace bnorm::nn {

struct Moments {
  Tensor mean;
  Tensor variance;
};

// tf.nn.moments(x, axes, keepdims): mean and biased variance over `axes` (negative
// allowed, distinct; an empty list reduces nothing: variance 0). Two-pass, double
// accumulation. Result shape: x's shape without the reduced axes, or with them set to 1 when keepdims. Reducing over an
// empty set of elements gives mean 0, variance 0.
// Throws ArgumentError for an axis out of range or repeated.
Moments moments(const Tensor& x, const std::vector<int>& axes, bool keepdims = false);

// tf.nn.batch_normalization(x, mean, variance, offset, scale, variance_epsilon):
//   inv = 1/sqrt(variance + epsilon) * scale;   y = x * inv + (offset - mean * inv)
// mean, variance, offset and scale broadcast against x with numpy rules (e.g. (C,) for
// the last axis, or the keepdims shape of moments). offset/scale: nullopt = absent
// (0 / 1). No statistics, no state.
// Throws ShapeError when an argument does not broadcast to x, ArgumentError when
// variance_epsilon < 0.
Tensor batch_normalization(const Tensor& x, const Tensor& mean, const Tensor& variance,
                           const std::optional<Tensor>& offset, const std::optional<Tensor>& scale,
                           float variance_epsilon);

}  // namespace bnorm::nn
