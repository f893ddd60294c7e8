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

#include <cmath>
#include <cstdint>

#include "bnorm/kernels/batch_norm.hpp"

namespace bnorm::kernels::cpu {

// Tensors with fewer elements run on one thread (a parallel region costs more).
inline constexpr std::int64_t kMinParallelNumel = 32768;
// Target number of elements per reduction block.
inline constexpr std::int64_t kBlockElems = 16384;

inline int team_size(const BatchNormDims& dims, int threads) {
  return dims.numel() < kMinParallelNumel || threads < 1 ? 1 : threads;
}

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
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

// ---- channels-first, S > 1 (batch_norm_nchw.cpp) ----
void nchw_moments(const float* x, const BatchNormDims& dims, float* mean, float* var, int threads);
void nchw_forward_training(const float* x, const BatchNormDims& dims, const float* gamma, const float* beta,
                           float epsilon, float* y, float* mean, float* var, float* invstd, int threads);
void nchw_forward_inference(const float* x, const BatchNormDims& dims, const float* mean, const float* var,
                            const float* gamma, const float* beta, float epsilon, float* y, int threads);
void nchw_backward_training(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                            const float* invstd, const float* gamma, float* dx, float* dgamma, float* dbeta,
                            int threads);
void nchw_backward_inference(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                             const float* var, const float* gamma, float epsilon, float* dx, float* dgamma,
                             float* dbeta, int threads);

// ---- channels-last, S == 1 (batch_norm_nhwc.cpp) ----
void nhwc_moments(const float* x, const BatchNormDims& dims, float* mean, float* var, int threads);
void nhwc_forward_training(const float* x, const BatchNormDims& dims, const float* gamma, const float* beta,
                           float epsilon, float* y, float* mean, float* var, float* invstd, int threads);
void nhwc_forward_inference(const float* x, const BatchNormDims& dims, const float* mean, const float* var,
                            const float* gamma, const float* beta, float epsilon, float* y, int threads);
void nhwc_backward_training(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                            const float* invstd, const float* gamma, float* dx, float* dgamma, float* dbeta,
                            int threads);
void nhwc_backward_inference(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                             const float* var, const float* gamma, float epsilon, float* dx, float* dgamma,
                             float* dbeta, int threads);

}  // namespace bnorm::kernels::cpu
