// Fast batch norm, channels-first (N, C, S) with S > 1: every (n, c) row of S elements
// is contiguous, so the inner loops run along s with channel c's coefficients fixed.
//
// Reductions: one channel's N*S elements are cut into fixed blocks of about kBlockElems
// elements (whole rows when S is small, pieces of a row when S is large). A block's
// partial sums (double) depend on its elements only and are merged per channel in block
// order, which makes the result independent of the thread count and of the schedule.
//
// Cache blocking: when there are enough channels to share among the threads, each
// thread takes whole channels: it reduces a channel's blocks, merges them, and at once
// normalizes (forward) or computes dx for (backward) that channel while its slice is
// still in cache, so the tensor crosses memory once. With few channels (C < 8 threads
// and not a multiple of them), the (channel, block) pairs are the parallel tasks and
// the elementwise pass is a second sweep.
#include <omp.h>

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <vector>

#include "batch_norm_cpu.hpp"
#include "simd_dispatch.hpp"

namespace bnorm::kernels::cpu {
namespace {

int nchw_team(const BatchNormDims& dims, int threads) {
  return team_size(dims, threads, kMinParallelNumelRows, kMinThreadNumelRows);
}

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

// Offset of block `k` of channel c.
std::int64_t block_offset(const BatchNormDims& dims, const Block& k, std::int64_t c) {
  return (k.n0 * dims.C + c) * dims.S + k.s0;
}

// Channels per group of the cache-blocked passes: a group's statistics are taken, then
// its elementwise pass runs row by row over the group's consecutive channels, n-major,
// while the group's slice is in cache. Groups make the elementwise spans at least 1024
// floats long when the slice stays under kGroupBytes: one channel's rows are C*S*4
// bytes apart, often a multiple of 4 KiB, and a short row's loads would then wait on the
// stores of the row before (4K aliasing). A tensor under kGroupBytes on one thread is one
// group (statistics, then one pass in memory order).
constexpr std::int64_t kGroupBytes = 1 << 20;

std::int64_t group_size(const BatchNormDims& dims, int team) {
  const std::int64_t slice = dims.N * dims.S * 4;
  if (team == 1 && slice * dims.C <= kGroupBytes) return dims.C;
  const std::int64_t want = ceil_div(1024, dims.S);
  const std::int64_t fits = std::max<std::int64_t>(1, kGroupBytes / slice);
  return std::max<std::int64_t>(1, std::min({want, fits, dims.C}));
}

// Whether threads take whole groups of channels (fused, cache-blocked passes).
bool by_channel(std::int64_t groups, int team) {
  return team == 1 || groups % team == 0 || groups >= 8 * team;
}

// Channels per group for a team: `want` (group_size's), or smaller so that the groups
// divide among the team (16 channels of 8x8 at 2 threads: two groups of 8, not one
// group, which left a thread idle, nor 16 single channels, whose rows of 64 floats
// 4 KiB apart cost 1.5x the grouped pass); 1 when no such size exists.
std::int64_t team_group(std::int64_t C, std::int64_t want, int team) {
  if (by_channel(ceil_div(C, want), team)) return want;
  const std::int64_t k = ceil_div(C, ceil_div(ceil_div(C, want), team) * team);
  return by_channel(ceil_div(C, k), team) ? k : 1;
}

// Row range [r0, r1) of the N*C rows for thread t of nt (equal shares).
void row_share(const BatchNormDims& dims, int t, int nt, std::int64_t& r0, std::int64_t& r1) {
  const std::int64_t rows = dims.N * dims.C;
  r0 = rows * t / nt;
  r1 = rows * (t + 1) / nt;
}

// sum and M2 of block `blk` of channel c: one pass of shifted sums about the channel's
// pivot, or the exact double two-pass loops when the pivot is too far from the block's
// mean (shifted_moments).
void block_moments(const SimdOps& ops, const float* x, const BatchNormDims& dims, const Blocking& b,
                   std::int64_t c, std::int64_t blk, float pivot, double* sum, double* m2) {
  const Block k = block_at(b, dims, blk);
  const float* base = x + block_offset(dims, k, c);
  double s1 = 0.0, s2 = 0.0;
  ops.shifted_rows(base, k.n1 - k.n0, dims.C * dims.S, k.s1 - k.s0, pivot, &s1, &s2);
  if (!shifted_moments(s1, s2, static_cast<double>(k.count()), pivot, *sum, *m2))
    ops.moments_rows(base, k.n1 - k.n0, dims.C * dims.S, k.s1 - k.s0, sum, m2);
}

// Mean and biased variance of channel c from its blocks' sums and M2s (`step` apart).
void merge_channel(const double* sums, const double* m2s, std::int64_t step, const Blocking& b,
                   const BatchNormDims& dims, double& mean, double& var) {
  chan_merge(
      sums, m2s, b.per_channel(), step, [&](std::int64_t k) { return block_at(b, dims, k).count(); },
      static_cast<double>(dims.count()), mean, var);
}

// Every channel's mean and variance: (channel, block) pairs as parallel tasks.
void channel_stats(const SimdOps& ops, const float* x, const BatchNormDims& dims, int team, double* mean,
                   double* var) {
  const Blocking b = blocking_for(dims);
  const std::int64_t nb = b.per_channel();
  const std::int64_t tasks = dims.C * nb;
  double* sums = scratch<double, Slot::block_sums>(2 * tasks);
  double* m2s = sums + tasks;
  float* pivots = scratch<float, Slot::pivots>(dims.C);
  for (std::int64_t c = 0; c < dims.C; ++c) pivots[c] = channel_pivot(x, dims, c);
  run_team(team, [&] {
#pragma omp for schedule(static)
    for (std::int64_t t = 0; t < tasks; ++t)
      block_moments(ops, x, dims, b, t / nb, t % nb, pivots[t / nb], sums + t, m2s + t);
  });
  for (std::int64_t c = 0; c < dims.C; ++c)
    merge_channel(sums + c * nb, m2s + c * nb, 1, b, dims, mean[c], var[c]);
}

// Channel c's sums from its nb (channel, block) task slots, in block order.
void channel_task_sums(const double* sums, const double* dots, std::int64_t c, std::int64_t nb, double& sum_g,
                       double& dotp) {
  sum_g = 0.0;
  dotp = 0.0;
  for (std::int64_t k = 0; k < nb; ++k) {
    sum_g += sums[c * nb + k];
    dotp += dots[c * nb + k];
  }
}

// The ReLU mask of channel c's rows (y, if any, still at the tensor's start): with a
// mask from x, the channel's centred coefficients of the given float mean (fold()).
RowsMask channel_mask(const ReluMask& relu, const float* mean, const float* invstd, const float* gamma,
                      std::int64_t c) {
  RowsMask m;
  m.from = relu.from;
  m.y = relu.y;
  if (relu.from == MaskFrom::input) {
    const Fold f = fold(static_cast<double>(mean[c]), invstd[c], gamma, relu.beta, c);
    m.center = f.center;
    m.alpha = f.alpha;
    m.shift = f.shift;
  }
  return m;
}

// Per-channel sum g and sum g * (x - mean) for channel c, blocks merged in order.
void channel_grad(const SimdOps& ops, const float* dy, const float* x, const RowsMask& mask,
                  const BatchNormDims& dims, const Blocking& b, std::int64_t c, float mean, double& sum_g,
                  double& dotp) {
  double a = 0.0, p = 0.0;
  for (std::int64_t blk = 0; blk < b.per_channel(); ++blk) {
    const Block k = block_at(b, dims, blk);
    const std::int64_t o = block_offset(dims, k, c);
    double ba = 0.0, bp = 0.0;
    ops.grad_rows(dy + o, x + o, mask.at(o), k.n1 - k.n0, dims.C * dims.S, k.s1 - k.s0, mean, &ba, &bp);
    a += ba;
    p += bp;
  }
  sum_g = a;
  dotp = p;
}

}  // namespace

void nchw_moments(const float* x, const BatchNormDims& dims, float* mean, float* var, double* mean_d,
                  double* var_d, const Exec& exec) {
  double* m = scratch<double, Slot::channel_doubles>(2 * dims.C);
  double* v = m + dims.C;
  channel_stats(exec.ops, x, dims, nchw_team(dims, exec.threads), m, v);
  for (std::int64_t c = 0; c < dims.C; ++c) {
    mean[c] = static_cast<float>(m[c]);
    var[c] = static_cast<float>(v[c]);
  }
  if (mean_d != nullptr) std::copy(m, m + dims.C, mean_d);
  if (var_d != nullptr) std::copy(v, v + dims.C, var_d);
}

void nchw_forward_training(const float* x, const BatchNormDims& dims, const float* gamma, const float* beta,
                           float epsilon, float* y, float* mean, float* var, float* invstd, double* mean_d,
                           double* var_d, bool relu, const Exec& exec) {
  const SimdOps& ops = exec.ops;
  const int team = nchw_team(dims, exec.threads);
  const std::int64_t C = dims.C, S = dims.S;
  const Blocking b = blocking_for(dims);
  const std::int64_t nb = b.per_channel();

  const bool stream = stream_rows(dims.numel() * 4, dims.S);
  const bool out_of_cache = dims.numel() * 4 >= kInCacheBytes;  // as rows_ahead's rule
  Fold* folds = scratch<Fold, Slot::coefficients>(C);           // (C): normalization with the double mean
  const std::int64_t k = team_group(C, group_size(dims, team), team), groups = ceil_div(C, k);

  if (by_channel(groups, team)) {
    // Whole groups of channels per thread: reduce, merge, normalize while the slice is
    // in cache.
    run_team(team, [&] {
      double* sums = scratch<double, Slot::thread_sums>(2 * nb);
      double* m2s = sums + nb;
#pragma omp for schedule(static)
      for (std::int64_t g = 0; g < groups; ++g) {
        const std::int64_t c0 = g * k, c1 = std::min(C, c0 + k);
        for (std::int64_t c = c0; c < c1; ++c) {
          const float pivot = channel_pivot(x, dims, c);
          for (std::int64_t blk = 0; blk < nb; ++blk)
            block_moments(ops, x, dims, b, c, blk, pivot, sums + blk, m2s + blk);
          double m = 0.0, v = 0.0;
          merge_channel(sums, m2s, 1, b, dims, m, v);
          mean[c] = static_cast<float>(m);
          var[c] = static_cast<float>(v);
          if (mean_d != nullptr) mean_d[c] = m;
          if (var_d != nullptr) var_d[c] = v;
          invstd[c] = invstd_of(v, epsilon);
          folds[c] = fold(m, invstd[c], gamma, beta, c);
        }
        if (c1 - c0 == 1) {
          ops.affine_rows(x + c0 * S, y + c0 * S, dims.N, C * S, S, folds[c0], relu, stream);
        } else {
          // The group's rows of one n are contiguous, those of the next n `C*S*4` bytes
          // further: the next n's output lines are prefetched for writing first (plain
          // stores of a tensor out of cache stalled on their line reads, 43 % of this
          // pass for 7x7 maps; 32x2048x7x7 at 1 thread 1.45 -> 1.35 ms, 32x512x14x14
          // 1.04 -> 0.96 ms, 2 threads 0.75 -> 0.69 ms).
          const bool prefetch_y = !stream && out_of_cache;
          for (std::int64_t n = 0; n < dims.N; ++n) {
            if (prefetch_y && n + 1 < dims.N) {
              const char* q = reinterpret_cast<const char*>(y + ((n + 1) * C + c0) * S);
              for (std::int64_t at = 0; at < (c1 - c0) * S * 4; at += 64) __builtin_prefetch(q + at, 1, 3);
            }
            ops.affine_cyclic(x, y, n * C + c0, n * C + c1, C, S, folds, relu, stream);
          }
        }
        end_streaming(stream);
      }
    });
    return;
  }

  double* m = scratch<double, Slot::channel_doubles>(2 * C);
  double* v = m + C;
  channel_stats(ops, x, dims, team, m, v);
  if (mean_d != nullptr) std::copy(m, m + C, mean_d);
  if (var_d != nullptr) std::copy(v, v + C, var_d);
  for (std::int64_t c = 0; c < C; ++c) {
    mean[c] = static_cast<float>(m[c]);
    var[c] = static_cast<float>(v[c]);
    invstd[c] = invstd_of(v[c], epsilon);
    folds[c] = fold(m[c], invstd[c], gamma, beta, c);
  }
  run_team(team, [&] {
    std::int64_t r0 = 0, r1 = 0;
    row_share(dims, omp_get_thread_num(), omp_get_num_threads(), r0, r1);
    ops.affine_cyclic(x, y, r0, r1, C, S, folds, relu, stream);
    end_streaming(stream);
  });
}

void nchw_forward_inference(const float* x, const BatchNormDims& dims, const float* mean, const float* var,
                            const float* gamma, const float* beta, float epsilon, float* y,
                            const Exec& exec) {
  const SimdOps& ops = exec.ops;
  const int team = nchw_team(dims, exec.threads);
  Fold* folds = scratch<Fold, Slot::coefficients>(dims.C);  // (C)
  for (std::int64_t c = 0; c < dims.C; ++c)
    folds[c] =
        fold(static_cast<double>(mean[c]), invstd_of(static_cast<double>(var[c]), epsilon), gamma, beta, c);
  const bool stream = stream_rows(dims.numel() * 4, dims.S);
  run_team(team, [&] {
    std::int64_t r0 = 0, r1 = 0;
    row_share(dims, omp_get_thread_num(), omp_get_num_threads(), r0, r1);
    ops.affine_cyclic(x, y, r0, r1, dims.C, dims.S, folds, false, stream);
    end_streaming(stream);
  });
}

void nchw_backward_training(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                            const float* invstd, const float* gamma, float* dx, float* dgamma, float* dbeta,
                            const ReluMask& relu, const Exec& exec) {
  if (dx == nullptr && dgamma == nullptr && dbeta == nullptr) return;
  const SimdOps& ops = exec.ops;
  const int team = nchw_team(dims, exec.threads);
  const std::int64_t C = dims.C, S = dims.S;
  const Blocking b = blocking_for(dims);

  const bool stream = dx != nullptr && stream_rows(dims.numel() * 4, dims.S);

  // Rows under 128 floats (7x7 maps) are grouped as in the forward; longer ones go channel
  // by channel (interleaved harness minima, 1 thread: 32x2048x7x7 2.09-2.12 -> 1.72-1.81
  // ms with groups, 2 threads 1.01-1.02 -> 0.89-0.91 ms; but 32x512x14x14 1.48-1.52 ->
  // 1.60-1.63 ms and 32x128x28x28 1.36-1.42 -> 1.57-1.62 ms, where a channel's long
  // strided rows prefetch better).
  // (Groups are cut to divide among the team, team_group: 32x16x8x8 at 2 threads, two
  // groups of 8 channels 5.5-6.3 us, 16 single channels 6.6 us, the task path 8.7 us.)
  const std::int64_t per_group = S < 128 ? team_group(C, group_size(dims, team), team) : 1;
  const std::int64_t groups = ceil_div(C, per_group);
  if (by_channel(groups, team)) {
    // Whole groups of channels per thread: each channel's sums, then dx while the group's
    // dy and x are in cache, one channel's rows at a time, or for a group of short rows n
    // by n over its consecutive channels.
    TrainingGrad* grads = scratch<TrainingGrad, Slot::grads>(C);
    RowsMask* masks = scratch<RowsMask, Slot::masks>(C);
    const bool prefetch_dx = dx != nullptr && !stream && dims.numel() * 4 >= kInCacheBytes;
    run_team(team, [&] {
#pragma omp for schedule(static)
      for (std::int64_t grp = 0; grp < groups; ++grp) {
        const std::int64_t c0 = grp * per_group, c1 = std::min(C, c0 + per_group);
        for (std::int64_t c = c0; c < c1; ++c) {
          double sum_g = 0.0, dotp = 0.0;
          masks[c] = channel_mask(relu, mean, invstd, gamma, c);
          channel_grad(ops, dy, x, masks[c], dims, b, c, mean[c], sum_g, dotp);
          if (dgamma != nullptr) dgamma[c] = static_cast<float>(dotp * static_cast<double>(invstd[c]));
          if (dbeta != nullptr) dbeta[c] = static_cast<float>(sum_g);
          grads[c] = training_grad(sum_g, dotp, dims.count(), invstd[c], gamma, c);
        }
        if (dx == nullptr) continue;
        if (c1 - c0 == 1) {
          const TrainingGrad& g = grads[c0];
          ops.dx_rows(dy + c0 * S, x + c0 * S, masks[c0].at(c0 * S), dx + c0 * S, dims.N, C * S, S, mean[c0],
                      g.grad_mean, g.k, g.scale, stream);
        } else {
          for (std::int64_t n = 0; n < dims.N; ++n) {
            if (prefetch_dx && n + 1 < dims.N) {  // the next n's output lines, as in the forward
              const char* q = reinterpret_cast<const char*>(dx + ((n + 1) * C + c0) * S);
              for (std::int64_t at = 0; at < (c1 - c0) * S * 4; at += 64) __builtin_prefetch(q + at, 1, 3);
            }
            ops.dx_cyclic(dy, x, masks, dx, n * C + c0, n * C + c1, C, S, mean, grads, stream);
          }
        }
        end_streaming(stream);
      }
    });
    return;
  }

  // Few channels: (channel, block) tasks, then dx over rows.
  const std::int64_t nb = b.per_channel();
  const std::int64_t tasks = C * nb;
  double* sums = scratch<double, Slot::block_sums>(2 * tasks);
  double* dots = sums + tasks;
  run_team(team, [&] {
#pragma omp for schedule(static)
    for (std::int64_t t = 0; t < tasks; ++t) {
      const std::int64_t c = t / nb;
      const Block k = block_at(b, dims, t % nb);
      const std::int64_t o = block_offset(dims, k, c);
      ops.grad_rows(dy + o, x + o, channel_mask(relu, mean, invstd, gamma, c).at(o), k.n1 - k.n0, C * S,
                    k.s1 - k.s0, mean[c], sums + t, dots + t);
    }
  });
  TrainingGrad* grads = scratch<TrainingGrad, Slot::grads>(C);
  RowsMask* masks = scratch<RowsMask, Slot::masks>(C);
  for (std::int64_t c = 0; c < C; ++c) {
    double sum_g = 0.0, dotp = 0.0;
    channel_task_sums(sums, dots, c, nb, sum_g, dotp);
    if (dgamma != nullptr) dgamma[c] = static_cast<float>(dotp * static_cast<double>(invstd[c]));
    if (dbeta != nullptr) dbeta[c] = static_cast<float>(sum_g);
    grads[c] = training_grad(sum_g, dotp, dims.count(), invstd[c], gamma, c);
    masks[c] = channel_mask(relu, mean, invstd, gamma, c);
  }
  if (dx == nullptr) return;
  run_team(team, [&] {
    std::int64_t r0 = 0, r1 = 0;
    row_share(dims, omp_get_thread_num(), omp_get_num_threads(), r0, r1);
    ops.dx_cyclic(dy, x, masks, dx, r0, r1, C, S, mean, grads, stream);
    end_streaming(stream);
  });
}

void nchw_backward_inference(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                             const float* var, const float* gamma, float epsilon, float* dx, float* dgamma,
                             float* dbeta, const Exec& exec) {
  const SimdOps& ops = exec.ops;
  const int team = nchw_team(dims, exec.threads);
  const std::int64_t C = dims.C, S = dims.S;
  float* inv = scratch<float, Slot::coefficients>(2 * C);
  float* scale = inv + C;
  for (std::int64_t c = 0; c < C; ++c) {
    inv[c] = invstd_of(static_cast<double>(var[c]), epsilon);
    scale[c] = gamma != nullptr ? inv[c] * gamma[c] : inv[c];
  }
  // One pass: each (channel, block) task takes its partial sums and writes its dx.
  const Blocking b = blocking_for(dims);
  const std::int64_t nb = b.per_channel();
  const std::int64_t tasks = C * nb;
  double* sums = scratch<double, Slot::block_sums>(2 * tasks);
  double* dots = sums + tasks;
  const bool stream = dx != nullptr && stream_rows(dims.numel() * 4, S);
  run_team(team, [&] {
#pragma omp for schedule(static)
    for (std::int64_t t = 0; t < tasks; ++t) {
      const std::int64_t c = t / nb;
      const Block k = block_at(b, dims, t % nb);
      const std::int64_t o = block_offset(dims, k, c);
      if (dx != nullptr)
        ops.grad_scale_rows(dy + o, x + o, dx + o, k.n1 - k.n0, C * S, k.s1 - k.s0, mean[c], scale[c],
                            sums + t, dots + t, stream);
      else
        ops.grad_rows(dy + o, x + o, RowsMask{}, k.n1 - k.n0, C * S, k.s1 - k.s0, mean[c], sums + t,
                      dots + t);
    }
  });
  for (std::int64_t c = 0; c < C; ++c) {
    double sum_g = 0.0, dotp = 0.0;
    channel_task_sums(sums, dots, c, nb, sum_g, dotp);
    if (dgamma != nullptr) dgamma[c] = static_cast<float>(static_cast<double>(inv[c]) * dotp);
    if (dbeta != nullptr) dbeta[c] = static_cast<float>(sum_g);
  }
}

}  // namespace bnorm::kernels::cpu
