// bnorm/kernels/activation.hpp: stateless activation kernels (float32, CPU), the Keras
// activations a Dense or Activation layer applies.
//
// Layout. Every kernel sees its input as a row-major (rows, cols) block; cols is the
// last axis (the axis softmax normalizes over, Keras's default axis=-1) and rows the
// product of the leading dims. The element-wise activations ignore the split.
//
// Forward (x -> y), as TensorFlow computes them for Keras:
//   linear   y = x
//   relu     y = max(x, 0)                          (NaN propagates)
//   sigmoid  y = 1 / (1 + exp(-x))                  (tf.nn.sigmoid / torch.sigmoid form)
//   tanh     y = tanh(x)
//   softmax  y[r, j] = exp(x[r, j] - max_r) / sum_i exp(x[r, i] - max_r),
//            max_r = max_i x[r, i]                  (max subtraction, as tf.nn.softmax)
// Saturation: sigmoid never gives NaN for non-NaN x: exp(-x) = inf (x < -88.72) gives
// exactly 0, and exp(-x) below half an ulp of 1 (x > 16.63) gives exactly 1 (x = -100
// -> 0, x = 100 -> 1, -inf -> 0, +inf -> 1, as TensorFlow/PyTorch float32 with denormals
// flushed). tanh gives exactly +-1 for |x| > 9.01.
// softmax rows sum to 1 (to rounding) for any finite input, e.g. {-100, 100} -> {0, 1};
// a row containing +inf, or only -inf, gives NaN (as TensorFlow).
//
// Backward (dy -> dx), written in terms of the forward OUTPUT y, so a layer only keeps y:
//   linear   dx = dy
//   relu     dx = dy * (y > 0)        gradient 0 at x = 0 (tf ReluGrad); NaN dy propagates
//   sigmoid  dx = dy * y * (1 - y)
//   tanh     dx = dy * (1 - y^2)
//   softmax  dx[r, j] = y[r, j] * (dy[r, j] - sum_i dy[r, i] * y[r, i])
//
// Outputs are ASSIGNED (overwritten; prior contents never read). Aliasing: y may alias
// x (in-place forward); dx may alias dy or y. No other partial overlap is allowed.
// rows, cols >= 0 (asserted in debug builds); rows == 0 or cols == 0 is a no-op.
//
// Numerics. The fast kernels evaluate exp / tanh in float and accumulate the softmax
// sums in double; they match the reference to a few ulp (absolute 1e-38 near sigmoid's
// exact-0 saturation, where the reference can still return a tiny denormal).
#pragma once

#include <cstdint>
#include <string>

namespace bnorm::kernels {

enum class Activation { linear, relu, sigmoid, tanh, softmax };

// The Keras name ("linear", "relu", "sigmoid", "tanh", "softmax"; exact, lower case)
// to the enum. Any other name throws bnorm::ArgumentError (argument "activation",
// expected the list above, received the name).
Activation activation_from_name(const std::string& name);

// The Keras name of an activation (inverse of activation_from_name).
std::string activation_name(Activation activation);

// y = activation(x), row by row over the last axis (cols).
void activation_forward(Activation activation,
                        const float* x,  // (rows, cols)
                        std::int64_t rows, std::int64_t cols,
                        float* y);       // (rows, cols) assigned; may alias x

// dx = dL/dx given y = activation(x) and dy = dL/dy.
void activation_backward(Activation activation,
                         const float* y,   // (rows, cols): the forward output
                         const float* dy,  // (rows, cols)
                         std::int64_t rows, std::int64_t cols,
                         float* dx);       // (rows, cols) assigned; may alias dy or y

// The permanent reference: the formulas above as naive loops, every value computed in
// double (std::exp, std::tanh) and rounded once to T. Same contract. Instantiated for
// T = float (the fast kernels are tested against it) and T = double (finite-difference
// gradient tests). Never optimized.
namespace reference {

template <typename T>
void activation_forward(Activation activation,
                        const T* x,  // (rows, cols)
                        std::int64_t rows, std::int64_t cols,
                        T* y);       // (rows, cols) assigned; may alias x

template <typename T>
void activation_backward(Activation activation,
                         const T* y,   // (rows, cols): the forward output
                         const T* dy,  // (rows, cols)
                         std::int64_t rows, std::int64_t cols,
                         T* dx);       // (rows, cols) assigned; may alias dy or y

}  // namespace reference
}  // namespace bnorm::kernels
