// bnorm/kernels/activation.hpp: stateless activation kernels (float32, CPU), the Keras
// activations a Dense or Activation layer applies, and the parameterized ReLU of the
// Keras ReLU / LeakyReLU layers.
//
// Layout. Every kernel sees its input as a row-major (rows, cols) block; cols is the
// last axis (the axis softmax and log_softmax normalize over, Keras's default axis=-1)
// and rows the product of the leading dims. The element-wise activations ignore the split.
//
// Forward (x -> y), as TensorFlow computes them for Keras (../shared/spec/CNN.md
// section 4). Keras name in quotes; several enum values can share one name (below).
//   linear       "linear"        y = x
//   relu         "relu"          y = max(x, 0)                          (NaN propagates)
//   sigmoid      "sigmoid"       y = 1 / (1 + exp(-x))                  (tf.nn.sigmoid / torch.sigmoid form)
//   tanh         "tanh"          y = tanh(x)
//   softmax      "softmax"       y[r, j] = exp(x[r, j] - max_r) / sum_i exp(x[r, i] - max_r),
//                                max_r = max_i x[r, i]                  (max subtraction, as tf.nn.softmax)
//   relu6        "relu6"         y = min(max(x, 0), 6)                  (tf.nn.relu6)
//   silu         "silu"          y = x * sigmoid(x)                     (tf.nn.silu; Keras 3's name)
//   swish        "swish"         silu under the name tf.keras writes (Keras 3 reads "swish"
//                                and writes "silu"; bnorm keeps the name it read)
//   gelu         "gelu"          y = 0.5 x (1 + erf(x / sqrt(2)))       (the exact form: the
//                                string "gelu" means approximate=False in both Keras versions)
//   gelu_tanh    "gelu_tanh"     y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
//                                (keras.ops.gelu's default approximate=True; NOT a Keras
//                                activation string: a Keras file writer must refuse it)
//   elu          "elu"           y = x if x > 0 else exp(x) - 1         (alpha 1; expm1)
//   selu         "selu"          y = scale * (x if x > 0 else alpha (exp(x) - 1)),
//                                alpha = 1.6732632423543772, scale = 1.0507009873554805
//   softplus     "softplus"      y = log(1 + exp(x)), overflow-safe: x > 0 ? x + log1p(exp(-x))
//                                : log1p(exp(x))
//   softsign     "softsign"      y = x / (1 + |x|)
//   hard_sigmoid "hard_sigmoid"  Keras 3: y = relu6(x + 3) / 6
//   hard_sigmoid_keras2 "hard_sigmoid" (tf.keras / Keras 2): y = clip(0.2 x + 0.5, 0, 1)
//                                Same name, different function: activation_from_name picks
//                                by ActivationVersion (CNN.md section 0, surprise 5).
//   hard_silu    "hard_silu"     y = x * relu6(x + 3) / 6 (Keras 3 only)
//   hard_swish   "hard_swish"    hard_silu under its alias name
//   leaky_relu   "leaky_relu"    y = x if x > 0 else 0.2 x  (the activation string's slope 0.2;
//                                the LeakyReLU LAYER defaults to 0.3: relu_forward below)
//   exponential  "exponential"   y = exp(x)
//   log_softmax  "log_softmax"   y[r, j] = (x[r, j] - max_r) - log(sum_i exp(x[r, i] - max_r))
// Saturation: sigmoid never gives NaN for non-NaN x: exp(-x) = inf (x < -88.72) gives
// exactly 0, and exp(-x) below half an ulp of 1 (x > 16.63) gives exactly 1 (x = -100
// -> 0, x = 100 -> 1, -inf -> 0, +inf -> 1, as TensorFlow/PyTorch float32 with denormals
// flushed). tanh gives exactly +-1 for |x| > 9.01. silu(-100) = -0, silu(100) = 100.
// softmax rows sum to 1 (to rounding) for any finite input, e.g. {-100, 100} -> {0, 1};
// a row containing +inf, or only -inf, gives NaN (as TensorFlow).
//
// Backward (dy -> dx). Each activation reads ONE forward tensor, the one TensorFlow's
// gradient reads (activation_backward_reads): the output y or the input x.
//   reads y:
//   linear       dx = dy
//   relu         dx = dy * (y > 0)        gradient 0 at x = 0 (tf ReluGrad); NaN dy propagates
//   sigmoid      dx = dy * y * (1 - y)
//   tanh         dx = dy * (1 - y^2)
//   softmax      dx[r, j] = y[r, j] * (dy[r, j] - sum_i dy[r, i] * y[r, i])
//   relu6        dx = dy * (0 < y < 6)    0 at x = 0 and at x = 6 (tf Relu6Grad)
//   elu          dx = dy * (y < 0 ? y + 1 : 1)                  (tf EluGrad: 1 at x = 0)
//   selu         dx = dy * (y < 0 ? y + scale * alpha : scale)  (tf SeluGrad)
//   exponential  dx = dy * y
//   log_softmax  dx[r, j] = dy[r, j] - exp(y[r, j]) * sum_i dy[r, i]
//   reads x:
//   silu, swish  dx = dy * s (1 + x (1 - s)),  s = sigmoid(x)
//   gelu         dx = dy * (0.5 (1 + erf(x / sqrt(2))) + x exp(-x^2 / 2) / sqrt(2 pi))
//   gelu_tanh    dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)),
//                t = tanh(sqrt(2/pi) (x + 0.044715 x^3))
//   softplus     dx = dy * sigmoid(x)                          (tf SoftplusGrad)
//   softsign     dx = dy / (1 + |x|)^2                         (tf SoftsignGrad)
//   hard_sigmoid dx = dy * (-3 < x < 3) / 6          0 at x = +-3 (relu6's gradient)
//   hard_sigmoid_keras2  dx = dy * 0.2 * (0 <= 0.2 x + 0.5 <= 1)   (clip passes the
//                gradient AT its bounds: 0.2 at x = +-2.5)
//   hard_silu, hard_swish  dx = dy * (relu6(x + 3) / 6 + x (-3 < x < 3) / 6)
//   leaky_relu   dx = dy * (x > 0 ? 1 : 0.2)                   (0.2 at x = 0, tf LeakyReluGrad)
// Masks multiply (dy * 0), as TensorFlow's gradient kernels: NaN or inf in dy propagates.
//
// Outputs are ASSIGNED (overwritten; prior contents never read). Aliasing: y may alias
// x (in-place forward); dx may alias dy, x or y. No other partial overlap is allowed.
// rows, cols >= 0 (asserted in debug builds); rows == 0 or cols == 0 is a no-op.
//
// Numerics. The fast kernels evaluate exp, expm1 and tanh with their own vectorized float
// polynomials (Cephes-style range reduction; one binary for any x86-64: an AVX2 and a
// generic clone, chosen at load time, give the same bits, no FMA) and accumulate the
// softmax / log_softmax sums in double. Measured over the whole float range against the
// exact value: exp within 1 ulp, tanh and expm1 (elu) within 2 ulp; sigmoid, silu, selu and
// softplus's gradient within 3 ulp. Results below the normal range flush to 0 (absolute
// 1e-38 near sigmoid's exact-0 saturation, where the reference can still return a tiny
// denormal), and exp gives +inf from x > 88.3763 (about 2^127.5) instead of 88.7228.
// Formulas that cancel (gelu_tanh's 1 + tanh at large negative x, silu's gradient near
// its zero) are within a few ulp of max(1, |x|). gelu (erf), softplus's forward (log1p)
// and the element-wise formulas without exp use the C library per element. An
// element-wise activation's result depends only on the element's value (a softmax's on
// its row): not on its position, the call's length or the thread count.
#pragma once

#include <cstdint>
#include <string>

namespace bnorm::kernels {

// The first five keep their values (0..4); new ones are appended.
enum class Activation {
  linear,
  relu,
  sigmoid,
  tanh,
  softmax,
  relu6,
  silu,
  swish,
  gelu,
  gelu_tanh,
  elu,
  selu,
  softplus,
  softsign,
  hard_sigmoid,         // Keras 3: relu6(x + 3) / 6
  hard_sigmoid_keras2,  // tf.keras / Keras 2: clip(0.2 x + 0.5, 0, 1)
  hard_silu,
  hard_swish,
  leaky_relu,
  exponential,
  log_softmax,
};

// Which Keras wrote the name: only "hard_sigmoid" depends on it.
enum class ActivationVersion { keras3, keras2 };

// A name (exact, lower case) to the enum: the Keras names in the table above, and
// "hard_sigmoid_keras2" (bnorm's spelling of the Keras 2 form, accepted under either
// version, so that a string option can carry it). "hard_sigmoid" gives hard_sigmoid
// under keras3 and hard_sigmoid_keras2 under keras2. Any other name throws
// bnorm::ArgumentError (argument "activation", expected the list, received the name).
Activation activation_from_name(const std::string& name,
                                ActivationVersion version = ActivationVersion::keras3);

// The Keras name an activation is written under (both hard_sigmoid forms give
// "hard_sigmoid"; swish gives "swish", silu "silu": the name that was read).
std::string activation_name(Activation activation);

// A name that activation_from_name (default version keras3) maps back to this same
// value: activation_name, except "hard_sigmoid_keras2" for the Keras 2 form. For string
// options read with Keras 3 meanings (DenseOptions::activation).
std::string activation_unique_name(Activation activation);

// The forward tensor activation_backward reads (table above).
enum class BackwardReads { y, x };
BackwardReads activation_backward_reads(Activation activation);

// y = activation(x), row by row over the last axis (cols).
void activation_forward(Activation activation,
                        const float* x,  // (rows, cols)
                        std::int64_t rows, std::int64_t cols,
                        float* y);  // (rows, cols) assigned; may alias x

// dx = dL/dx given y = activation(x) and dy = dL/dy. Reads x or y, as
// activation_backward_reads says; the other may be null.
void activation_backward(Activation activation,
                         const float* x,   // (rows, cols): the forward input, or null
                         const float* y,   // (rows, cols): the forward output, or null
                         const float* dy,  // (rows, cols)
                         std::int64_t rows, std::int64_t cols,
                         float* dx);  // (rows, cols) assigned; may alias dy, x or y

// The earlier form, from y only: for activations that read y. Any other activation
// throws bnorm::ArgumentError (nothing written).
void activation_backward(Activation activation,
                         const float* y,   // (rows, cols): the forward output
                         const float* dy,  // (rows, cols)
                         std::int64_t rows, std::int64_t cols,
                         float* dx);  // (rows, cols) assigned; may alias dy or y

// The Keras ReLU and LeakyReLU layers (keras/src/activations/activations.py, relu), as
// TensorFlow computes them, in this order:
//   if negative_slope != 0 and no max_value and threshold == 0:   y = leaky_relu(x, negative_slope)
//   p = threshold != 0 ? x * (x > threshold)
//     : max_value == 6 ? relu6(x)                  (the relu6 op: gradient 0 AT 6)
//     : relu(x)
//   if max_value (and not the relu6 op): p = clip(p, 0, max_value)   (gradient passes AT the bound)
//   y = negative_slope != 0 ? p - negative_slope * relu(threshold - x) : p
// So y = negative_slope (x - threshold) for x <= threshold, x up to max_value, max_value
// above (discontinuous at threshold > 0). Gradient, each op's TF gradient:
//   leaky form: x > 0 ? 1 : negative_slope
//   else (positive part) + negative_slope * (x < threshold), the positive part
//     threshold != 0: (x > threshold) [* (x <= max_value) if max_value]
//     relu6 op: 0 < x < 6;  relu + clip: 0 < x <= max_value;  relu: x > 0
// Measured (CNN.md section 4): ReLU(max_value=2, negative_slope=0.1, threshold=1) on
// [-4,-3,-1,-.5,0,.5,1,2.5,3,7] gives [-.5,-.4,-.2,-.15,-.1,-.05,0,2,2,2].
// Preconditions (the layer validates them): values >= 0, max_value finite.
// One implementation, the readable elementwise loop, which IS the reference:
// instantiated for float (the layers) and double (finite-difference tests).
struct ReluParams {
  double negative_slope = 0.0;
  double threshold = 0.0;
  bool has_max_value = false;
  double max_value = 0.0;  // read only when has_max_value
};

template <typename T>
void relu_forward(const ReluParams& params,
                  const T* x,  // (n)
                  std::int64_t n,
                  T* y);  // (n) assigned; may alias x

template <typename T>
void relu_backward(const ReluParams& params,
                   const T* x,   // (n): the forward input
                   const T* dy,  // (n)
                   std::int64_t n,
                   T* dx);  // (n) assigned; may alias x or dy

// The permanent reference: the formulas above as naive loops, every value computed in
// double (std::exp, std::tanh) and rounded once to T. Same contract. Instantiated for
// T = float (the fast kernels are tested against it) and T = double (finite-difference
// gradient tests). Never optimized.
namespace reference {

template <typename T>
void activation_forward(Activation activation,
                        const T* x,  // (rows, cols)
                        std::int64_t rows, std::int64_t cols,
                        T* y);  // (rows, cols) assigned; may alias x

template <typename T>
void activation_backward(Activation activation,
                         const T* x,   // (rows, cols): the forward input, or null
                         const T* y,   // (rows, cols): the forward output, or null
                         const T* dy,  // (rows, cols)
                         std::int64_t rows, std::int64_t cols,
                         T* dx);  // (rows, cols) assigned; may alias dy, x or y

// From y only, for activations that read y (else ArgumentError).
template <typename T>
void activation_backward(Activation activation,
                         const T* y,   // (rows, cols): the forward output
                         const T* dy,  // (rows, cols)
                         std::int64_t rows, std::int64_t cols,
                         T* dx);  // (rows, cols) assigned; may alias dy or y

}  // namespace reference
}  // namespace bnorm::kernels
