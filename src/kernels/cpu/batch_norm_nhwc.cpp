// Fast batch norm, channels-last (N, C) (the (N, C, S) view with S == 1): every row of
// C elements holds one value of each channel, so the inner loops run along c over
// per-channel coefficient arrays.
//
// Reductions: rows are cut into fixed blocks of max(16, kBlockElems / C) rows (a
// function of the dims only, never of the thread count). Each block accumulates
// per-channel partial sums in double into its own slot; the slots are merged in block
// order, so results are bitwise identical for any number of threads.
#include <algorithm>
#include <cassert>
#include <cstdint>
#include <vector>

#include "batch_norm_cpu.hpp"

namespace bnorm::kernels::cpu {
namespace {

struct RowBlocking {
  std::int64_t rows = 1;    // rows per block
  std::int64_t blocks = 1;  // ceil(N / rows)
  std::int64_t begin(std::int64_t b) const { return b * rows; }
};

RowBlocking row_blocking(const BatchNormDims& dims) {
  RowBlocking b;
  b.rows = std::min(dims.N, std::max<std::int64_t>(16, kBlockElems / dims.C));
  b.blocks = ceil_div(dims.N, b.rows);
  return b;
}

std::int64_t block_end(const RowBlocking& b, const BatchNormDims& dims, std::int64_t block) {
  return std::min(dims.N, b.begin(block) + b.rows);
}

std::size_t idx(std::int64_t i) {
  return static_cast<std::size_t>(i);
}

// Batch mean and biased variance of every channel, in double.
// Each block is reduced by two passes over its own rows (local mean, then squared
// deviations from it, while the block is in cache); blocks merge by Chan's formula
//   M2 = sum_b [ M2_b + n_b * (mean_b - mean)^2 ],  mean_b = sum_b / n_b,
// so the input is read once and an offset far above the spread costs no accuracy.
void channel_stats(const float* x, const BatchNormDims& dims, int threads, std::vector<double>& mean,
                   std::vector<double>& var) {
  assert(dims.C > 0 && dims.N > 0 && dims.S == 1);
  const std::int64_t C = dims.C;
  const RowBlocking blocking = row_blocking(dims);
  std::vector<double> block_sum(idx(blocking.blocks * C), 0.0);
  std::vector<double> block_m2(idx(blocking.blocks * C), 0.0);
  const int team = team_size(dims, threads);

#pragma omp parallel num_threads(team) if (team > 1)
  {
    std::vector<double> local_mean_buffer(idx(C));
    double* __restrict local_mean = local_mean_buffer.data();
#pragma omp for schedule(static)
    for (std::int64_t b = 0; b < blocking.blocks; ++b) {
      const std::int64_t r0 = blocking.begin(b), r1 = block_end(blocking, dims, b);
      double* __restrict sum = block_sum.data() + b * C;
      double* __restrict m2 = block_m2.data() + b * C;
      // Scalar math: sum_c += x[r, c]
      for (std::int64_t r = r0; r < r1; ++r) {
        const float* __restrict row = x + r * C;
#pragma omp simd
        for (std::int64_t c = 0; c < C; ++c) sum[c] += static_cast<double>(row[c]);
      }
      const double n_b = static_cast<double>(r1 - r0);
      for (std::int64_t c = 0; c < C; ++c) local_mean[c] = sum[c] / n_b;
      // Scalar math: m2_c += (x[r, c] - local_mean_c)^2
      for (std::int64_t r = r0; r < r1; ++r) {
        const float* __restrict row = x + r * C;
#pragma omp simd
        for (std::int64_t c = 0; c < C; ++c) {
          const double d = static_cast<double>(row[c]) - local_mean[c];
          m2[c] += d * d;
        }
      }
    }
  }

  mean.assign(idx(C), 0.0);
  var.assign(idx(C), 0.0);
  for (std::int64_t b = 0; b < blocking.blocks; ++b)
    for (std::int64_t c = 0; c < C; ++c) mean[idx(c)] += block_sum[idx(b * C + c)];
  const double count = static_cast<double>(dims.N);
  for (std::int64_t c = 0; c < C; ++c) mean[idx(c)] /= count;
  for (std::int64_t b = 0; b < blocking.blocks; ++b) {
    const double n_b = static_cast<double>(block_end(blocking, dims, b) - blocking.begin(b));
    for (std::int64_t c = 0; c < C; ++c) {
      const double d = block_sum[idx(b * C + c)] / n_b - mean[idx(c)];
      var[idx(c)] += block_m2[idx(b * C + c)] + n_b * d * d;
    }
  }
  for (std::int64_t c = 0; c < C; ++c) var[idx(c)] /= count;
}

// Per-channel sum dy and sum dy * (x - mean), in double, merged in block order.
void channel_grad_sums(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                       int threads, std::vector<double>& sum_dy, std::vector<double>& dotp) {
  assert(dims.C > 0 && dims.N > 0 && dims.S == 1);
  const std::int64_t C = dims.C;
  const RowBlocking blocking = row_blocking(dims);
  std::vector<double> block_dy(idx(blocking.blocks * C), 0.0);
  std::vector<double> block_dotp(idx(blocking.blocks * C), 0.0);
  std::vector<double> mean_buffer(mean, mean + C);
  const double* __restrict m = mean_buffer.data();
  const int team = team_size(dims, threads);

#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
  for (std::int64_t b = 0; b < blocking.blocks; ++b) {
    double* __restrict a = block_dy.data() + b * C;
    double* __restrict p = block_dotp.data() + b * C;
    for (std::int64_t r = blocking.begin(b); r < block_end(blocking, dims, b); ++r) {
      const float* __restrict dyr = dy + r * C;
      const float* __restrict xr = x + r * C;
      // Scalar math: sum_dy_c += dy;  dotp_c += dy * (x - mean_c)
#pragma omp simd
      for (std::int64_t c = 0; c < C; ++c) {
        const double g = static_cast<double>(dyr[c]);
        a[c] += g;
        p[c] += g * (static_cast<double>(xr[c]) - m[c]);
      }
    }
  }

  sum_dy.assign(idx(C), 0.0);
  dotp.assign(idx(C), 0.0);
  for (std::int64_t b = 0; b < blocking.blocks; ++b)
    for (std::int64_t c = 0; c < C; ++c) {
      sum_dy[idx(c)] += block_dy[idx(b * C + c)];
      dotp[idx(c)] += block_dotp[idx(b * C + c)];
    }
}

// y = x * alpha_c + shift_c on every row; elementwise, so any split is deterministic.
// y may alias x (same index read then written), hence no __restrict on them.
void apply_fold(const float* x, const BatchNormDims& dims, const std::vector<float>& alpha,
                const std::vector<float>& shift, float* y, int threads) {
  const std::int64_t C = dims.C;
  const float* __restrict a = alpha.data();
  const float* __restrict sh = shift.data();
  const int team = team_size(dims, threads);
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
  for (std::int64_t r = 0; r < dims.N; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    // Scalar math: y = x * alpha_c + shift_c
#pragma omp simd
    for (std::int64_t c = 0; c < C; ++c) yr[c] = xr[c] * a[c] + sh[c];
  }
}

void fold_all(const float* mean, const float* invstd, const float* gamma, const float* beta, std::int64_t C,
              std::vector<float>& alpha, std::vector<float>& shift) {
  alpha.resize(idx(C));
  shift.resize(idx(C));
  for (std::int64_t c = 0; c < C; ++c) {
    const Fold f = fold(mean[c], invstd[c], gamma, beta, c);
    alpha[idx(c)] = f.alpha;
    shift[idx(c)] = f.shift;
  }
}

}  // namespace

void nhwc_moments(const float* x, const BatchNormDims& dims, float* mean, float* var, int threads) {
  std::vector<double> m, v;
  channel_stats(x, dims, threads, m, v);
  for (std::int64_t c = 0; c < dims.C; ++c) {
    mean[c] = static_cast<float>(m[idx(c)]);
    var[c] = static_cast<float>(v[idx(c)]);
  }
}

void nhwc_forward_training(const float* x, const BatchNormDims& dims, const float* gamma, const float* beta,
                           float epsilon, float* y, float* mean, float* var, float* invstd, int threads) {
  std::vector<double> m, v;
  channel_stats(x, dims, threads, m, v);
  for (std::int64_t c = 0; c < dims.C; ++c) {
    mean[c] = static_cast<float>(m[idx(c)]);
    var[c] = static_cast<float>(v[idx(c)]);
    invstd[c] = invstd_of(v[idx(c)], epsilon);
  }
  std::vector<float> alpha, shift;
  fold_all(mean, invstd, gamma, beta, dims.C, alpha, shift);
  apply_fold(x, dims, alpha, shift, y, threads);
}

void nhwc_forward_inference(const float* x, const BatchNormDims& dims, const float* mean, const float* var,
                            const float* gamma, const float* beta, float epsilon, float* y, int threads) {
  std::vector<float> invstd(idx(dims.C));
  for (std::int64_t c = 0; c < dims.C; ++c) invstd[idx(c)] = invstd_of(static_cast<double>(var[c]), epsilon);
  std::vector<float> alpha, shift;
  fold_all(mean, invstd.data(), gamma, beta, dims.C, alpha, shift);
  apply_fold(x, dims, alpha, shift, y, threads);
}

void nhwc_backward_training(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                            const float* invstd, const float* gamma, float* dx, float* dgamma, float* dbeta,
                            int threads) {
  if (dx == nullptr && dgamma == nullptr && dbeta == nullptr) return;
  const std::int64_t C = dims.C;
  std::vector<double> sum_dy, dotp;
  channel_grad_sums(dy, x, dims, mean, threads, sum_dy, dotp);
  std::vector<float> grad_mean(idx(C)), k(idx(C)), scale(idx(C));
  for (std::int64_t c = 0; c < C; ++c) {
    if (dgamma != nullptr) dgamma[c] = static_cast<float>(dotp[idx(c)] * static_cast<double>(invstd[c]));
    if (dbeta != nullptr) dbeta[c] = static_cast<float>(sum_dy[idx(c)]);
    const TrainingGrad g = training_grad(sum_dy[idx(c)], dotp[idx(c)], dims.count(), invstd[c], gamma, c);
    grad_mean[idx(c)] = g.grad_mean;
    k[idx(c)] = g.k;
    scale[idx(c)] = g.scale;
  }
  if (dx == nullptr) return;

  const float* __restrict gm = grad_mean.data();
  const float* __restrict kk = k.data();
  const float* __restrict sc = scale.data();
  const float* __restrict m = mean;
  const int team = team_size(dims, threads);
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
  for (std::int64_t r = 0; r < dims.N; ++r) {
    const float* __restrict dyr = dy + r * C;
    const float* __restrict xr = x + r * C;
    float* __restrict dxr = dx + r * C;
    // Scalar math: dx = (dy - grad_mean_c - (x - mean_c) * k_c) * scale_c
#pragma omp simd
    for (std::int64_t c = 0; c < C; ++c) dxr[c] = (dyr[c] - gm[c] - (xr[c] - m[c]) * kk[c]) * sc[c];
  }
}

void nhwc_backward_inference(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                             const float* var, const float* gamma, float epsilon, float* dx, float* dgamma,
                             float* dbeta, int threads) {
  const std::int64_t C = dims.C;
  std::vector<float> invstd(idx(C));
  for (std::int64_t c = 0; c < C; ++c) invstd[idx(c)] = invstd_of(static_cast<double>(var[c]), epsilon);

  if (dgamma != nullptr || dbeta != nullptr) {
    std::vector<double> sum_dy, dotp;
    channel_grad_sums(dy, x, dims, mean, threads, sum_dy, dotp);
    for (std::int64_t c = 0; c < C; ++c) {
      if (dgamma != nullptr)
        dgamma[c] = static_cast<float>(static_cast<double>(invstd[idx(c)]) * dotp[idx(c)]);
      if (dbeta != nullptr) dbeta[c] = static_cast<float>(sum_dy[idx(c)]);
    }
  }
  if (dx == nullptr) return;

  std::vector<float> scale(idx(C));
  for (std::int64_t c = 0; c < C; ++c)
    scale[idx(c)] = gamma != nullptr ? invstd[idx(c)] * gamma[c] : invstd[idx(c)];
  const float* __restrict sc = scale.data();
  const int team = team_size(dims, threads);
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
  for (std::int64_t r = 0; r < dims.N; ++r) {
    const float* __restrict dyr = dy + r * C;
    float* __restrict dxr = dx + r * C;
    // Scalar math: dx = dy * invstd_c * gamma_c
#pragma omp simd
    for (std::int64_t c = 0; c < C; ++c) dxr[c] = dyr[c] * sc[c];
  }
}

}  // namespace bnorm::kernels::cpu
