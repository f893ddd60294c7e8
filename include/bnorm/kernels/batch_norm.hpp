// bnorm/kernels/batch_norm.hpp: stateless batch-normalization kernels (float32, CPU).
//
// Layout. Every kernel sees its input as a row-major (N, C, S) block: N outer positions,
// C channels, S inner positions. Statistics of channel c are taken over its N*S elements
//   x[n, c, s],  n < N, s < S.
// Channels-last data (..., C) is (N = product of the leading dims, C, S = 1);
// channels-first data (N, C, H, W) is (N, C, S = H*W). A layer maps any channel axis to
// this view; the kernels never see an axis list.
//
// Kernels keep no state: moving statistics, momentum and mode belong to the layer, which
// passes what the formula needs and receives batch statistics back.
//
// Numerics: statistics are accumulated in double and the variance is the biased batch
// variance. The reference kernel takes two passes in double (mean first, then
// sum (x - mean)^2). The fast CPU kernels take, per fixed block, one pass of sums of
// d = x - pivot (a per-channel pivot sampled from x; float partial sums of at most four
// terms, widened into double accumulators) and fall back to the exact double two-pass
// loops for a block whose pivot is more than two standard deviations from its mean; an
// offset of 1e6 times the spread costs no accuracy either way. Then
// invstd = 1 / sqrt(var + epsilon). Output is computed centred on the mean (not in the
// folded form x * alpha + (beta - mean * alpha) of TensorFlow's tf.nn.batch_normalization
// and PyTorch's CPU kernel, which cancels on data far from zero: 0.2 of the output's
// spread at 1e6 times it, beta lost on a constant channel at 1e7):
//   center_c = mean_c rounded to float,  alpha_c = invstd_c * gamma_c  (float),
//   shift_c  = beta_c - (mean_c - center_c) * alpha_c  (double, rounded once to float),
//   y = (x - center_c) * alpha_c + shift_c.
// The training forward takes mean_c in double (the batch mean before its rounding: the
// rounded float mean is off by up to half an ulp, 0.5 at 1e7, and is never used to
// normalize); given float statistics (forward_inference), mean_c - center_c = 0 and
// shift_c = beta_c. x - center_c is exact for x near the mean, so a constant channel
// gives exactly beta.
// Results are bitwise identical for any number of threads (partial sums are taken over
// fixed blocks and merged in a fixed order).
//
// Preconditions (checked by the callers at the API boundary, asserted in debug builds):
// N, C, S >= 0; pointers to buffers of the sizes in the shape comments; gamma and beta
// may be null (meaning gamma = 1, beta = 0). Output buffers must not alias inputs,
// except y may alias x in the forward kernels.
//
// Every output is ASSIGNED (overwritten), never accumulated into. Nullable outputs
// (dx, dgamma, dbeta, mean_d, var_d) are skipped when null. An empty batch (N*S == 0) is
// well defined: moments and forward_training write mean = 0, var = 0 (mean_d = var_d = 0,
// and invstd = 1/sqrt(epsilon)); both backward kernels write dgamma = dbeta = 0. C == 0 is
// a no-op.
//
// invstd is computed in double from the double-accumulated (training) or given
// (inference) variance, then rounded to float; PyTorch's eval path computes it in float,
// so outputs may differ from it by about one ulp.
//
// Double statistics. moments, forward_training and forward_training_relu have overloads
// with two more outputs, mean_d and var_d (C): the same batch mean and biased variance
// in double, as accumulated, before their rounding to float (null: skipped). A caller
// that merges the statistics of several calls (micro-batches, replicas) needs them: the
// float mean of data at 1e6 is off by up to 0.03, which Chan's merge would turn into a
// variance error of several percent for a spread of 1 (bnorm/nn/moments.hpp).
//
// Accuracy: against a double two-pass computation on the same float data, the fast
// kernels' variance is within 52 u = 3e-6 relative (u = 2^-24; typically about u) and
// the mean within 3e-7 standard deviations plus the float rounding of the mean itself
// (half an ulp: about 0.03 at 1e6), whatever the offset (tested at 1e4 and 1e6 times the
// spread, every layout); the reference kernel is the double two-pass computation.
// Outputs, whatever the offset of the data (tested at 1e4, 1e6 and 1e7 times the spread,
// every layout, fused or not, every instruction set, both implementations): within 1e-6
// of the output's standard deviation (plus 4 u of a value many deviations out, which a
// float holds only to half an ulp) of a double computation with the statistics the op
// has: forward_training (and _relu) with its own double batch statistics (mean_d, var_d),
// forward_inference, both backward kernels with the float statistics they are given
// (dx and the sums use x - mean; the fast kernels' sums take g * (x - mean) in float, as
// TensorFlow does, with float partial sums of at most four terms widened into double
// accumulators: within 1e-6 of the sums' natural size sqrt(sum g^2 (1 + xhat^2)), measured
// 1.5e-7); measured worst 7.1e-7 (forward outputs). A constant
// channel gives exactly beta (forward_inference: when the given mean is that constant).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bnorm::kernels {

struct BatchNormDims {
  std::int64_t N = 0;  // outer positions (batch times leading spatial dims)
  std::int64_t C = 0;  // channels
  std::int64_t S = 1;  // inner positions (trailing spatial dims); 1 for channels-last
  std::int64_t count() const noexcept { return N * S; }  // elements per channel
  std::int64_t numel() const noexcept { return N * C * S; }
};

// Which implementation runs. `automatic` picks the first of the ordered list
// {cpu (channels-last loop when S == 1, channels-first loop otherwise), reference} that
// supports the call; `reference` forces the permanent reference kernel.
enum class Impl { automatic, cpu, reference };

// Name of the implementation `automatic` would choose for `dims`, and why the ones
// before it were rejected ("cpu_nhwc", "cpu_nchw", "reference"). With the environment
// variable BNORM_VERBOSE=1 every dispatch prints this line to stderr.
std::string explain_choice(const BatchNormDims& dims);

// Threads used by the cpu kernels (OpenMP). 0 restores the default (all cores).
void set_num_threads(int n);
int num_threads();

// Batch moments.
//   mean_c = (1/count) sum x,  var_c = (1/count) sum (x - mean_c)^2   (biased)
void moments(const float* x,       // (N, C, S)
             const BatchNormDims& dims,
             float* mean,          // (C) assigned
             float* var,           // (C) assigned, biased
             Impl impl = Impl::automatic);
void moments(const float* x,       // (N, C, S)
             const BatchNormDims& dims,
             float* mean,          // (C) assigned
             float* var,           // (C) assigned, biased
             double* mean_d,       // (C) assigned: mean before rounding to float, or null
             double* var_d,        // (C) assigned: var before rounding to float, or null
             Impl impl = Impl::automatic);

// Forward, training mode: batch statistics, then normalization with them.
//   y = (x - mean_c) * invstd_c * gamma_c + beta_c   (centred form above, double mean)
void forward_training(const float* x,      // (N, C, S)
                      const BatchNormDims& dims,
                      const float* gamma,  // (C) or null
                      const float* beta,   // (C) or null
                      float epsilon,
                      float* y,            // (N, C, S) assigned; may alias x
                      float* mean,         // (C) assigned: batch mean
                      float* var,          // (C) assigned: biased batch variance
                      float* invstd,       // (C) assigned: 1/sqrt(var + epsilon)
                      Impl impl = Impl::automatic);
// The same, with the batch statistics in double too (see "Double statistics").
void forward_training(const float* x,      // (N, C, S)
                      const BatchNormDims& dims,
                      const float* gamma,  // (C) or null
                      const float* beta,   // (C) or null
                      float epsilon,
                      float* y,            // (N, C, S) assigned; may alias x
                      float* mean,         // (C) assigned: batch mean
                      float* var,          // (C) assigned: biased batch variance
                      float* invstd,       // (C) assigned: 1/sqrt(var + epsilon)
                      double* mean_d,      // (C) assigned: mean before rounding to float, or null
                      double* var_d,       // (C) assigned: var before rounding to float, or null
                      Impl impl = Impl::automatic);

// Forward, inference mode: normalization with given statistics (a layer's moving ones).
//   y = (x - mean_c) / sqrt(var_c + epsilon) * gamma_c + beta_c   (centred form above)
void forward_inference(const float* x,      // (N, C, S)
                       const BatchNormDims& dims,
                       const float* mean,   // (C)
                       const float* var,    // (C)
                       const float* gamma,  // (C) or null
                       const float* beta,   // (C) or null
                       float epsilon,
                       float* y,            // (N, C, S) assigned; may alias x
                       Impl impl = Impl::automatic);

// Backward of forward_training (gradient flows through the batch mean and variance).
// With xhat = (x - mean_c) * invstd_c, per channel over its count elements:
//   dbeta_c  = sum dy
//   dgamma_c = sum dy * xhat
//   dx       = gamma_c * invstd_c * (dy - dbeta_c / count - xhat * dgamma_c / count)
// mean and invstd are the values forward_training returned.
void backward_training(const float* dy,      // (N, C, S)
                       const float* x,       // (N, C, S)
                       const BatchNormDims& dims,
                       const float* mean,    // (C)
                       const float* invstd,  // (C)
                       const float* gamma,   // (C) or null
                       float* dx,            // (N, C, S) assigned, or null
                       float* dgamma,        // (C) assigned, or null
                       float* dbeta,         // (C) assigned, or null
                       Impl impl = Impl::automatic);

// The elementwise half of backward_training, with the channel sums given: for a
// synchronized batch normalization (bnorm/nn/batch_normalization.hpp) the sums are taken
// over the elements of every process, `count` per channel, of which this call holds
// dims.count(). With xhat = (x - mean_c) * invstd_c:
//   dx = gamma_c * invstd_c * (dy - sum_dy_c / count - xhat * sum_dy_xhat_c / count)
// Given backward_training's own dbeta and dgamma as sum_dy and sum_dy_xhat and
// count = dims.count(), this is its dx (within float rounding: the sums are given rounded).
// Precondition: count >= dims.count(); nothing is written when dims.count() == 0. Only
// the reference loop implements it (one pass; no vector path yet).
void backward_training_dx(const float* dy,  // (N, C, S)
                          const float* x,   // (N, C, S)
                          const BatchNormDims& dims,
                          const float* mean,          // (C)
                          const float* invstd,        // (C)
                          const float* gamma,         // (C) or null
                          const double* sum_dy,       // (C) sum of dy over all `count` elements
                          const double* sum_dy_xhat,  // (C) sum of dy * xhat over them
                          std::int64_t count,         // elements per channel over all processes
                          float* dx,                  // (N, C, S) assigned
                          Impl impl = Impl::automatic);

// Backward of forward_inference (statistics are constants):
//   invstd_c = 1/sqrt(var_c + epsilon)
//   dx = dy * gamma_c * invstd_c;  dgamma_c = invstd_c * sum dy*(x - mean_c);  dbeta_c = sum dy
void backward_inference(const float* dy,      // (N, C, S)
                        const float* x,       // (N, C, S)
                        const BatchNormDims& dims,
                        const float* mean,    // (C)
                        const float* var,     // (C)
                        const float* gamma,   // (C) or null
                        float epsilon,
                        float* dx,            // (N, C, S) assigned, or null
                        float* dgamma,        // (C) assigned, or null
                        float* dbeta,         // (C) assigned, or null
                        Impl impl = Impl::automatic);

// ---- Fused batch norm + ReLU (the pair every ResNet block runs) ----

// Forward training followed by ReLU, in one sweep over the data:
//   y = relu((x - center_c) * alpha_c + shift_c),  relu(v) = (v < 0 ? 0 : v)   (NaN propagates)
// Statistics outputs exactly as forward_training (the ReLU does not change them).
// y may alias x.
void forward_training_relu(const float* x,      // (N, C, S)
                           const BatchNormDims& dims,
                           const float* gamma,  // (C) or null
                           const float* beta,   // (C) or null
                           float epsilon,
                           float* y,            // (N, C, S) assigned; may alias x
                           float* mean,         // (C) assigned: batch mean
                           float* var,          // (C) assigned: biased batch variance
                           float* invstd,       // (C) assigned: 1/sqrt(var + epsilon)
                           Impl impl = Impl::automatic);
// The same, with the batch statistics in double too (see "Double statistics").
void forward_training_relu(const float* x,      // (N, C, S)
                           const BatchNormDims& dims,
                           const float* gamma,  // (C) or null
                           const float* beta,   // (C) or null
                           float epsilon,
                           float* y,            // (N, C, S) assigned; may alias x
                           float* mean,         // (C) assigned: batch mean
                           float* var,          // (C) assigned: biased batch variance
                           float* invstd,       // (C) assigned: 1/sqrt(var + epsilon)
                           double* mean_d,      // (C) assigned: mean before rounding to float, or null
                           double* var_d,       // (C) assigned: var before rounding to float, or null
                           Impl impl = Impl::automatic);

// Backward of forward_training_relu: the ReLU's gradient, then backward_training's.
//   g = (y > 0 ? dy : 0)   (y: the forward output, after the ReLU; PyTorch's
//                           threshold_backward(dy, y, 0))
// then exactly backward_training with g in place of dy:
//   dbeta_c = sum g,  dgamma_c = sum g * xhat,
//   dx = gamma_c * invstd_c * (g - dbeta_c / count - xhat * dgamma_c / count)
// No buffer for g is needed: the mask is applied on the fly.
void backward_training_relu(const float* dy,      // (N, C, S)
                            const float* x,       // (N, C, S) forward input
                            const float* y,       // (N, C, S) forward output (after ReLU)
                            const BatchNormDims& dims,
                            const float* mean,    // (C)
                            const float* invstd,  // (C)
                            const float* gamma,   // (C) or null
                            float* dx,            // (N, C, S) assigned, or null
                            float* dgamma,        // (C) assigned, or null
                            float* dbeta,         // (C) assigned, or null
                            Impl impl = Impl::automatic);

// The same, without the forward's output: the ReLU's mask is recomputed from x with the
// centred coefficients of the float mean given,
//   g = ((x - mean_c) * alpha_c + beta_c > 0 ? dy : 0),  alpha_c = invstd_c * gamma_c
// (in float): forward_training_relu's own expression before its ReLU (on every path)
// when its double batch mean is exactly the float mean it returned (then shift_c =
// beta_c), so given the mean and invstd that forward returned and the same gamma and
// beta, the mask and every output equal the y version's bit for bit. Otherwise the
// forward's shift_c also holds -(mean_d - mean) * alpha_c, which the float mean lacks:
// the masks may differ on elements whose pre-activation lies within
// |mean_d - mean| * |alpha_c| (at most half an ulp of the mean times alpha: about 1e-8
// of the spread for data near zero, 0.5 of it at 1e7 times the spread) of zero, the
// precision of the statistics this backward is given. It reads dy and x only (one
// tensor less than the y version, as oneDNN's bit-mask workspace but with no workspace):
// the faster choice when x is kept for the backward anyway (not after a forward that
// wrote y over x). beta null means 0, as in the forward.
void backward_training_relu(const float* dy,      // (N, C, S)
                            const float* x,       // (N, C, S) forward input
                            const BatchNormDims& dims,
                            const float* mean,    // (C) as forward_training_relu returned it
                            const float* invstd,  // (C) as forward_training_relu returned it
                            const float* gamma,   // (C) or null, as given to the forward
                            const float* beta,    // (C) or null, as given to the forward
                            float* dx,            // (N, C, S) assigned, or null
                            float* dgamma,        // (C) assigned, or null
                            float* dbeta,         // (C) assigned, or null
                            Impl impl = Impl::automatic);

// Vector instruction set the cpu kernels use, chosen at the first call: the best this
// CPU has of "avx512" (AVX-512 F and VL), "avx2" and "generic" (baseline x86-64, SSE2),
// or the one the environment variable BNORM_SIMD names (read once, at the first call).
// One binary runs on any x86-64. Every level gives the same bits (same lanes, same
// order of operations, no FMA contraction): results are bitwise identical for any
// thread count and any level; the levels differ only in speed. Throws ArgumentError
// (naming BNORM_SIMD, the expected and the received value), as every kernel call then
// does, when BNORM_SIMD names an unknown level or one this CPU lacks.
const char* simd_level();

// The levels this CPU can run, from "generic" up (what force_simd_level accepts).
std::vector<std::string> simd_levels();

// Forces the loops of `level` ("generic", "avx2", "avx512"), or with "" restores the
// automatic choice, for tests and benchmarks. Throws ArgumentError when `level` is
// unknown or this CPU lacks it (see simd_levels()). Not meant to be called while kernels
// run on other threads.
void force_simd_level(const std::string& level);

// force_simd_level("generic") (true) or force_simd_level("") (false).
void force_generic_simd(bool on);

// Output stores. The elementwise passes write their output with non-temporal stores
// (bypassing the caches) when it exceeds 3/4 of the last-level cache, taken as at most
// 48 MiB (virtual machines report host-sized caches: 480 MiB for 2 vCPUs was measured,
// where streaming paid from about 50 MiB at 1 and 2 threads), else with plain stores;
// channels-first rows stream only their whole 64-byte lines, and rows under 64 floats
// not at all. The values are the same either way. force_streaming_stores(true) makes
// every call stream (tests and benchmarks); false restores the rule. Not meant to be
// called while kernels run.
void force_streaming_stores(bool on);

}  // namespace bnorm::kernels
