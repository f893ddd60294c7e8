// Fast batch norm, channels-first (N, C, S) with S > 1: every (n, c) row of S elements
// is contiguous, so the inner loops run along s with channel c's coefficients fixed.
//
// Reductions: one channel's N*S elements are cut into fixed blocks of about kBlockElems
// elements (whole rows when S is small, pieces of a row when S is large); the
// (channel, block) pairs are the parallel tasks, so few channels still use every thread.
// Each task writes its partial sums (double) to its own slot; they are merged per
// channel in block order, which makes the result independent of the thread count.
#include <algorithm>
#include <cassert>
#include <cstdint>
#include <vector>

#include "batch_norm_cpu.hpp"

namespace bnorm::kernels::cpu {
namespace {

// The fixed decomposition of one channel into blocks: `rows` consecutive n by `span`
// consecutive s. Depends on the dims only.
struct Blocking {
  std::int64_t rows = 1;
  std::int64_t span = 1;
  std::int64_t row_blocks = 1;   // ceil(N / rows)
  std::int64_t span_blocks = 1;  // ceil(S / span)
  std::int64_t per_channel() const { return row_blocks * span_blocks; }
};

Blocking blocking_for(const BatchNormDims& dims) {
  Blocking b;
  if (dims.S >= kBlockElems) {
    b.rows = 1;
    b.span = kBlockElems;
  } else {
    b.rows = std::min(dims.N, std::max<std::int64_t>(1, kBlockElems / dims.S));
    b.span = dims.S;
  }
  b.row_blocks = ceil_div(dims.N, b.rows);
  b.span_blocks = ceil_div(dims.S, b.span);
  return b;
}

// Block `block` of a channel: rows [n0, n1), inner positions [s0, s1).
struct Block {
  std::int64_t n0, n1, s0, s1;
  std::int64_t count() const { return (n1 - n0) * (s1 - s0); }
};

Block block_at(const Blocking& b, const BatchNormDims& dims, std::int64_t block) {
  const std::int64_t rb = block / b.span_blocks;
  const std::int64_t sb = block % b.span_blocks;
  const std::int64_t n0 = rb * b.rows;
  const std::int64_t s0 = sb * b.span;
  return {n0, std::min(dims.N, n0 + b.rows), s0, std::min(dims.S, s0 + b.span)};
}

// Scalar math: sum_i x[i]
double span_sum(const float* __restrict x, std::int64_t len) {
  double acc = 0.0;
#pragma omp simd reduction(+ : acc)
  for (std::int64_t i = 0; i < len; ++i) acc += static_cast<double>(x[i]);
  return acc;
}

// Scalar math: sum_i (x[i] - mean)^2
double span_squares(const float* __restrict x, std::int64_t len, double mean) {
  double acc = 0.0;
#pragma omp simd reduction(+ : acc)
  for (std::int64_t i = 0; i < len; ++i) {
    const double d = static_cast<double>(x[i]) - mean;
    acc += d * d;
  }
  return acc;
}

// Scalar math: sum_dy += sum_i dy[i];  dotp += sum_i dy[i] * (x[i] - mean)
void span_grad_sums(const float* __restrict dy, const float* __restrict x, std::int64_t len, double mean,
                    double& sum_dy, double& dotp) {
  double a = 0.0, b = 0.0;
#pragma omp simd reduction(+ : a, b)
  for (std::int64_t i = 0; i < len; ++i) {
    const double g = static_cast<double>(dy[i]);
    a += g;
    b += g * (static_cast<double>(x[i]) - mean);
  }
  sum_dy += a;
  dotp += b;
}

// Batch mean and biased variance of every channel, in double.
// Each block is reduced by two passes over its own elements (local mean, then squared
// deviations from it, while the block is in cache); blocks merge by Chan's formula
//   M2 = sum_b [ M2_b + n_b * (mean_b - mean)^2 ],  mean_b = sum_b / n_b,
// so the input is read once and an offset far above the spread costs no accuracy.
void channel_stats(const float* x, const BatchNormDims& dims, int threads, std::vector<double>& mean,
                   std::vector<double>& var) {
  assert(dims.C > 0 && dims.count() > 0);
  const Blocking blocking = blocking_for(dims);
  const std::int64_t nb = blocking.per_channel();
  const std::int64_t tasks = dims.C * nb;
  std::vector<double> block_sum(static_cast<std::size_t>(tasks));
  std::vector<double> block_m2(static_cast<std::size_t>(tasks));
  const int team = team_size(dims, threads);

#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
  for (std::int64_t t = 0; t < tasks; ++t) {
    const std::int64_t c = t / nb;
    const Block blk = block_at(blocking, dims, t % nb);
    const std::int64_t len = blk.s1 - blk.s0;
    double sum = 0.0;
    for (std::int64_t n = blk.n0; n < blk.n1; ++n)
      sum += span_sum(x + (n * dims.C + c) * dims.S + blk.s0, len);
    const double local_mean = sum / static_cast<double>(blk.count());
    double m2 = 0.0;
    for (std::int64_t n = blk.n0; n < blk.n1; ++n)
      m2 += span_squares(x + (n * dims.C + c) * dims.S + blk.s0, len, local_mean);
    block_sum[static_cast<std::size_t>(t)] = sum;
    block_m2[static_cast<std::size_t>(t)] = m2;
  }

  mean.assign(static_cast<std::size_t>(dims.C), 0.0);
  var.assign(static_cast<std::size_t>(dims.C), 0.0);
  const double count = static_cast<double>(dims.count());
  for (std::int64_t c = 0; c < dims.C; ++c) {
    const double* sums = block_sum.data() + c * nb;
    const double* m2s = block_m2.data() + c * nb;
    double total = 0.0;
    for (std::int64_t b = 0; b < nb; ++b) total += sums[b];
    const double m = total / count;
    double m2 = 0.0;
    for (std::int64_t b = 0; b < nb; ++b) {
      const double n_b = static_cast<double>(block_at(blocking, dims, b).count());
      const double d = sums[b] / n_b - m;
      m2 += m2s[b] + n_b * d * d;
    }
    mean[static_cast<std::size_t>(c)] = m;
    var[static_cast<std::size_t>(c)] = m2 / count;
  }
}

// Per-channel sum dy and sum dy * (x - mean), in double, merged in block order.
void channel_grad_sums(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                       int threads, std::vector<double>& sum_dy, std::vector<double>& dotp) {
  assert(dims.C > 0 && dims.count() > 0);
  const Blocking blocking = blocking_for(dims);
  const std::int64_t nb = blocking.per_channel();
  const std::int64_t tasks = dims.C * nb;
  std::vector<double> block_dy(static_cast<std::size_t>(tasks));
  std::vector<double> block_dotp(static_cast<std::size_t>(tasks));
  const int team = team_size(dims, threads);

#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
  for (std::int64_t t = 0; t < tasks; ++t) {
    const std::int64_t c = t / nb;
    const Block blk = block_at(blocking, dims, t % nb);
    const double m = static_cast<double>(mean[c]);
    double a = 0.0, b = 0.0;
    for (std::int64_t n = blk.n0; n < blk.n1; ++n) {
      const std::int64_t row = (n * dims.C + c) * dims.S + blk.s0;
      span_grad_sums(dy + row, x + row, blk.s1 - blk.s0, m, a, b);
    }
    block_dy[static_cast<std::size_t>(t)] = a;
    block_dotp[static_cast<std::size_t>(t)] = b;
  }

  sum_dy.assign(static_cast<std::size_t>(dims.C), 0.0);
  dotp.assign(static_cast<std::size_t>(dims.C), 0.0);
  for (std::int64_t c = 0; c < dims.C; ++c) {
    double a = 0.0, b = 0.0;
    for (std::int64_t k = 0; k < nb; ++k) {
      a += block_dy[static_cast<std::size_t>(c * nb + k)];
      b += block_dotp[static_cast<std::size_t>(c * nb + k)];
    }
    sum_dy[static_cast<std::size_t>(c)] = a;
    dotp[static_cast<std::size_t>(c)] = b;
  }
}

// y = x * alpha_c + shift_c over every row; elementwise, so any split is deterministic.
// y may alias x (same index read then written), hence no __restrict on them.
void apply_fold(const float* x, const BatchNormDims& dims, const std::vector<Fold>& folds, float* y,
                int threads) {
  const std::int64_t rows = dims.N * dims.C;
  const int team = team_size(dims, threads);
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
  for (std::int64_t r = 0; r < rows; ++r) {
    const Fold f = folds[static_cast<std::size_t>(r % dims.C)];
    const float* xr = x + r * dims.S;
    float* yr = y + r * dims.S;
    // Scalar math: y = x * alpha + shift
#pragma omp simd
    for (std::int64_t s = 0; s < dims.S; ++s) yr[s] = xr[s] * f.alpha + f.shift;
  }
}

}  // namespace

void nchw_moments(const float* x, const BatchNormDims& dims, float* mean, float* var, int threads) {
  std::vector<double> m, v;
  channel_stats(x, dims, threads, m, v);
  for (std::int64_t c = 0; c < dims.C; ++c) {
    mean[c] = static_cast<float>(m[static_cast<std::size_t>(c)]);
    var[c] = static_cast<float>(v[static_cast<std::size_t>(c)]);
  }
}

void nchw_forward_training(const float* x, const BatchNormDims& dims, const float* gamma, const float* beta,
                           float epsilon, float* y, float* mean, float* var, float* invstd, int threads) {
  std::vector<double> m, v;
  channel_stats(x, dims, threads, m, v);
  std::vector<Fold> folds(static_cast<std::size_t>(dims.C));
  for (std::int64_t c = 0; c < dims.C; ++c) {
    const std::size_t i = static_cast<std::size_t>(c);
    mean[c] = static_cast<float>(m[i]);
    var[c] = static_cast<float>(v[i]);
    invstd[c] = invstd_of(v[i], epsilon);
    folds[i] = fold(mean[c], invstd[c], gamma, beta, c);
  }
  apply_fold(x, dims, folds, y, threads);
}

void nchw_forward_inference(const float* x, const BatchNormDims& dims, const float* mean, const float* var,
                            const float* gamma, const float* beta, float epsilon, float* y, int threads) {
  std::vector<Fold> folds(static_cast<std::size_t>(dims.C));
  for (std::int64_t c = 0; c < dims.C; ++c)
    folds[static_cast<std::size_t>(c)] =
        fold(mean[c], invstd_of(static_cast<double>(var[c]), epsilon), gamma, beta, c);
  apply_fold(x, dims, folds, y, threads);
}

void nchw_backward_training(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                            const float* invstd, const float* gamma, float* dx, float* dgamma, float* dbeta,
                            int threads) {
  if (dx == nullptr && dgamma == nullptr && dbeta == nullptr) return;
  std::vector<double> sum_dy, dotp;
  channel_grad_sums(dy, x, dims, mean, threads, sum_dy, dotp);
  std::vector<TrainingGrad> grads(static_cast<std::size_t>(dims.C));
  for (std::int64_t c = 0; c < dims.C; ++c) {
    const std::size_t i = static_cast<std::size_t>(c);
    if (dgamma != nullptr) dgamma[c] = static_cast<float>(dotp[i] * static_cast<double>(invstd[c]));
    if (dbeta != nullptr) dbeta[c] = static_cast<float>(sum_dy[i]);
    grads[i] = training_grad(sum_dy[i], dotp[i], dims.count(), invstd[c], gamma, c);
  }
  if (dx == nullptr) return;

  const std::int64_t rows = dims.N * dims.C;
  const int team = team_size(dims, threads);
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t c = r % dims.C;
    const TrainingGrad g = grads[static_cast<std::size_t>(c)];
    const float m = mean[c];
    const float* __restrict dyr = dy + r * dims.S;
    const float* __restrict xr = x + r * dims.S;
    float* __restrict dxr = dx + r * dims.S;
    // Scalar math: dx = (dy - grad_mean - (x - mean) * k) * scale
#pragma omp simd
    for (std::int64_t s = 0; s < dims.S; ++s) dxr[s] = (dyr[s] - g.grad_mean - (xr[s] - m) * g.k) * g.scale;
  }
}

void nchw_backward_inference(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                             const float* var, const float* gamma, float epsilon, float* dx, float* dgamma,
                             float* dbeta, int threads) {
  std::vector<float> invstd(static_cast<std::size_t>(dims.C));
  for (std::int64_t c = 0; c < dims.C; ++c)
    invstd[static_cast<std::size_t>(c)] = invstd_of(static_cast<double>(var[c]), epsilon);

  if (dgamma != nullptr || dbeta != nullptr) {
    std::vector<double> sum_dy, dotp;
    channel_grad_sums(dy, x, dims, mean, threads, sum_dy, dotp);
    for (std::int64_t c = 0; c < dims.C; ++c) {
      const std::size_t i = static_cast<std::size_t>(c);
      if (dgamma != nullptr) dgamma[c] = static_cast<float>(static_cast<double>(invstd[i]) * dotp[i]);
      if (dbeta != nullptr) dbeta[c] = static_cast<float>(sum_dy[i]);
    }
  }
  if (dx == nullptr) return;

  const std::int64_t rows = dims.N * dims.C;
  const int team = team_size(dims, threads);
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t c = r % dims.C;
    const float scale = gamma != nullptr ? invstd[static_cast<std::size_t>(c)] * gamma[c]
                                         : invstd[static_cast<std::size_t>(c)];
    const float* __restrict dyr = dy + r * dims.S;
    float* __restrict dxr = dx + r * dims.S;
    // Scalar math: dx = dy * invstd * gamma
#pragma omp simd
    for (std::int64_t s = 0; s < dims.S; ++s) dxr[s] = dyr[s] * scale;
  }
}

}  // namespace bnorm::kernels::cpu
