// Activation kernels: the fast float loops and the permanent reference.
// Contract, formulas, saturation and aliasing rules: bnorm/kernels/activation.hpp.
#include "bnorm/kernels/activation.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "bnorm/core/error.hpp"

namespace bnorm::kernels {

Activation activation_from_name(const std::string& name) {
  if (name == "linear") return Activation::linear;
  if (name == "relu") return Activation::relu;
  if (name == "sigmoid") return Activation::sigmoid;
  if (name == "tanh") return Activation::tanh;
  if (name == "softmax") return Activation::softmax;
  throw ArgumentError("activation_from_name", "activation",
                      "one of \"linear\", \"relu\", \"sigmoid\", \"tanh\", \"softmax\"", "\"" + name + "\"");
}

std::string activation_name(Activation activation) {
  switch (activation) {
    case Activation::linear:
      return "linear";
    case Activation::relu:
      return "relu";
    case Activation::sigmoid:
      return "sigmoid";
    case Activation::tanh:
      return "tanh";
    case Activation::softmax:
      return "softmax";
  }
  throw ArgumentError("activation_name", "activation", "a value of bnorm::kernels::Activation",
                      std::to_string(static_cast<int>(activation)));
}

namespace {

// exp(x) in float, eight lanes at a time, with GCC vector extensions (std::exp is a
// library call per element, ~8 ns: 13% of an MLP training step). Cephes expf:
// n = round(x / ln 2), r = x - n ln 2 (ln 2 split into C1 + C2, C1 with few mantissa
// bits so n * C1 is exact), exp(r) = 1 + r + r^2 P(r) on |r| <= ln(2) / 2, then times
// 2^n built from the exponent bits. Relative error about 1.3 ulp (std::expf: 1 ulp;
// tested against the double reference). Saturation as std::exp with denormals flushed:
// x > 88.3763 gives +inf, x < -87.3365 gives 0 (std::exp's results there are within 0.4%
// of FLT_MAX, or denormals below 1.2e-38); NaN gives NaN. No FMA: the generic and AVX2
// builds of the loops below give bitwise identical results.
using f32x8 = float __attribute__((vector_size(32)));
using i32x8 = std::int32_t __attribute__((vector_size(32)));

// Always inlined into the loops below, so no vector crosses a call (the ABI note GCC
// gives for 32-byte vector arguments without AVX does not apply; GCC emits it at the end
// of the file, so it stays off from here on).
#pragma GCC diagnostic ignored "-Wpsabi"
__attribute__((always_inline)) inline f32x8 exp_f32x8(f32x8 x) {
  constexpr float kHi = 88.3762626647949f, kLo = -87.3365447505531f;
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23: x + kShift rounds x to an integer
  const f32x8 hi = f32x8{} + kHi, lo = f32x8{} + kLo, shift = f32x8{} + kShift;
  f32x8 xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  const f32x8 shifted = xc * 1.44269504088896341f + shift;
  const f32x8 n = shifted - shift;
  const i32x8 n_int = (i32x8)shifted - (i32x8)shift;
  const f32x8 r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  f32x8 p = f32x8{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const f32x8 e = (p * (r * r) + r) + 1.0f;
  const i32x8 bits = (n_int + 127) << 23;
  f32x8 y = e * (f32x8)bits;
  y = x > hi ? f32x8{} + std::numeric_limits<float>::infinity() : y;
  y = x < lo ? f32x8{} : y;
  return x != x ? x : y;  // NaN
}

enum class ExpOp { exp_shifted, sigmoid };

// y[i] = exp(x[i] - shift) or 1 / (1 + exp(-x[i])) for i < n; y may alias x. Eight
// lanes at a time; the tail goes through a zero-padded block, so every element is
// computed by the same lane arithmetic.
__attribute__((target_clones("avx2", "default")))
void exp_loop(ExpOp op, const float* x, float shift, std::int64_t n, float* y) {
  const auto apply = [&](f32x8 v) __attribute__((always_inline)) {
    return op == ExpOp::sigmoid ? 1.0f / (1.0f + exp_f32x8(-v)) : exp_f32x8(v - shift);
  };
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    f32x8 v;
    std::memcpy(&v, x + i, sizeof v);
    v = apply(v);
    std::memcpy(y + i, &v, sizeof v);
  }
  if (i < n) {
    const auto rest = static_cast<std::size_t>(n - i);
    f32x8 v{};
    std::memcpy(&v, x + i, rest * sizeof(float));
    v = apply(v);
    std::memcpy(y + i, &v, rest * sizeof(float));
  }
}

// Softmax of one row, float exp, double sum (tf.nn.softmax's order: shift by the row
// max, exponentiate, multiply by the reciprocal of the sum). y may alias x.
void softmax_row(const float* x, std::int64_t cols, float* y) {
  float max = x[0];
  for (std::int64_t j = 1; j < cols; ++j) max = std::max(max, x[j]);
  double sum = 0.0;
  exp_loop(ExpOp::exp_shifted, x, max, cols, y);
  for (std::int64_t j = 0; j < cols; ++j) sum += static_cast<double>(y[j]);
  const float inverse = static_cast<float>(1.0 / sum);
  for (std::int64_t j = 0; j < cols; ++j) y[j] *= inverse;
}

// dx = y * (dy - sum_i dy_i * y_i) over one row. dx may alias dy or y: the sum is taken
// before any element is written, then each element reads its own y, dy first.
void softmax_backward_row(const float* y, const float* dy, std::int64_t cols, float* dx) {
  double dot = 0.0;
  for (std::int64_t j = 0; j < cols; ++j) dot += static_cast<double>(dy[j]) * static_cast<double>(y[j]);
  const float dot_f = static_cast<float>(dot);
  for (std::int64_t j = 0; j < cols; ++j) dx[j] = y[j] * (dy[j] - dot_f);
}

}  // namespace

void activation_forward(Activation activation, const float* x, std::int64_t rows, std::int64_t cols,
                        float* y) {
  assert(rows >= 0 && cols >= 0);
  const std::int64_t count = rows * cols;
  if (count == 0) return;
  switch (activation) {
    case Activation::linear:
      if (y != x) std::copy(x, x + count, y);
      return;
    case Activation::relu:
      for (std::int64_t i = 0; i < count; ++i) y[i] = std::max(x[i], 0.0f);  // max(NaN, 0) = NaN
      return;
    case Activation::sigmoid:
      // exp(-x) = inf gives 1 / inf = 0; exp(-x) tiny gives 1: never inf / inf.
      exp_loop(ExpOp::sigmoid, x, 0.0f, count, y);
      return;
    case Activation::tanh:
      for (std::int64_t i = 0; i < count; ++i) y[i] = std::tanh(x[i]);
      return;
    case Activation::softmax:
      for (std::int64_t r = 0; r < rows; ++r) softmax_row(x + r * cols, cols, y + r * cols);
      return;
  }
}

void activation_backward(Activation activation, const float* y, const float* dy, std::int64_t rows,
                         std::int64_t cols, float* dx) {
  assert(rows >= 0 && cols >= 0);
  const std::int64_t count = rows * cols;
  if (count == 0) return;
  switch (activation) {
    case Activation::linear:
      if (dx != dy) std::copy(dy, dy + count, dx);
      return;
    case Activation::relu:
      // A product, not a select, as TensorFlow's ReluGrad: NaN or inf in dy propagates.
      for (std::int64_t i = 0; i < count; ++i) dx[i] = dy[i] * (y[i] > 0.0f ? 1.0f : 0.0f);
      return;
    case Activation::sigmoid:
      for (std::int64_t i = 0; i < count; ++i) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
      return;
    case Activation::tanh:
      for (std::int64_t i = 0; i < count; ++i) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
      return;
    case Activation::softmax:
      for (std::int64_t r = 0; r < rows; ++r)
        softmax_backward_row(y + r * cols, dy + r * cols, cols, dx + r * cols);
      return;
  }
}

namespace reference {

template <typename T>
void activation_forward(Activation activation, const T* x, std::int64_t rows, std::int64_t cols, T* y) {
  assert(rows >= 0 && cols >= 0);
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* x_row = x + r * cols;
    T* y_row = y + r * cols;
    if (activation == Activation::softmax) {
      if (cols == 0) continue;
      double max = static_cast<double>(x_row[0]);
      for (std::int64_t j = 1; j < cols; ++j) max = std::max(max, static_cast<double>(x_row[j]));
      double sum = 0.0;
      for (std::int64_t j = 0; j < cols; ++j) sum += std::exp(static_cast<double>(x_row[j]) - max);
      for (std::int64_t j = 0; j < cols; ++j)
        y_row[j] = static_cast<T>(std::exp(static_cast<double>(x_row[j]) - max) / sum);
      continue;
    }
    for (std::int64_t j = 0; j < cols; ++j) {
      const double v = static_cast<double>(x_row[j]);
      double out = v;
      switch (activation) {
        case Activation::linear:
          out = v;
          break;
        case Activation::relu:
          out = std::max(v, 0.0);
          break;
        case Activation::sigmoid:
          out = 1.0 / (1.0 + std::exp(-v));
          break;
        case Activation::tanh:
          out = std::tanh(v);
          break;
        case Activation::softmax:
          break;  // handled above
      }
      y_row[j] = static_cast<T>(out);
    }
  }
}

template <typename T>
void activation_backward(Activation activation, const T* y, const T* dy, std::int64_t rows, std::int64_t cols,
                         T* dx) {
  assert(rows >= 0 && cols >= 0);
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* y_row = y + r * cols;
    const T* dy_row = dy + r * cols;
    T* dx_row = dx + r * cols;
    double dot = 0.0;  // softmax only: sum_i dy_i * y_i, taken before dx is written
    if (activation == Activation::softmax)
      for (std::int64_t j = 0; j < cols; ++j)
        dot += static_cast<double>(dy_row[j]) * static_cast<double>(y_row[j]);
    for (std::int64_t j = 0; j < cols; ++j) {
      const double yv = static_cast<double>(y_row[j]);
      const double g = static_cast<double>(dy_row[j]);
      double out = g;
      switch (activation) {
        case Activation::linear:
          out = g;
          break;
        case Activation::relu:
          out = g * (yv > 0.0 ? 1.0 : 0.0);
          break;
        case Activation::sigmoid:
          out = g * yv * (1.0 - yv);
          break;
        case Activation::tanh:
          out = g * (1.0 - yv * yv);
          break;
        case Activation::softmax:
          out = yv * (g - dot);
          break;
      }
      dx_row[j] = static_cast<T>(out);
    }
  }
}

template void activation_forward<float>(Activation, const float*, std::int64_t, std::int64_t, float*);
template void activation_forward<double>(Activation, const double*, std::int64_t, std::int64_t, double*);
template void activation_backward<float>(Activation, const float*, const float*, std::int64_t, std::int64_t,
                                         float*);
template void activation_backward<double>(Activation, const double*, const double*, std::int64_t,
                                          std::int64_t, double*);

}  // namespace reference
}  // namespace bnorm::kernels
