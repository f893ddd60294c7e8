// src/kernels/cpu/batch_norm_cpu.hpp: the fast CPU batch-norm loops (internal).
//
// Two layouts of the (N, C, S) view of bnorm/kernels/batch_norm.hpp:
//   nchw_*  channels-first, S > 1: each (n, c) row of S elements is contiguous;
//   nhwc_*  channels-last,  S == 1: data is (N, C), each row holds every channel.
// Same contracts as the public functions (mean_d, var_d: the double statistics, or
// null), plus: C > 0 and N*S > 0 (the dispatcher handles empty tensors), and an Exec:
// the SIMD loops and the OpenMP team size for large tensors.
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
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "bnorm/kernels/batch_norm.hpp"
#include "invstd.hpp"

namespace bnorm::kernels::cpu {

// Tensors with fewer elements run on one thread (below this a parallel region costs
// more than it saves; measured with bench/bench_batch_norm). Larger ones use at most
// one thread per kMinThreadNumel elements.
inline constexpr std::int64_t kMinParallelNumel = 65536;
inline constexpr std::int64_t kMinThreadNumel = 32768;
// Target number of elements per reduction block.
inline constexpr std::int64_t kBlockElems = 16384;

// A tensor (or a block of one channel) spanning less than this is taken to be in cache:
// software prefetches and prefetches of the output lines only cost there (rows_ahead in
// batch_norm_simd.hpp, the grouped passes of batch_norm_nchw.cpp).
inline constexpr std::int64_t kInCacheBytes = 512 << 10;

// Channels-first calls go parallel from a quarter of that: their per-channel tasks need
// no merge across threads, so a 2-thread region (about 0.7 us to open here, 0.2 us per
// barrier) pays off sooner. 32x16x8x8 NCHW (32 Ki elements) at 2 threads, medians:
// backward_training 13.0 -> 11.3 us, backward_inference 10.0 -> 7.8 us,
// forward_training 7.6 -> 6.6 us (libtorch, which goes parallel there: 8 and 7 us).
inline constexpr std::int64_t kMinParallelNumelRows = 16384;
inline constexpr std::int64_t kMinThreadNumelRows = 8192;

inline int team_size(const BatchNormDims& dims, int threads, std::int64_t min_parallel = kMinParallelNumel,
                     std::int64_t min_thread = kMinThreadNumel) {
  if (dims.numel() < min_parallel || threads <= 1) return 1;
  const std::int64_t cap = dims.numel() / min_thread;
  return static_cast<int>(std::min<std::int64_t>(threads, cap));
}

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}

// Runs body() on a team of `team` OpenMP threads, or directly on the calling thread when
// team == 1 (a parallel region of one thread still costs an allocation and a few
// microseconds in libgomp). Worksharing loops in body() are orphaned constructs, which
// run every iteration on the calling thread when there is no team.
template <typename Body>
void run_team(int team, Body&& body) {
  if (team > 1) {
#pragma omp parallel num_threads(team)
    body();
  } else {
    body();
  }
}

// The buffers of scratch(): one per (slot, element type), so a kernel may hold several
// at once; a slot names the role its buffer plays in a call.
enum class Slot {
  thread_sums,      // one thread's partial sums of its blocks or lanes (double)
  block_sums,       // the per-(channel, block) partial sums a call merges (double)
  channel_doubles,  // per-channel double statistics or sums, per-lane double means
  lanes,            // per-(block, lane) sums of a lane-split call (double)
  pivot_sums,       // the sums behind the pivots (double)
  coefficients,     // per-channel and per-lane coefficients of the elementwise pass
  pivots,           // per-channel and per-lane pivots of the shifted sums (float)
  grads,            // per-channel backward coefficients (TrainingGrad)
  masks,            // per-channel ReLU masks of a fused backward
};

// Grow-only scratch of the calling thread (no allocation once warm), one buffer per slot.
// Arrays of floats and doubles start on a 64-byte line: the per-lane accumulators are
// read and written eight doubles (a 64-byte zmm register with AVX-512) at a time, and a
// load split across two lines costs twice.
template <typename T, Slot kSlot>
T* scratch(std::int64_t n) {
  // (Vector types stay out: a thread-local vector of a struct of 32-byte vectors came back
  // 16-byte aligned, and aligned vector stores into it crashed.)
  static_assert(alignof(T) <= alignof(std::max_align_t), "scratch: no over-aligned types");
  constexpr std::size_t kLine = 64;
  constexpr std::size_t kPad = std::is_arithmetic_v<T> ? kLine / sizeof(T) : 0;
  thread_local std::vector<T> buffer;
  if (buffer.size() < static_cast<std::size_t>(n) + kPad) buffer.resize(static_cast<std::size_t>(n) + kPad);
  T* p = buffer.data();
  if constexpr (kPad > 0) {  // (the vector's storage is 16-byte aligned: a whole number of T to skip)
    const std::size_t off = reinterpret_cast<std::uintptr_t>(p) % kLine;
    if (off != 0) p += (kLine - off) / sizeof(T);
  }
  return p;
}

// The affine transform of the normalization, centred: y = (x - center) * alpha + shift,
// with, in float unless said,
//   center = mean rounded to float (mean_hi),
//   alpha  = invstd * gamma,
//   shift  = beta - (mean - center) * alpha   (in double from the double mean, rounded once).
// For x near the mean, x - center is exact (Sterbenz: both are floats within a factor of
// two), so no cancellation grows with the offset: the error is a few u of |x - mean| *
// alpha and of |y|, whatever the offset. (The folded form x * alpha + (beta - mean *
// alpha) of TensorFlow and PyTorch's CPU kernel, STYLE.md's one multiply-add, loses about
// u * |mean| * alpha: 0.2 of the output's spread at 1e6 times it, beta entirely on a
// constant channel at 1e7; the subtraction costs nothing in these memory-bound loops.)
// The training forward passes the double batch mean, so the part of it below the float
// (mean - center, up to half an ulp of the mean: 0.5 at 1e7) enters through shift; given
// a float mean (inference, a backward's ReLU mask), mean - center = 0 and shift = beta.
// A constant channel gives x - center = 0 and y = shift = beta exactly.
struct Fold {
  float center;
  float alpha;
  float shift;
};
inline Fold fold(double mean, float invstd, const float* gamma, const float* beta, std::int64_t c) {
  const float center = static_cast<float>(mean);
  const float alpha = gamma != nullptr ? invstd * gamma[c] : invstd;
  const float b = beta != nullptr ? beta[c] : 0.0f;
  const double below = mean - static_cast<double>(center);  // exact
  // (below == 0: shift is beta itself, also for an infinite alpha: epsilon 0, var 0.)
  const float shift =
      below == 0.0 ? b : static_cast<float>(static_cast<double>(b) - below * static_cast<double>(alpha));
  return {center, alpha, shift};
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

// The pivot of channel c's shifted sums (shifted_rows / shifted_flat): the mean of 8
// elements spread over the channel, rounded to float. A function of the data and dims
// only, so results stay independent of the thread count.
inline float channel_pivot(const float* x, const BatchNormDims& d, std::int64_t c) {
  double s = 0.0;
  for (std::int64_t i = 0; i < 8; ++i) {
    const std::int64_t n = ((2 * i + 1) * d.N) / 16, j = ((2 * i + 1) * d.S) / 16;
    s += static_cast<double>(x[(n * d.C + c) * d.S + j]);
  }
  return static_cast<float>(s * 0.125);  // (= s / 8, exactly)
}

// Statistics of a block of n elements from its shifted sums s1 = sum (x - pivot) and
// s2 = sum (x - pivot)^2: sum = sum x, m2 = sum (x - block mean)^2 = s2 - s1^2 / n.
// Returns false, and the caller recomputes the block by an exact double two-pass loop,
// when the pivot is more than two standard deviations from the block mean
// (5 s1^2 > 4 n s2) or the sums are not finite. Otherwise, with d = x - pivot rounded to
// float and float partial sums of at most four terms (u = 2^-24), the relative error of
// m2 is at most u (5 (1 + k^2) + 6 k sqrt(1 + k^2)) <= 52 u (3e-6) for the pivot k <= 2
// standard deviations from the mean, and about u / sqrt(n) typically (the rounding
// errors are independent); the mean is off by at most 3e-7 standard deviations.
inline bool shifted_moments(double s1, double s2, double n, float pivot, double& sum, double& m2) {
  if (!(5.0 * s1 * s1 <= 4.0 * n * s2) || !std::isfinite(s2)) return false;
  sum = n * static_cast<double>(pivot) + s1;
  m2 = s2 - s1 * s1 / n;
  return true;
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

// The ReLU's mask in a fused backward (backward_training_relu): the gradient is
// g = dy where the forward's output was positive, else 0. The mask comes from the
// forward's output y (y > 0), or is recomputed from x with the centred coefficients of
// the float mean the backward is given ((x - mean) * alpha + beta > 0, fold() of the
// float mean: the forward's own float expression whenever its double mean is that float,
// so then the same mask, bit for bit, without reading y: one stream less).
enum class MaskFrom { none, output, input };

// The mask as the inner loops take it: y at the block's first element, or the
// coefficients: for a channels-first block (one channel, RowsMask) the channel's center,
// alpha and shift, for a channels-last block (FlatMask) per-lane arrays of them (P +
// kLaneExtra lanes, as the other per-lane coefficients).
template <typename Coef>
struct BlockMask {
  MaskFrom from = MaskFrom::none;
  const float* y = nullptr;
  Coef center{}, alpha{}, shift{};
  // The mask of the block starting `offset` elements further.
  BlockMask at(std::int64_t offset) const {
    BlockMask m = *this;
    if (m.y != nullptr) m.y += offset;
    return m;
  }
};
using RowsMask = BlockMask<float>;
using FlatMask = BlockMask<const float*>;

// What a backward call was given for its ReLU: nothing (plain backward), the forward's
// output y, or beta (the mask recomputed from x; beta may be null, as in the forward).
struct ReluMask {
  MaskFrom from = MaskFrom::none;
  const float* y = nullptr;
  const float* beta = nullptr;
  static ReluMask from_output(const float* y) {
    return {y != nullptr ? MaskFrom::output : MaskFrom::none, y, nullptr};
  }
  static ReluMask from_input(const float* beta) { return {MaskFrom::input, nullptr, beta}; }
};

// Per-lane float coefficient arrays of the *_flat loops hold P + kLaneExtra lanes: a
// vector of up to 16 lanes may start at any lane below P.
inline constexpr std::int64_t kLaneExtra = 16;

// What a fast call runs with besides its data, decided once by the dispatcher
// (src/kernels/batch_norm.cpp): the table of inner loops of the chosen instruction set
// (simd_dispatch.hpp) and the OpenMP team size for large tensors (>= 1).
struct SimdOps;
struct Exec {
  const SimdOps& ops;
  int threads;
};

// ---- the fast kernels, one set per layout ----
// Every layout has the same five functions with the same signatures (the rows of the
// dispatcher's implementation list hold them). `relu` (forward): y = relu(batch norm);
// `relu_mask` (backward): the gradient is masked first (the ReLU's backward, see ReluMask).
#define BNORM_CPU_KERNELS(layout)                                                                            \
  void layout##_moments(const float* x, const BatchNormDims& dims, float* mean, float* var, double* mean_d,  \
                        double* var_d, const Exec& exec);                                                    \
  void layout##_forward_training(const float* x, const BatchNormDims& dims, const float* gamma,              \
                                 const float* beta, float epsilon, float* y, float* mean, float* var,        \
                                 float* invstd, double* mean_d, double* var_d, bool relu, const Exec& exec); \
  void layout##_forward_inference(const float* x, const BatchNormDims& dims, const float* mean,              \
                                  const float* var, const float* gamma, const float* beta, float epsilon,    \
                                  float* y, const Exec& exec);                                               \
  void layout##_backward_training(const float* dy, const float* x, const BatchNormDims& dims,                \
                                  const float* mean, const float* invstd, const float* gamma, float* dx,     \
                                  float* dgamma, float* dbeta, const ReluMask& relu_mask, const Exec& exec); \
  void layout##_backward_inference(const float* dy, const float* x, const BatchNormDims& dims,               \
                                   const float* mean, const float* var, const float* gamma, float epsilon,   \
                                   float* dx, float* dgamma, float* dbeta, const Exec& exec);

// Channels-first, S > 1 (batch_norm_nchw.cpp).
BNORM_CPU_KERNELS(nchw)
// Channels-last, S == 1 (batch_norm_nhwc.cpp).
BNORM_CPU_KERNELS(nhwc)
#undef BNORM_CPU_KERNELS

}  // namespace bnorm::kernels::cpu
