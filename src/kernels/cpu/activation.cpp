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

namespace {

struct NameEntry {
  Activation activation;
  const char* name;
};

// Every activation under the name it is written as; order = the enum's.
constexpr NameEntry kNames[] = {
    {Activation::linear, "linear"},
    {Activation::relu, "relu"},
    {Activation::sigmoid, "sigmoid"},
    {Activation::tanh, "tanh"},
    {Activation::softmax, "softmax"},
    {Activation::relu6, "relu6"},
    {Activation::silu, "silu"},
    {Activation::swish, "swish"},
    {Activation::gelu, "gelu"},
    {Activation::gelu_tanh, "gelu_tanh"},
    {Activation::elu, "elu"},
    {Activation::selu, "selu"},
    {Activation::softplus, "softplus"},
    {Activation::softsign, "softsign"},
    {Activation::hard_sigmoid, "hard_sigmoid"},
    {Activation::hard_sigmoid_keras2, "hard_sigmoid"},
    {Activation::hard_silu, "hard_silu"},
    {Activation::hard_swish, "hard_swish"},
    {Activation::leaky_relu, "leaky_relu"},
    {Activation::exponential, "exponential"},
    {Activation::log_softmax, "log_softmax"},
};

}  // namespace

Activation activation_from_name(const std::string& name, ActivationVersion version) {
  if (name == "hard_sigmoid")
    return version == ActivationVersion::keras2 ? Activation::hard_sigmoid_keras2 : Activation::hard_sigmoid;
  if (name == "hard_sigmoid_keras2") return Activation::hard_sigmoid_keras2;
  for (const auto& e : kNames)
    if (name == e.name) return e.activation;
  std::string expected = "one of";
  for (const auto& e : kNames) {
    if (e.activation == Activation::hard_sigmoid_keras2) continue;
    expected += std::string(e.activation == Activation::linear ? " \"" : ", \"") + e.name + "\"";
  }
  expected += ", \"hard_sigmoid_keras2\"";
  throw ArgumentError("activation_from_name", "activation", expected, "\"" + name + "\"");
}

std::string activation_name(Activation activation) {
  for (const auto& e : kNames)
    if (e.activation == activation) return e.name;
  throw ArgumentError("activation_name", "activation", "a value of bnorm::kernels::Activation",
                      std::to_string(static_cast<int>(activation)));
}

std::string activation_unique_name(Activation activation) {
  if (activation == Activation::hard_sigmoid_keras2) return "hard_sigmoid_keras2";
  return activation_name(activation);
}

BackwardReads activation_backward_reads(Activation activation) {
  switch (activation) {
    case Activation::linear:
    case Activation::relu:
    case Activation::sigmoid:
    case Activation::tanh:
    case Activation::softmax:
    case Activation::relu6:
    case Activation::elu:
    case Activation::selu:
    case Activation::exponential:
    case Activation::log_softmax:
      return BackwardReads::y;
    case Activation::silu:
    case Activation::swish:
    case Activation::gelu:
    case Activation::gelu_tanh:
    case Activation::softplus:
    case Activation::softsign:
    case Activation::hard_sigmoid:
    case Activation::hard_sigmoid_keras2:
    case Activation::hard_silu:
    case Activation::hard_swish:
    case Activation::leaky_relu:
      return BackwardReads::x;
  }
  throw ArgumentError("activation_backward_reads", "activation", "a value of bnorm::kernels::Activation",
                      std::to_string(static_cast<int>(activation)));
}

namespace {

// exp(x) in float, eight lanes at a time, with GCC vector extensions (std::exp is a
// library call per element, ~8 ns: 13% of an MLP training step). Cephes expf:
// n = round(x / ln 2), r = x - n ln 2 (ln 2 split into C1 + C2, C1 with few mantissa
// bits so n * C1 is exact), exp(r) = 1 + r + r^2 P(r) on |r| <= ln(2) / 2, then times
// 2^n built from the exponent bits. Error at most 0.95 ulp of the exact value over the
// whole float range (std::expf: 1 ulp; ActivationFastMath tests in
// tests/kernels/activation_fast_math_test.cpp). Saturation as std::exp with denormals flushed:
// x > 88.3763 gives +inf, x < -87.3365 gives 0 (std::exp's results there lie between
// 2^127.5 and FLT_MAX, or are denormals below 1.2e-38); NaN gives NaN. No FMA: the generic and AVX2
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

// Constants of selu and the gelu forms (TensorFlow's values).
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSqrt2OverPi = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kGeluCubic = 0.044715;
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1 / sqrt(2 pi)

// tanh(x) in float, eight lanes (Cephes tanhf). |x| < 0.625: x + x z P(z), z = x^2, an
// odd minimax polynomial; otherwise sign(x) (1 - 2 / (exp(2 |x|) + 1)) with exp_f32x8
// (2 |x| is exact; exp = inf for |x| > 44.19 gives exactly +-1). NaN gives NaN; +-0
// keep their sign. Measured error against the double reference: at most 2 ulp
// (ActivationFastMath.UlpErrorOverTheWholeFloatRange).
__attribute__((always_inline)) inline f32x8 tanh_f32x8(f32x8 x) {
  const f32x8 a = x < 0.0f ? -x : x;
  const f32x8 z = x * x;
  f32x8 p = f32x8{} - 5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  f32x8 small = (p * z) * x + x;
  small = x == 0.0f ? x : small;  // -0 stays -0
  const f32x8 big_abs = 1.0f - 2.0f / (exp_f32x8(a + a) + 1.0f);
  const f32x8 big = x < 0.0f ? -big_abs : big_abs;
  return a < 0.625f ? small : big;
}

// expm1(x) in float for x <= 0 (elu / selu use it on their negative side only): on
// (-ln 2, 0] the Taylor series to x^10 (truncation below 1e-9 relative), else
// exp_f32x8(x) - 1 (>= 0.5 in magnitude there, so the subtraction loses nothing); -1
// below -87.34 (exp flushes to 0). Measured error: at most 2 ulp.
__attribute__((always_inline)) inline f32x8 expm1_negative_f32x8(f32x8 x) {
  f32x8 p = f32x8{} + static_cast<float>(1.0 / 3628800.0);
  p = p * x + static_cast<float>(1.0 / 362880.0);
  p = p * x + static_cast<float>(1.0 / 40320.0);
  p = p * x + static_cast<float>(1.0 / 5040.0);
  p = p * x + static_cast<float>(1.0 / 720.0);
  p = p * x + static_cast<float>(1.0 / 120.0);
  p = p * x + static_cast<float>(1.0 / 24.0);
  p = p * x + static_cast<float>(1.0 / 6.0);
  p = p * x + 0.5f;
  const f32x8 small = (x * x) * p + x;
  const f32x8 big = exp_f32x8(x) - 1.0f;
  return x > -0.693147182f ? small : big;
}

// The element-wise operations the vector loop runs; each is the scalar formula of the
// header, evaluated in float in the order written.
enum class VecOp {
  // forward: y = f(x)
  exp_shifted,  // exp(x - param)
  sigmoid,      // 1 / (1 + exp(-x))
  silu,         // x * (1 / (1 + exp(-x)))
  tanh,         // tanh_f32x8
  elu,          // x < 0 ? expm1(x) : x
  selu,         // x < 0 ? (scale alpha) expm1(x) : scale x
  gelu_tanh,    // 0.5 x (1 + tanh(c (x + a x^3)))
  // backward: dx = dy * f'(x), x the forward input, or (log_softmax) the output y
  silu_grad,         // s (1 + x (1 - s)), s = sigmoid(x)
  softplus_grad,     // sigmoid(x)
  gelu_tanh_grad,    // 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)
  log_softmax_grad,  // dx = dy - exp(y) * param
};

// out[i] = op(x[i], dy[i], param) for i < n (dy read only by the backward ops). out may
// alias x or dy. Eight lanes at a time; the tail goes through a zero-padded block, so
// every element is computed by the same lane arithmetic wherever it sits (the results
// depend on neither the length, the offset nor the thread that runs the loop).
__attribute__((target_clones("avx2", "default"))) void vector_loop(VecOp op, const float* x, const float* dy,
                                                                   float param, std::int64_t n, float* out) {
  const auto apply = [&](f32x8 v, f32x8 g) __attribute__((always_inline)) {
    const auto c = static_cast<float>(kSqrt2OverPi), a = static_cast<float>(kGeluCubic);
    switch (op) {
      case VecOp::exp_shifted:
        return exp_f32x8(v - param);
      case VecOp::sigmoid:
        return 1.0f / (1.0f + exp_f32x8(-v));
      case VecOp::silu:
        return v * (1.0f / (1.0f + exp_f32x8(-v)));
      case VecOp::tanh:
        return tanh_f32x8(v);
      case VecOp::elu:
        return v < 0.0f ? expm1_negative_f32x8(v) : v;
      case VecOp::selu:
        return v < 0.0f ? static_cast<float>(kSeluScale * kSeluAlpha) * expm1_negative_f32x8(v)
                        : static_cast<float>(kSeluScale) * v;
      case VecOp::gelu_tanh:
        return 0.5f * v * (1.0f + tanh_f32x8(c * (v + a * v * v * v)));
      case VecOp::silu_grad: {
        const f32x8 s = 1.0f / (1.0f + exp_f32x8(-v));
        return g * (s * (1.0f + v * (1.0f - s)));
      }
      case VecOp::softplus_grad:
        return g * (1.0f / (1.0f + exp_f32x8(-v)));
      case VecOp::gelu_tanh_grad: {
        const f32x8 t = tanh_f32x8(c * (v + a * v * v * v));
        // Where t rounds to +-1 the second term is 0 (not 0 * inf once x^2 overflows).
        const f32x8 w = 1.0f - t * t;
        const f32x8 second = w == 0.0f ? f32x8{} : 0.5f * v * w * c * (1.0f + 3.0f * a * v * v);
        return g * (0.5f * (1.0f + t) + second);
      }
      case VecOp::log_softmax_grad:
        return g - exp_f32x8(v) * param;
    }
    return v;
  };
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    f32x8 v, g{};
    std::memcpy(&v, x + i, sizeof v);
    if (dy != nullptr) std::memcpy(&g, dy + i, sizeof g);
    v = apply(v, g);
    std::memcpy(out + i, &v, sizeof v);
  }
  if (i < n) {
    const auto rest = static_cast<std::size_t>(n - i);
    f32x8 v{}, g{};
    std::memcpy(&v, x + i, rest * sizeof(float));
    if (dy != nullptr) std::memcpy(&g, dy + i, rest * sizeof(float));
    v = apply(v, g);
    std::memcpy(out + i, &v, rest * sizeof(float));
  }
}

// Softmax of one row, float exp, double sum (tf.nn.softmax's order: shift by the row
// max, exponentiate, multiply by the reciprocal of the sum). y may alias x.
void softmax_row(const float* x, std::int64_t cols, float* y) {
  float max = x[0];
  for (std::int64_t j = 1; j < cols; ++j) max = std::max(max, x[j]);
  double sum = 0.0;
  vector_loop(VecOp::exp_shifted, x, nullptr, max, cols, y);
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

// log_softmax of one row: y = (x - max) - log(sum exp(x - max)), float exp, double sum,
// as tf.nn.log_softmax. y may alias x.
void log_softmax_row(const float* x, std::int64_t cols, float* y) {
  float max = x[0];
  for (std::int64_t j = 1; j < cols; ++j) max = std::max(max, x[j]);
  // exp(x - max) in float through a block on the stack (y may alias x, which the last
  // loop still reads), summed in double.
  double sum = 0.0;
  float block[256];
  for (std::int64_t j0 = 0; j0 < cols; j0 += 256) {
    const std::int64_t len = std::min<std::int64_t>(256, cols - j0);
    vector_loop(VecOp::exp_shifted, x + j0, nullptr, max, len, block);
    for (std::int64_t j = 0; j < len; ++j) sum += static_cast<double>(block[j]);
  }
  const auto log_sum = static_cast<float>(std::log(sum));
  for (std::int64_t j = 0; j < cols; ++j) y[j] = (x[j] - max) - log_sum;
}

// dx = dy - exp(y) * sum_i dy_i over one row; the sum before any write (aliasing).
void log_softmax_backward_row(const float* y, const float* dy, std::int64_t cols, float* dx) {
  double sum = 0.0;
  for (std::int64_t j = 0; j < cols; ++j) sum += static_cast<double>(dy[j]);
  vector_loop(VecOp::log_softmax_grad, y, dy, static_cast<float>(sum), cols, dx);
}

}  // namespace

void activation_forward(Activation activation, const float* x, std::int64_t rows, std::int64_t cols,
                        float* y) {
  assert(rows >= 0 && cols >= 0);
  const std::int64_t count = rows * cols;
  if (count == 0) return;
  const auto each = [&](auto f) {
    for (std::int64_t i = 0; i < count; ++i) y[i] = f(x[i]);
  };
  switch (activation) {
    case Activation::linear:
      if (y != x) std::copy(x, x + count, y);
      return;
    case Activation::relu:
      each([](float v) { return std::max(v, 0.0f); });  // max(NaN, 0) = NaN
      return;
    case Activation::sigmoid:
      // exp(-x) = inf gives 1 / inf = 0; exp(-x) tiny gives 1: never inf / inf.
      vector_loop(VecOp::sigmoid, x, nullptr, 0.0f, count, y);
      return;
    case Activation::tanh:
      vector_loop(VecOp::tanh, x, nullptr, 0.0f, count, y);
      return;
    case Activation::softmax:
      for (std::int64_t r = 0; r < rows; ++r) softmax_row(x + r * cols, cols, y + r * cols);
      return;
    case Activation::relu6:
      each([](float v) { return std::min(std::max(v, 0.0f), 6.0f); });
      return;
    case Activation::silu:
    case Activation::swish:
      vector_loop(VecOp::silu, x, nullptr, 0.0f, count, y);
      return;
    case Activation::gelu:
      each([](float v) { return 0.5f * v * (1.0f + std::erf(v * static_cast<float>(kInvSqrt2))); });
      return;
    case Activation::gelu_tanh:
      vector_loop(VecOp::gelu_tanh, x, nullptr, 0.0f, count, y);
      return;
    case Activation::elu:
      vector_loop(VecOp::elu, x, nullptr, 0.0f, count, y);
      return;
    case Activation::selu:
      vector_loop(VecOp::selu, x, nullptr, 0.0f, count, y);
      return;
    case Activation::softplus:
      each([](float v) { return v > 0.0f ? v + std::log1p(std::exp(-v)) : std::log1p(std::exp(v)); });
      return;
    case Activation::softsign:
      each([](float v) { return v / (1.0f + std::fabs(v)); });
      return;
    case Activation::hard_sigmoid:
      each([](float v) { return std::min(std::max(v + 3.0f, 0.0f), 6.0f) / 6.0f; });
      return;
    case Activation::hard_sigmoid_keras2:
      each([](float v) { return std::min(std::max(0.2f * v + 0.5f, 0.0f), 1.0f); });
      return;
    case Activation::hard_silu:
    case Activation::hard_swish:
      each([](float v) { return v * (std::min(std::max(v + 3.0f, 0.0f), 6.0f) / 6.0f); });
      return;
    case Activation::leaky_relu:
      each([](float v) { return v > 0.0f ? v : 0.2f * v; });
      return;
    case Activation::exponential:
      vector_loop(VecOp::exp_shifted, x, nullptr, 0.0f, count, y);
      return;
    case Activation::log_softmax:
      for (std::int64_t r = 0; r < rows; ++r) log_softmax_row(x + r * cols, cols, y + r * cols);
      return;
  }
}

void activation_backward(Activation activation, const float* x, const float* y, const float* dy,
                         std::int64_t rows, std::int64_t cols, float* dx) {
  assert(rows >= 0 && cols >= 0);
  const std::int64_t count = rows * cols;
  if (count == 0) return;
  assert(activation_backward_reads(activation) == BackwardReads::x ? x != nullptr : y != nullptr);
  // dx[i] = dy[i] * f(forward[i]): a product, as TensorFlow's gradient kernels (NaN or
  // inf in dy propagates). Each element reads its own input before its write (aliasing).
  const auto each = [&](const float* forward, auto f) {
    for (std::int64_t i = 0; i < count; ++i) dx[i] = dy[i] * f(forward[i]);
  };
  switch (activation) {
    case Activation::linear:
      if (dx != dy) std::copy(dy, dy + count, dx);
      return;
    case Activation::relu:
      each(y, [](float v) { return v > 0.0f ? 1.0f : 0.0f; });
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
    case Activation::relu6:
      each(y, [](float v) { return v > 0.0f && v < 6.0f ? 1.0f : 0.0f; });
      return;
    case Activation::elu:
      each(y, [](float v) { return v < 0.0f ? v + 1.0f : 1.0f; });
      return;
    case Activation::selu:
      each(y, [](float v) {
        return v < 0.0f ? v + static_cast<float>(kSeluScale * kSeluAlpha) : static_cast<float>(kSeluScale);
      });
      return;
    case Activation::exponential:
      each(y, [](float v) { return v; });
      return;
    case Activation::log_softmax:
      for (std::int64_t r = 0; r < rows; ++r)
        log_softmax_backward_row(y + r * cols, dy + r * cols, cols, dx + r * cols);
      return;
    case Activation::silu:
    case Activation::swish:
      vector_loop(VecOp::silu_grad, x, dy, 0.0f, count, dx);
      return;
    case Activation::gelu:
      each(x, [](float v) {
        return 0.5f * (1.0f + std::erf(v * static_cast<float>(kInvSqrt2))) +
               v * std::exp(-0.5f * v * v) * static_cast<float>(kInvSqrt2Pi);
      });
      return;
    case Activation::gelu_tanh:
      vector_loop(VecOp::gelu_tanh_grad, x, dy, 0.0f, count, dx);
      return;
    case Activation::softplus:
      vector_loop(VecOp::softplus_grad, x, dy, 0.0f, count, dx);
      return;
    case Activation::softsign:
      each(x, [](float v) {
        const float d = 1.0f + std::fabs(v);
        return 1.0f / (d * d);
      });
      return;
    case Activation::hard_sigmoid:
      each(x, [](float v) { return v + 3.0f > 0.0f && v + 3.0f < 6.0f ? 1.0f / 6.0f : 0.0f; });
      return;
    case Activation::hard_sigmoid_keras2:
      each(x, [](float v) {
        const float z = 0.2f * v + 0.5f;
        return z >= 0.0f && z <= 1.0f ? 0.2f : 0.0f;
      });
      return;
    case Activation::hard_silu:
    case Activation::hard_swish:
      each(x, [](float v) {
        const float z = v + 3.0f;
        return std::min(std::max(z, 0.0f), 6.0f) / 6.0f + (z > 0.0f && z < 6.0f ? v / 6.0f : 0.0f);
      });
      return;
    case Activation::leaky_relu:
      each(x, [](float v) { return v > 0.0f ? 1.0f : 0.2f; });
      return;
  }
}

namespace {
void require_reads_y(Activation activation, const char* where) {
  if (activation_backward_reads(activation) != BackwardReads::y) {
    throw ArgumentError(where, "activation",
                        "an activation whose gradient reads y (this one reads x: pass x to the overload that "
                        "takes x and y)",
                        "\"" + activation_name(activation) + "\"");
  }
}
}  // namespace

void activation_backward(Activation activation, const float* y, const float* dy, std::int64_t rows,
                         std::int64_t cols, float* dx) {
  require_reads_y(activation, "activation_backward");
  activation_backward(activation, nullptr, y, dy, rows, cols, dx);
}

// ---------------------------------------------------------------- ReLU layers

template <typename T>
void relu_forward(const ReluParams& p, const T* x, std::int64_t n, T* y) {
  assert(n >= 0);
  const auto slope = static_cast<T>(p.negative_slope), threshold = static_cast<T>(p.threshold);
  const auto max_value = static_cast<T>(p.max_value);
  if (p.negative_slope != 0.0 && !p.has_max_value && p.threshold == 0.0) {
    for (std::int64_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : x[i] * slope;  // tf.nn.leaky_relu
    return;
  }
  const bool relu6_op = p.threshold == 0.0 && p.has_max_value && p.max_value == 6.0;
  // The two common layers (ReLU(), ReLU(max_value=6) as MobileNet uses it) in loops of
  // their own, which the compiler vectorizes: the same expressions as the general loop.
  if (p.negative_slope == 0.0 && p.threshold == 0.0 && !p.has_max_value) {
    for (std::int64_t i = 0; i < n; ++i) y[i] = std::max(x[i], T(0));
    return;
  }
  if (p.negative_slope == 0.0 && relu6_op) {
    for (std::int64_t i = 0; i < n; ++i) y[i] = std::min(std::max(x[i], T(0)), T(6));
    return;
  }
  for (std::int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    T pos;
    if (p.threshold != 0.0)
      pos = v * (v > threshold ? T(1) : T(0));
    else if (relu6_op)
      pos = std::min(std::max(v, T(0)), T(6));
    else
      pos = std::max(v, T(0));
    if (p.has_max_value && !relu6_op) pos = std::min(std::max(pos, T(0)), max_value);
    y[i] = p.negative_slope != 0.0 ? pos - slope * std::max(threshold - v, T(0)) : pos;
  }
}

template <typename T>
void relu_backward(const ReluParams& p, const T* x, const T* dy, std::int64_t n, T* dx) {
  assert(n >= 0);
  const auto slope = static_cast<T>(p.negative_slope), threshold = static_cast<T>(p.threshold);
  const auto max_value = static_cast<T>(p.max_value);
  if (p.negative_slope != 0.0 && !p.has_max_value && p.threshold == 0.0) {
    for (std::int64_t i = 0; i < n; ++i) dx[i] = dy[i] * (x[i] > T(0) ? T(1) : slope);
    return;
  }
  const bool relu6_op = p.threshold == 0.0 && p.has_max_value && p.max_value == 6.0;
  if (p.negative_slope == 0.0 && p.threshold == 0.0 && !p.has_max_value) {  // as relu_forward
    for (std::int64_t i = 0; i < n; ++i) dx[i] = dy[i] * (x[i] > T(0) ? T(1) : T(0));
    return;
  }
  if (p.negative_slope == 0.0 && relu6_op) {
    for (std::int64_t i = 0; i < n; ++i) dx[i] = dy[i] * (x[i] > T(0) && x[i] < T(6) ? T(1) : T(0));
    return;
  }
  for (std::int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    bool pass;  // the positive part's gradient is 1
    if (p.threshold != 0.0)
      pass = v > threshold;
    else if (relu6_op)
      pass = v > T(0) && v < T(6);
    else
      pass = v > T(0);
    if (p.has_max_value && !relu6_op) pass = pass && v <= max_value;
    T g = pass ? T(1) : T(0);
    if (p.negative_slope != 0.0 && v < threshold) g += slope;
    dx[i] = dy[i] * g;
  }
}

template void relu_forward<float>(const ReluParams&, const float*, std::int64_t, float*);
template void relu_forward<double>(const ReluParams&, const double*, std::int64_t, double*);
template void relu_backward<float>(const ReluParams&, const float*, const float*, std::int64_t, float*);
template void relu_backward<double>(const ReluParams&, const double*, const double*, std::int64_t, double*);

namespace reference {

namespace {

double hard_sigmoid3(double v) {
  return std::min(std::max(v + 3.0, 0.0), 6.0) / 6.0;
}
double sigmoid(double v) {
  return 1.0 / (1.0 + std::exp(-v));
}

// The element-wise forward formulas in double.
double forward_one(Activation activation, double v) {
  switch (activation) {
    case Activation::linear:
      return v;
    case Activation::relu:
      return std::max(v, 0.0);
    case Activation::sigmoid:
      return sigmoid(v);
    case Activation::tanh:
      return std::tanh(v);
    case Activation::relu6:
      return std::min(std::max(v, 0.0), 6.0);
    case Activation::silu:
    case Activation::swish:
      return v * sigmoid(v);
    case Activation::gelu:
      return 0.5 * v * (1.0 + std::erf(v * kInvSqrt2));
    case Activation::gelu_tanh:
      return 0.5 * v * (1.0 + std::tanh(kSqrt2OverPi * (v + kGeluCubic * v * v * v)));
    case Activation::elu:
      return v < 0.0 ? std::expm1(v) : v;
    case Activation::selu:
      return kSeluScale * (v < 0.0 ? kSeluAlpha * std::expm1(v) : v);
    case Activation::softplus:
      return v > 0.0 ? v + std::log1p(std::exp(-v)) : std::log1p(std::exp(v));
    case Activation::softsign:
      return v / (1.0 + std::fabs(v));
    case Activation::hard_sigmoid:
      return hard_sigmoid3(v);
    case Activation::hard_sigmoid_keras2:
      return std::min(std::max(0.2 * v + 0.5, 0.0), 1.0);
    case Activation::hard_silu:
    case Activation::hard_swish:
      return v * hard_sigmoid3(v);
    case Activation::leaky_relu:
      return v > 0.0 ? v : 0.2 * v;
    case Activation::exponential:
      return std::exp(v);
    case Activation::softmax:
    case Activation::log_softmax:
      break;  // row-wise, handled by the caller
  }
  return v;
}

// d activation / d (forward tensor) at v, the element-wise ones (softmax / log_softmax
// handled by the caller); v is y or x as activation_backward_reads says.
double derivative_one(Activation activation, double v) {
  switch (activation) {
    case Activation::linear:
      return 1.0;
    case Activation::relu:
      return v > 0.0 ? 1.0 : 0.0;
    case Activation::sigmoid:
      return v * (1.0 - v);
    case Activation::tanh:
      return 1.0 - v * v;
    case Activation::relu6:
      return v > 0.0 && v < 6.0 ? 1.0 : 0.0;
    case Activation::elu:
      return v < 0.0 ? v + 1.0 : 1.0;
    case Activation::selu:
      return v < 0.0 ? v + kSeluScale * kSeluAlpha : kSeluScale;
    case Activation::exponential:
      return v;
    case Activation::silu:
    case Activation::swish: {
      const double s = sigmoid(v);
      return s * (1.0 + v * (1.0 - s));
    }
    case Activation::gelu:
      return 0.5 * (1.0 + std::erf(v * kInvSqrt2)) + v * std::exp(-0.5 * v * v) * kInvSqrt2Pi;
    case Activation::gelu_tanh: {
      const double t = std::tanh(kSqrt2OverPi * (v + kGeluCubic * v * v * v));
      return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * kSqrt2OverPi * (1.0 + 3.0 * kGeluCubic * v * v);
    }
    case Activation::softplus:
      return sigmoid(v);
    case Activation::softsign:
      return 1.0 / ((1.0 + std::fabs(v)) * (1.0 + std::fabs(v)));
    case Activation::hard_sigmoid:
      return v + 3.0 > 0.0 && v + 3.0 < 6.0 ? 1.0 / 6.0 : 0.0;
    case Activation::hard_sigmoid_keras2: {
      // The float kernel's test, 0 <= 0.2 x + 0.5 <= 1, in the input's own precision is
      // what decides at the bounds; in double 0.2 * -2.5 + 0.5 is exactly 0 as well.
      const double z = 0.2 * v + 0.5;
      return z >= 0.0 && z <= 1.0 ? 0.2 : 0.0;
    }
    case Activation::hard_silu:
    case Activation::hard_swish:
      return hard_sigmoid3(v) + (v + 3.0 > 0.0 && v + 3.0 < 6.0 ? v / 6.0 : 0.0);
    case Activation::leaky_relu:
      return v > 0.0 ? 1.0 : 0.2;
    case Activation::softmax:
    case Activation::log_softmax:
      break;
  }
  return 1.0;
}

}  // namespace

template <typename T>
void activation_forward(Activation activation, const T* x, std::int64_t rows, std::int64_t cols, T* y) {
  assert(rows >= 0 && cols >= 0);
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* x_row = x + r * cols;
    T* y_row = y + r * cols;
    if (activation == Activation::softmax || activation == Activation::log_softmax) {
      if (cols == 0) continue;
      double max = static_cast<double>(x_row[0]);
      for (std::int64_t j = 1; j < cols; ++j) max = std::max(max, static_cast<double>(x_row[j]));
      double sum = 0.0;
      for (std::int64_t j = 0; j < cols; ++j) sum += std::exp(static_cast<double>(x_row[j]) - max);
      const double log_sum = std::log(sum);
      for (std::int64_t j = 0; j < cols; ++j) {
        const double shifted = static_cast<double>(x_row[j]) - max;
        y_row[j] =
            static_cast<T>(activation == Activation::softmax ? std::exp(shifted) / sum : shifted - log_sum);
      }
      continue;
    }
    for (std::int64_t j = 0; j < cols; ++j)
      y_row[j] = static_cast<T>(forward_one(activation, static_cast<double>(x_row[j])));
  }
}

template <typename T>
void activation_backward(Activation activation, const T* x, const T* y, const T* dy, std::int64_t rows,
                         std::int64_t cols, T* dx) {
  assert(rows >= 0 && cols >= 0);
  const T* forward = activation_backward_reads(activation) == BackwardReads::x ? x : y;
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* f_row = forward + r * cols;
    const T* dy_row = dy + r * cols;
    T* dx_row = dx + r * cols;
    // softmax: sum_i dy_i * y_i; log_softmax: sum_i dy_i; both taken before dx is written.
    double dot = 0.0;
    if (activation == Activation::softmax)
      for (std::int64_t j = 0; j < cols; ++j)
        dot += static_cast<double>(dy_row[j]) * static_cast<double>(f_row[j]);
    if (activation == Activation::log_softmax)
      for (std::int64_t j = 0; j < cols; ++j) dot += static_cast<double>(dy_row[j]);
    for (std::int64_t j = 0; j < cols; ++j) {
      const double v = static_cast<double>(f_row[j]);
      const double g = static_cast<double>(dy_row[j]);
      double out;
      if (activation == Activation::softmax)
        out = v * (g - dot);
      else if (activation == Activation::log_softmax)
        out = g - std::exp(v) * dot;
      else
        out = g * derivative_one(activation, v);
      dx_row[j] = static_cast<T>(out);
    }
  }
}

template <typename T>
void activation_backward(Activation activation, const T* y, const T* dy, std::int64_t rows, std::int64_t cols,
                         T* dx) {
  require_reads_y(activation, "reference::activation_backward");
  activation_backward<T>(activation, nullptr, y, dy, rows, cols, dx);
}

template void activation_forward<float>(Activation, const float*, std::int64_t, std::int64_t, float*);
template void activation_forward<double>(Activation, const double*, std::int64_t, std::int64_t, double*);
template void activation_backward<float>(Activation, const float*, const float*, const float*, std::int64_t,
                                         std::int64_t, float*);
template void activation_backward<double>(Activation, const double*, const double*, const double*,
                                          std::int64_t, std::int64_t, double*);
template void activation_backward<float>(Activation, const float*, const float*, std::int64_t, std::int64_t,
                                         float*);
template void activation_backward<double>(Activation, const double*, const double*, std::int64_t,
                                          std::int64_t, double*);

}  // namespace reference
}  // namespace bnorm::kernels
