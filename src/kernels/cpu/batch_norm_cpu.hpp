// src/kernels/cpu/batch_norm_cpu.hpp: the fast CPU batch-norm loops (internal).
//
// Two layouts of the (N, C, S) view of bnorm/kernels/batch_norm.hpp:
//   nchw_*  channels-first, S > 1: each (n, c) row of S elements is contiguous;
//   nhwc_*  channels-last,  S == 1: data is (N, C), each row holds every channel.
// Same contracts as the public functions, plus: C > 0 and N*S > 0 (the dispatcher
// handles empty tensors), `threads` >= 1 is the OpenMP team size for large tensors.
//
// Determinism: reductions are split into blocks whose boundaries depend on the dims
// only; each block's partial sums (double) land in their own slot and are merged in
// block order, so results do not depend on the number of threads.
//
// The per-channel scalar helpers below are the single place where statistics turn into
// float coefficients; the reference (batch_norm_ref.cpp) spells out the same formulas,
// so reference and fast paths agree to about one float ulp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "bnorm/kernels/batch_norm.hpp"

namespace bnorm::kernels::cpu {

// Tensors with fewer elements run on one thread (below this a parallel region costs
// more than it saves; measured with bench/bench_batch_norm). Larger ones use at most
// one thread per kMinThreadNumel elements.
inline constexpr std::int64_t kMinParallelNumel = 65536;
inline constexpr std::int64_t kMinThreadNumel = 32768;
// Target number of elements per reduction block.
inline constexpr std::int64_t kBlockElems = 16384;

inline int team_size(const BatchNormDims& dims, int threads) {
  if (dims.numel() < kMinParallelNumel || threads <= 1) return 1;
  const std::int64_t cap = dims.numel() / kMinThreadNumel;
  return static_cast<int>(std::min<std::int64_t>(threads, cap));
}

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}

// Grow-only scratch of the calling thread (no allocation once warm). Each slot is a
// separate buffer, so a kernel may hold several at once.
template <typename T, int kSlot>
T* scratch(std::int64_t n) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < static_cast<std::size_t>(n)) buffer.resize(static_cast<std::size_t>(n));
  return buffer.data();
}

// invstd = 1 / sqrt(var + epsilon), in double, rounded once to float (PyTorch's
// save_invstd).
inline float invstd_of(double var, float epsilon) {
  return static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(epsilon)));
}

// Folded affine transform, in float, in tf.nn.batch_normalization's order:
//   alpha = invstd * gamma;  shift = beta - mean * alpha;  y = x * alpha + shift.
struct Fold {
  float alpha;
  float shift;
};
inline Fold fold(float mean, float invstd, const float* gamma, const float* beta, std::int64_t c) {
  const float alpha = gamma != nullptr ? invstd * gamma[c] : invstd;
  const float shift = (beta != nullptr ? beta[c] : 0.0f) - mean * alpha;
  return {alpha, shift};
}

// Coefficients of the training backward (PyTorch's batch_norm_backward_cpu_template):
//   dx = (dy - grad_mean - (x - mean) * k) * scale
//   grad_mean = sum_dy / count,  k = dotp * invstd^2 / count,  scale = invstd * gamma
// with sum_dy = sum dy and dotp = sum dy * (x - mean) accumulated in double.
struct TrainingGrad {
  float grad_mean;
  float k;
  float scale;
};
inline TrainingGrad training_grad(double sum_dy, double dotp, std::int64_t count, float invstd,
                                  const float* gamma, std::int64_t c) {
  const double n = static_cast<double>(count);
  const double inv = static_cast<double>(invstd);
  return {static_cast<float>(sum_dy / n), static_cast<float>(dotp * inv * inv / n),
          gamma != nullptr ? invstd * gamma[c] : invstd};
}

// Chan's merge of per-block statistics, in block order: block b (of nb) has sum
// sums[b * step], squared deviations from its own mean m2s[b * step] and count_of(b)
// elements;
//   mean = sum_b sums_b / count,  M2 = sum_b [ m2_b + n_b * (sums_b / n_b - mean)^2 ].
template <typename CountOf>
void chan_merge(const double* sums, const double* m2s, std::int64_t nb, std::int64_t step, CountOf count_of,
                double count, double& mean, double& var) {
  double total = 0.0;
  for (std::int64_t b = 0; b < nb; ++b) total += sums[b * step];
  const double m = total / count;
  double m2 = 0.0;
  for (std::int64_t b = 0; b < nb; ++b) {
    const double n_b = static_cast<double>(count_of(b));
    const double d = sums[b * step] / n_b - m;
    m2 += m2s[b * step] + n_b * d * d;
  }
  mean = m;
  var = m2 / count;
}

// ---- inner loops (batch_norm_simd.hpp), one table per instruction set ----
// Semantics in batch_norm_simd.hpp. Both tables give bitwise identical results. Per-lane
// float coefficient arrays of the *_flat loops hold P + 8 lanes (kLaneExtra).
inline constexpr std::int64_t kLaneExtra = 8;

struct SimdOps {
  const char* name;
  void (*moments_rows)(const float* x, std::int64_t rows, std::int64_t stride, std::int64_t len,
                       double* sum, double* m2);
  void (*grad_rows)(const float* dy, const float* x, const float* ymask, std::int64_t rows,
                    std::int64_t stride, std::int64_t len, double mean, double* sum, double* dotp);
  void (*grad_scale_rows)(const float* dy, const float* x, float* dx, std::int64_t rows, std::int64_t stride,
                          std::int64_t len, double mean, float scale, double* sum, double* dotp);
  void (*affine_rows)(const float* x, float* y, std::int64_t rows, std::int64_t stride, std::int64_t len,
                      float alpha, float shift, bool relu);
  void (*affine_cyclic)(const float* x, float* y, std::int64_t r0, std::int64_t r1, std::int64_t C,
                        std::int64_t S, const float* alpha, const float* shift, bool relu);
  void (*dx_rows)(const float* dy, const float* x, const float* ymask, float* dx, std::int64_t rows,
                  std::int64_t stride, std::int64_t len, float mean, float grad_mean, float k, float scale);
  void (*sum_flat)(const float* x, std::int64_t n, std::int64_t P, double* acc);
  void (*sq_flat)(const float* x, std::int64_t n, std::int64_t P, const double* mean, double* acc);
  void (*grad_flat)(const float* dy, const float* x, const float* ymask, std::int64_t n, std::int64_t P,
                    const double* mean, double* acc_g, double* acc_p);
  void (*scale_flat)(const float* dy, float* dx, std::int64_t n, std::int64_t P, const float* scale);
  void (*affine_flat)(const float* x, float* y, std::int64_t n, std::int64_t P, const float* alpha,
                      const float* shift, bool relu);
  void (*dx_flat)(const float* dy, const float* x, const float* ymask, float* dx, std::int64_t n,
                  std::int64_t P, const float* mean, const float* grad_mean, const float* k,
                  const float* scale);
};

// The table for this machine: AVX2 when the CPU has it (and BNORM_SIMD is not
// "generic", and force_generic_simd(true) was not called), else the generic one.
const SimdOps& simd_ops();
const SimdOps& simd_ops_generic();
void force_generic_simd(bool on);

// ---- channels-first, S > 1 (batch_norm_nchw.cpp) ----
// `relu` (forward): y = relu(batch norm); `ymask` (backward, nullable): the gradient is
// masked by ymask > 0 first (the ReLU's backward).
void nchw_moments(const float* x, const BatchNormDims& dims, float* mean, float* var, int threads);
void nchw_forward_training(const float* x, const BatchNormDims& dims, const float* gamma, const float* beta,
                           float epsilon, float* y, float* mean, float* var, float* invstd, int threads,
                           bool relu = false);
void nchw_forward_inference(const float* x, const BatchNormDims& dims, const float* mean, const float* var,
                            const float* gamma, const float* beta, float epsilon, float* y, int threads);
void nchw_backward_training(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                            const float* invstd, const float* gamma, float* dx, float* dgamma, float* dbeta,
                            int threads, const float* ymask = nullptr);
void nchw_backward_inference(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                             const float* var, const float* gamma, float epsilon, float* dx, float* dgamma,
                             float* dbeta, int threads);

// ---- channels-last, S == 1 (batch_norm_nhwc.cpp) ----
void nhwc_moments(const float* x, const BatchNormDims& dims, float* mean, float* var, int threads);
void nhwc_forward_training(const float* x, const BatchNormDims& dims, const float* gamma, const float* beta,
                           float epsilon, float* y, float* mean, float* var, float* invstd, int threads,
                           bool relu = false);
void nhwc_forward_inference(const float* x, const BatchNormDims& dims, const float* mean, const float* var,
                            const float* gamma, const float* beta, float epsilon, float* y, int threads);
void nhwc_backward_training(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                            const float* invstd, const float* gamma, float* dx, float* dgamma, float* dbeta,
                            int threads, const float* ymask = nullptr);
void nhwc_backward_inference(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                             const float* var, const float* gamma, float epsilon, float* dx, float* dgamma,
                             float* dbeta, int threads);

}  // namespace bnorm::kernels::cpu
