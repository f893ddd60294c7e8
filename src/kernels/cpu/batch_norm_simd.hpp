// src/kernels/cpu/batch_norm_simd.hpp: the inner loops of the fast batch-norm kernels,
// written once with GCC vector extensions and compiled once per instruction set.
//
// NO include guard on purpose: simd_dispatch.cpp includes this file once per level, inside
//   namespace ... simd_generic   (baseline x86-64: each 32-byte vector op becomes two SSE ops)
//   namespace ... simd_avx2      (under #pragma GCC target("avx2"): one AVX op)
//   namespace ... simd_avx512    (target("avx2,avx512f,avx512vl"): 16-float vectors fw and
//                                 8-double accumulators d8 in one zmm)
// with BNORM_SIMD_NS naming the namespace; the standard headers are included before, so
// nothing outside these loops is compiled for AVX2. The arithmetic is the same at every
// level (same lanes, same order, no FMA contraction), so all give bitwise identical
// results; the choice only changes speed.
//
// Accumulation: float partial sums of at most four vectors (of x - pivot and its square
// in the forward, of g and g * (x - mean) in the backward), widened into a fixed set of
// double vector accumulators whose layout depends on the call's lengths only, then
// reduced in a fixed order; the exact fallback moments_rows sums in double. Elementwise
// outputs use the reference's float expressions, centred on the mean so that no
// cancellation grows with the data's offset (Fold in batch_norm_cpu.hpp):
// y = (x - center) * alpha + shift; dx = (g - grad_mean - (x - mean) * k) * scale; so they
// agree with the reference bit for bit given the same coefficients.
//
// Two shapes of work:
//   *_rows  a block of `rows` rows of `len` contiguous floats, `stride` apart (one channel
//           of a channels-first tensor);
//   *_flat  `n` contiguous floats of a channels-last tensor starting at a row boundary,
//           seen with a period P (a multiple of both C and 8): lane j of a period belongs
//           to channel j % C; per-lane accumulators (double[P]) and per-lane coefficients
//           (float[P], or float[P + kLaneExtra] for the elementwise loops) come from the caller.
// `mask` (RowsMask / FlatMask of batch_norm_cpu.hpp): the ReLU's mask of a fused backward;
// the gradient is g = (y > 0 ? dy : 0) from the forward output y, or
// g = ((x - center) * alpha + shift > 0 ? dy : 0) recomputed from x, or g = dy (none). The loops are
// compiled once per kind (template parameter kMask).

#ifndef BNORM_SIMD_NS
#error "define BNORM_SIMD_NS before including batch_norm_simd.hpp"
#endif

namespace bnorm::kernels::cpu::BNORM_SIMD_NS {

typedef float f8 __attribute__((vector_size(32)));
typedef float f4 __attribute__((vector_size(16)));
typedef int i8 __attribute__((vector_size(32)));
typedef double d4 __attribute__((vector_size(32)));
typedef float f8u __attribute__((vector_size(32), aligned(4), may_alias));
typedef float f4u __attribute__((vector_size(16), aligned(4), may_alias));
typedef double d4u __attribute__((vector_size(32), aligned(8), may_alias));

#define BNORM_LD8(p) (*reinterpret_cast<const f8u*>(p))
#define BNORM_ST8(p, v) (*reinterpret_cast<f8u*>(p) = (v))
#define BNORM_LD4(p) (*reinterpret_cast<const f4u*>(p))
#define BNORM_LDD(p) (*reinterpret_cast<const d4u*>(p))
#define BNORM_STD(p, v) (*reinterpret_cast<d4u*>(p) = (v))
// Four floats widened to double: one vcvtps2pd with AVX (GCC 12 splits the generic
// __builtin_convertvector into halves).
#ifdef BNORM_SIMD_AVX2
#define BNORM_WIDEN(v) __builtin_ia32_cvtps2pd256(v)
#else
#define BNORM_WIDEN(v) __builtin_convertvector((v), d4)
#endif
#define BNORM_CVT(p) BNORM_WIDEN(BNORM_LD4(p))
// Gradients of vector type T: v (dy, loaded) masked as kMask says, with the output at ym
// (loaded with LD) or the x vector xv and coefficients m (center), a, b of the same width.
// BNORM_MASK8 for eight lanes (f8). (A macro: a function returning a vector would change
// the baseline ABI, -Wpsabi.)
#define BNORM_MASK_T(T, LD, kMask, v, ym, xv, m, a, b)                       \
  (kMask == MaskFrom::output  ? (LD(ym) > T{} ? (v) : T{})                   \
   : kMask == MaskFrom::input ? (((xv) - (m)) * (a) + (b) > T{} ? (v) : T{}) \
                              : (v))
#define BNORM_MASK8(kMask, v, ym, xv, m, a, b) BNORM_MASK_T(f8, BNORM_LD8, kMask, v, ym, xv, m, a, b)
// The lanes of a row's last, overlapping eight-float vector (len >= 8) that the vector
// loops did not cover: lane l counts iff l >= 8 - len % 8.
#define BNORM_TAIL_KEEP(len) (i8{0, 1, 2, 3, 4, 5, 6, 7} >= static_cast<int>(8 - (len) % 8))
// Software prefetch of row r + ahead (one channel's rows are `stride` apart, too short
// and too far apart for the hardware prefetcher): the whole row when it is short.
#define BNORM_PREFETCH_ROWS_AHEAD 2048
#define BNORM_HSUM(v) (((v)[0] + (v)[1]) + ((v)[2] + (v)[3]))
// The low and high four lanes of an f8, widened to double.
#define BNORM_WIDEN_LO(v) BNORM_WIDEN(__builtin_shufflevector((v), (v), 0, 1, 2, 3))
#define BNORM_WIDEN_HI(v) BNORM_WIDEN(__builtin_shufflevector((v), (v), 4, 5, 6, 7))

// d8: eight double accumulators, lane l summing what lane l of an f8 brings. With
// AVX-512 one 64-byte vector (one zmm op per step); below it a pair of d4 (two AVX or
// four SSE ops): GCC spills 64-byte vectors to the stack where the target lacks them.
// Lane for lane the same operations either way, so every level gives the same bits.
#ifdef BNORM_SIMD_AVX512
typedef double d8 __attribute__((vector_size(64)));
typedef double d8u __attribute__((vector_size(64), aligned(8), may_alias));
// Eight floats widened: one vcvtps2pd to a zmm (GCC 12 splits __builtin_convertvector;
// _mm512_cvtps_pd's undefined source trips -Wmaybe-uninitialized).
#define BNORM_WIDEN8(v) __builtin_ia32_cvtps2pd512_mask((v), d8{}, static_cast<unsigned char>(0xff), 4)
#define BNORM_LO4(a) __builtin_shufflevector((a), (a), 0, 1, 2, 3)
#define BNORM_HI4(a) __builtin_shufflevector((a), (a), 4, 5, 6, 7)
#define BNORM_LDD8(p) (*reinterpret_cast<const d8u*>(p))
#define BNORM_STD8(p, v) (*reinterpret_cast<d8u*>(p) = (v))
#define BNORM_SPLAT8(m) (d8{(m), (m), (m), (m), (m), (m), (m), (m)})
#else
struct d8 {
  d4 lo, hi;
};
[[gnu::always_inline]] inline d8 operator+(const d8& a, const d8& b) {
  return {a.lo + b.lo, a.hi + b.hi};
}
[[gnu::always_inline]] inline d8 operator-(const d8& a, const d8& b) {
  return {a.lo - b.lo, a.hi - b.hi};
}
[[gnu::always_inline]] inline d8 operator*(const d8& a, const d8& b) {
  return {a.lo * b.lo, a.hi * b.hi};
}
[[gnu::always_inline]] inline d8& operator+=(d8& a, const d8& b) {
  a.lo += b.lo;
  a.hi += b.hi;
  return a;
}
#define BNORM_WIDEN8(v) (d8{BNORM_WIDEN_LO(v), BNORM_WIDEN_HI(v)})
#define BNORM_LO4(a) ((a).lo)
#define BNORM_HI4(a) ((a).hi)
#define BNORM_LDD8(p) (d8{BNORM_LDD(p), BNORM_LDD((p) + 4)})
#define BNORM_STD8(p, v)             \
  do {                               \
    const d8 bnorm_a_ = (v);         \
    BNORM_STD((p), bnorm_a_.lo);     \
    BNORM_STD((p) + 4, bnorm_a_.hi); \
  } while (0)
#define BNORM_SPLAT8(m) (d8{d4{(m), (m), (m), (m)}, d4{(m), (m), (m), (m)}})
#endif
// The four-lane sum of a d8's halves: lo + hi.
#define BNORM_FOLD8(a) (BNORM_LO4(a) + BNORM_HI4(a))

// fw: the elementwise loops' vector, kW floats: one zmm (16) with AVX-512, else an f8
// (one ymm, or two xmm ops). The elementwise loops step 16 floats (a cache line) as
// 16 / kW vectors; each element's arithmetic is the same at any width, so every level
// gives the same bits.
#ifdef BNORM_SIMD_AVX512
typedef float fw __attribute__((vector_size(64)));
typedef float fwu __attribute__((vector_size(64), aligned(4), may_alias));
inline constexpr std::int64_t kW = 16;
#define BNORM_STREAMW(p, v) _mm512_stream_ps((p), reinterpret_cast<__m512>(v))
#else
typedef f8 fw;
typedef f8u fwu;
inline constexpr std::int64_t kW = 8;
#define BNORM_STREAMW(p, v) BNORM_STREAM8(p, v)
#endif
#define BNORM_LDW(p) (*reinterpret_cast<const fwu*>(p))
#define BNORM_STW(p, v) (*reinterpret_cast<fwu*>(p) = (v))
#define BNORM_SPLATW(v) (fw{} + (v))
// kW floats of gradient (BNORM_MASK_T on fw).
#define BNORM_MASKW(kMask, v, ym, xv, m, a, b) BNORM_MASK_T(fw, BNORM_LDW, kMask, v, ym, xv, m, a, b)
// for (w = 0; w < 16; w += kW): the vectors of one 16-float step.
#define BNORM_EACH_W(w) for (std::int64_t w = 0; w < 16; w += kW)
// The reductions' 32-float steps: v[w / kW] = f(i + w) + f(i + 16 + w) for each w of
// BNORM_EACH_W, then the eight-lane sum BNORM_COMBINE32(v) = (q0 + q2) + (q1 + q3) of the
// step's quarters q0..q3 (floats i, i + 8, i + 16, i + 24), whatever kW: with AVX-512 the
// low and high halves of the one zmm, else the two f8.
// (BNORM_LO8, BNORM_HI8: the halves of a 16-float vector.)
#define BNORM_LO8(v) __builtin_shufflevector((v), (v), 0, 1, 2, 3, 4, 5, 6, 7)
#define BNORM_HI8(v) __builtin_shufflevector((v), (v), 8, 9, 10, 11, 12, 13, 14, 15)
#ifdef BNORM_SIMD_AVX512
#define BNORM_COMBINE32(v) (BNORM_LO8((v)[0]) + BNORM_HI8((v)[0]))
#else
#define BNORM_COMBINE32(v) ((v)[0] + (v)[1])
#endif

// Stores eight floats at p: with kStream a non-temporal store (p must be 32-byte aligned;
// the output bypasses the caches, see stream_stores() in batch_norm_cpu.hpp), else a
// plain one. The stored values are the same either way. (A macro: vectors passed by
// value would change the baseline ABI.)
#ifdef BNORM_SIMD_AVX2
#define BNORM_STREAM8(p, v) _mm256_stream_ps((p), reinterpret_cast<__m256>(v))
#else
#define BNORM_STREAM8(p, v)                                                                                \
  do {                                                                                                     \
    const f8 bnorm_v_ = (v);                                                                               \
    _mm_stream_ps((p), reinterpret_cast<__m128>(__builtin_shufflevector(bnorm_v_, bnorm_v_, 0, 1, 2, 3))); \
    _mm_stream_ps((p) + 4,                                                                                 \
                  reinterpret_cast<__m128>(__builtin_shufflevector(bnorm_v_, bnorm_v_, 4, 5, 6, 7)));      \
  } while (0)
#endif
#define BNORM_STORE8(kStream, p, v) \
  do {                              \
    if constexpr (kStream)          \
      BNORM_STREAM8(p, v);          \
    else                            \
      BNORM_ST8(p, v);              \
  } while (0)
// The same for kW floats (p 64-byte aligned when streaming with AVX-512).
#define BNORM_STOREW(kStream, p, v) \
  do {                              \
    if constexpr (kStream)          \
      BNORM_STREAMW(p, v);          \
    else                            \
      BNORM_STW(p, v);              \
  } while (0)

// Orders the non-temporal stores of this thread before whatever follows (a barrier, the
// return to the caller).
template <bool kStream>
inline void stream_fence() {
  if constexpr (kStream) _mm_sfence();
}

// Elements to handle one by one before out + i is aligned to a vector (kW floats; at most
// len; none for short rows): the elementwise loops align their stores (a store split
// across two cache lines costs twice); reductions never depend on alignment.
inline std::int64_t head_of(const float* out, std::int64_t len, bool must_align = false) {
  if (len < 64 && !must_align) return 0;  // short rows (7x7 maps): peeling costs more than split stores
  const std::int64_t mis = static_cast<std::int64_t>((reinterpret_cast<std::uintptr_t>(out) / 4) & (kW - 1));
  const std::int64_t head = (kW - mis) & (kW - 1);
  return head < len ? head : len;
}

// Elements before out + i starts a 64-byte cache line (at most len). The channels-first
// loops stream only whole lines of a row (16 floats from a line start) and store the
// partial lines at the row's ends plainly: a non-temporal store of part of a line that
// the next row completes much later flushes a half-filled write-combining buffer (rows of
// a std::vector, 16 bytes off a line, made forward_inference 3x slower than a copy).
inline std::int64_t line_head_of(const float* out, std::int64_t len) {
  const std::int64_t mis = static_cast<std::int64_t>((reinterpret_cast<std::uintptr_t>(out) / 4) & 15);
  const std::int64_t head = (16 - mis) & 15;
  return head < len ? head : len;
}

// The ReLU's gradient of element i (output y, or recomputed from x with center, alpha,
// shift).
template <MaskFrom kMask>
inline float masked(const float* dy, const float* x, const float* y, float center, float alpha, float shift,
                    std::int64_t i) {
  if constexpr (kMask == MaskFrom::output) return y[i] > 0.0f ? dy[i] : 0.0f;
  if constexpr (kMask == MaskFrom::input) return (x[i] - center) * alpha + shift > 0.0f ? dy[i] : 0.0f;
  return dy[i];
}

// Calls f(std::integral_constant<MaskFrom, K>{}) for the mask kind `from`: the one switch
// from a run-time mask kind to the loops compiled per kind.
template <typename F>
inline void with_mask_kind(MaskFrom from, F&& f) {
  switch (from) {
    case MaskFrom::output:
      return f(std::integral_constant<MaskFrom, MaskFrom::output>{});
    case MaskFrom::input:
      return f(std::integral_constant<MaskFrom, MaskFrom::input>{});
    case MaskFrom::none:
      break;
  }
  f(std::integral_constant<MaskFrom, MaskFrom::none>{});
}

// ---- channels-first blocks -----------------------------------------------------------

// Rows of one channel ahead of the current one, so that about 2 KiB are in flight (len:
// the floats read per row, over all arrays), for a block of `rows` rows `stride` floats
// apart (row_len: the floats of one row). A block spanning under kInCacheBytes gets none (the
// result is `rows`, past its end): such a tensor is in cache, and the prefetches only
// cost (32x16x8x8 at 1 thread, harness minima: backward_inference 8.7 -> 7.0 us,
// backward_training 11.7 -> 10.7 us, forward_training 6.9 -> 6.4 us).
inline std::int64_t rows_ahead(std::int64_t len, std::int64_t rows, std::int64_t stride,
                               std::int64_t row_len) {
  if (((rows - 1) * stride + row_len) * 4 < kInCacheBytes) return rows;
  const std::int64_t bytes = len * 4;
  return bytes >= BNORM_PREFETCH_ROWS_AHEAD ? 1 : (BNORM_PREFETCH_ROWS_AHEAD + bytes - 1) / bytes;
}

// Prefetches row r + ahead of a block (for reading, or writing with kWrite), the whole
// row when it is at most 4 KiB (longer rows stream well by themselves).
template <bool kWrite = false>
inline void prefetch_row(const float* base, std::int64_t r, std::int64_t ahead, std::int64_t rows,
                         std::int64_t stride, std::int64_t len) {
  if (r + ahead >= rows || len > 1024) return;
  const char* p = reinterpret_cast<const char*>(base + (r + ahead) * stride);
  for (std::int64_t b = 0; b < len * 4; b += 64) __builtin_prefetch(p + b, kWrite ? 1 : 0, 3);
}

// Rows of one row ahead (ahead == 1) and at most 1024 floats are prefetched along the
// current row instead: line i of the next row while line i of this one is read. A whole
// row at its start is a burst of up to 128 prefetches (two or three arrays) that stalls
// on the line fill buffers: 32x128x28x28 backward_training at 1 thread, 1.76 -> 1.55 ms
// (interleaved harness runs; 2 threads 0.89 -> 0.78 ms).
inline bool spread_prefetch(std::int64_t ahead, std::int64_t len) {
  return ahead == 1 && len <= 1024;
}

// Statistics of a block in double, by two passes (the second while the block is in
// cache): sum x, then sum (x - block mean)^2 with the block mean in double, so an offset
// far above the spread costs no accuracy. Four vector accumulators (16 lanes) per pass.
inline void moments_rows(const float* x, std::int64_t rows, std::int64_t stride, std::int64_t len,
                         double* out_sum, double* out_m2) {
  const std::int64_t ahead = rows_ahead(len, rows, stride, len);
  if (ahead < rows)  // the first rows (none for a block in cache)
    for (std::int64_t r = 0; r < ahead; ++r) prefetch_row(x, r, 0, rows, stride, len);
  d4 a0{}, a1{}, a2{}, a3{};
  double t = 0.0;
  for (std::int64_t r = 0; r < rows; ++r) {
    prefetch_row(x, r, ahead, rows, stride, len);
    const float* p = x + r * stride;
    std::int64_t i = 0;
    for (; i + 16 <= len; i += 16) {
      a0 += BNORM_CVT(p + i);
      a1 += BNORM_CVT(p + i + 4);
      a2 += BNORM_CVT(p + i + 8);
      a3 += BNORM_CVT(p + i + 12);
    }
    for (; i + 4 <= len; i += 4) a0 += BNORM_CVT(p + i);
    for (; i < len; ++i) t += static_cast<double>(p[i]);
  }
  const d4 s = (a0 + a1) + (a2 + a3);
  const double sum = BNORM_HSUM(s) + t;
  const double mean = sum / static_cast<double>(rows * len);
  const d4 m = {mean, mean, mean, mean};
  a0 = a1 = a2 = a3 = d4{};
  t = 0.0;
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* p = x + r * stride;
    std::int64_t i = 0;
    for (; i + 16 <= len; i += 16) {
      const d4 e0 = BNORM_CVT(p + i) - m, e1 = BNORM_CVT(p + i + 4) - m;
      const d4 e2 = BNORM_CVT(p + i + 8) - m, e3 = BNORM_CVT(p + i + 12) - m;
      a0 += e0 * e0;
      a1 += e1 * e1;
      a2 += e2 * e2;
      a3 += e3 * e3;
    }
    for (; i + 4 <= len; i += 4) {
      const d4 e = BNORM_CVT(p + i) - m;
      a0 += e * e;
    }
    for (; i < len; ++i) {
      const double e = static_cast<double>(p[i]) - mean;
      t += e * e;
    }
  }
  const d4 q = (a0 + a1) + (a2 + a3);
  *out_sum = sum;
  *out_m2 = BNORM_HSUM(q) + t;
}

// Shifted statistics of a block in one pass: s1 = sum d and s2 = sum d^2 with
// d = x - pivot (in float). Partial sums of up to four vectors are taken in float, then
// widened into double accumulators, so each float sum has at most four terms: with the
// pivot within about a standard deviation of the block mean, the block's mean and M2
// (s2 - s1^2 / n) are accurate to about 1e-7 relative, not far from a double two-pass
// computation (the caller checks the pivot and falls back to moments_rows otherwise).
// A row of at least 8 floats ends with an overlapping vector whose already counted lanes
// are zeroed, so short rows (7x7, 8x8 maps) need no scalar tail.
inline void shifted_rows(const float* x, std::int64_t rows, std::int64_t stride, std::int64_t len,
                         float pivot, double* out_s1, double* out_s2) {
  const std::int64_t ahead = rows_ahead(len, rows, stride, len);
  if (ahead < rows)  // the first rows (none for a block in cache)
    for (std::int64_t r = 0; r < ahead; ++r) prefetch_row(x, r, 0, rows, stride, len);
  const f8 p = {pivot, pivot, pivot, pivot, pivot, pivot, pivot, pivot};
  const fw pw = BNORM_SPLATW(pivot);
  const i8 keep = BNORM_TAIL_KEEP(len);
  d8 a{}, b{};
  double t1 = 0.0, t2 = 0.0;
  const bool spread = spread_prefetch(ahead, len);
  for (std::int64_t r = 0; r < rows; ++r) {
    if (!spread) prefetch_row(x, r, ahead, rows, stride, len);
    const bool pf = spread && r + 1 < rows;
    const float* xr = x + r * stride;
    std::int64_t i = 0;
    for (; i + 32 <= len; i += 32) {
      if (pf) {  // lines i and i + 16 of the next row
        __builtin_prefetch(xr + stride + i, 0, 3);
        __builtin_prefetch(xr + stride + i + 16, 0, 3);
      }
      fw sv[16 / kW], qv[16 / kW];
      BNORM_EACH_W(w) {
        const fw d0 = BNORM_LDW(xr + i + w) - pw, d1 = BNORM_LDW(xr + i + 16 + w) - pw;
        sv[w / kW] = d0 + d1;
        qv[w / kW] = d0 * d0 + d1 * d1;
      }
      a += BNORM_WIDEN8(BNORM_COMBINE32(sv));
      b += BNORM_WIDEN8(BNORM_COMBINE32(qv));
    }
    for (; i + 8 <= len; i += 8) {
      const f8 d = BNORM_LD8(xr + i) - p;
      const f8 q = d * d;
      a += BNORM_WIDEN8(d);
      b += BNORM_WIDEN8(q);
    }
    if (i < len && len >= 8) {
      const f8 d = keep ? BNORM_LD8(xr + len - 8) - p : f8{};
      const f8 q = d * d;
      a += BNORM_WIDEN8(d);
      b += BNORM_WIDEN8(q);
    } else {
      for (; i < len; ++i) {
        const float d = xr[i] - pivot;
        t1 += static_cast<double>(d);
        t2 += static_cast<double>(d * d);
      }
    }
  }
  const d4 sa = BNORM_FOLD8(a), sb = BNORM_FOLD8(b);
  *out_s1 = BNORM_HSUM(sa) + t1;
  *out_s2 = BNORM_HSUM(sb) + t2;
}

// sum g and sum g * (x - mean) over the block (g = dy, or masked as kMask says), as
// shifted_rows takes its sums: e = x - mean and g * e in float (x - mean is exact for x
// within a factor 2 of the float mean, Sterbenz), partial sums of up to four vectors in
// float, widened into double accumulators. (The double accumulators alone, one widening
// and one dependent double add per 8 elements, held the loop to 4 cycles per vector:
// 32x16x8x8 backward_training at 1 thread spent 52 % of its 8.6 us here.) A row of at
// least 8 floats ends with an overlapping vector whose already counted lanes are zeroed.
// With kScale also dx = dy * scale (the inference backward, one pass); with kStream its
// whole lines are streamed (line_head_of) and the call ends with a fence.
template <MaskFrom kMask, bool kScale, bool kStream = false>
inline void grad_rows_t(const float* dy, const float* x, const RowsMask& mask, float* dx, std::int64_t rows,
                        std::int64_t stride, std::int64_t len, float mean, float scale, double* out_sum,
                        double* out_dotp) {
  d8 a{}, b{};
  double ta = 0.0, tb = 0.0;
  const f8 m = {mean, mean, mean, mean, mean, mean, mean, mean};
  const f8 sc = {scale, scale, scale, scale, scale, scale, scale, scale};
  const float* ymask = mask.y;
  const float ce = mask.center, al = mask.alpha, sh = mask.shift;
  const f8 mc8 = {ce, ce, ce, ce, ce, ce, ce, ce};
  const f8 ma8 = {al, al, al, al, al, al, al, al};
  const f8 mb8 = {sh, sh, sh, sh, sh, sh, sh, sh};
  const fw mw = BNORM_SPLATW(mean), mcw = BNORM_SPLATW(ce), maw = BNORM_SPLATW(al), mbw = BNORM_SPLATW(sh);
  const i8 keep = BNORM_TAIL_KEEP(len);
  const std::int64_t ahead = rows_ahead(2 * len, rows, stride, len);
  const bool spread = spread_prefetch(ahead, len);
  for (std::int64_t r = 0; r < rows; ++r) {
    if (!spread) {
      prefetch_row(dy, r, ahead, rows, stride, len);
      prefetch_row(x, r, ahead, rows, stride, len);
      if constexpr (kMask == MaskFrom::output) prefetch_row(ymask, r, ahead, rows, stride, len);
      if constexpr (kScale && !kStream) prefetch_row<true>(dx, r, ahead, rows, stride, len);
    }
    const bool pf = spread && r + 1 < rows;
    const std::int64_t o = r * stride;
    const float* g = dy + o;
    const float* xr = x + o;
    const float* yr = kMask == MaskFrom::output ? ymask + o : nullptr;
    std::int64_t i = 0;
    for (; i + 32 <= len; i += 32) {
      if (pf) {  // lines i and i + 16 of the next row
        __builtin_prefetch(g + stride + i, 0, 3);
        __builtin_prefetch(xr + stride + i, 0, 3);
        __builtin_prefetch(g + stride + i + 16, 0, 3);
        __builtin_prefetch(xr + stride + i + 16, 0, 3);
        if constexpr (kMask == MaskFrom::output) {
          __builtin_prefetch(yr + stride + i, 0, 3);
          __builtin_prefetch(yr + stride + i + 16, 0, 3);
        }
        if constexpr (kScale && !kStream) {
          __builtin_prefetch(dx + o + stride + i, 1, 3);
          __builtin_prefetch(dx + o + stride + i + 16, 1, 3);
        }
      }
      [[maybe_unused]] fw sv[16 / kW], pv[16 / kW];
      BNORM_EACH_W(w) {
        const std::int64_t i0 = i + w, i1 = i + 16 + w;
        const fw x0 = BNORM_LDW(xr + i0), x1 = BNORM_LDW(xr + i1);
        const fw g0 = BNORM_MASKW(kMask, BNORM_LDW(g + i0), yr + i0, x0, mcw, maw, mbw);
        const fw g1 = BNORM_MASKW(kMask, BNORM_LDW(g + i1), yr + i1, x1, mcw, maw, mbw);
        sv[w / kW] = g0 + g1;
        pv[w / kW] = g0 * (x0 - mw) + g1 * (x1 - mw);
      }
      // ([[maybe_unused]]: GCC 12 misses the uses inside __builtin_shufflevector in a
      // template, -Wunused-but-set-variable.)
      [[maybe_unused]] const f8 s = BNORM_COMBINE32(sv);
      [[maybe_unused]] const f8 p = BNORM_COMBINE32(pv);
      a += BNORM_WIDEN8(s);
      b += BNORM_WIDEN8(p);
    }
    for (; i + 8 <= len; i += 8) {
      if (pf && (i & 15) == 0) {  // line i of the next row
        __builtin_prefetch(g + stride + i, 0, 3);
        __builtin_prefetch(xr + stride + i, 0, 3);
        if constexpr (kMask == MaskFrom::output) __builtin_prefetch(yr + stride + i, 0, 3);
        if constexpr (kScale && !kStream) __builtin_prefetch(dx + o + stride + i, 1, 3);
      }
      const f8 xv = BNORM_LD8(xr + i);
      const f8 gv = BNORM_MASK8(kMask, BNORM_LD8(g + i), yr + i, xv, mc8, ma8, mb8);
      [[maybe_unused]] const f8 p = gv * (xv - m);
      a += BNORM_WIDEN8(gv);
      b += BNORM_WIDEN8(p);
    }
    if (i < len && len >= 8) {
      const std::int64_t t = len - 8;
      const f8 xv = BNORM_LD8(xr + t);
      const f8 gv = BNORM_MASK8(kMask, BNORM_LD8(g + t), yr + t, xv, mc8, ma8, mb8);
      [[maybe_unused]] const f8 gk = keep ? gv : f8{};
      [[maybe_unused]] const f8 p = keep ? gv * (xv - m) : f8{};
      a += BNORM_WIDEN8(gk);
      b += BNORM_WIDEN8(p);
    } else {
      for (; i < len; ++i) {
        const float gi = masked<kMask>(g, xr, yr, ce, al, sh, i);
        ta += static_cast<double>(gi);
        tb += static_cast<double>(gi * (xr[i] - mean));
      }
    }
    if constexpr (kScale) {  // dx = dy * scale, the row still in L1
      float* d = dx + o;
      const std::int64_t head = kStream ? line_head_of(d, len) : head_of(d, len);
      i = 0;
      for (; i < head; ++i) d[i] = g[i] * scale;
      const fw scw = BNORM_SPLATW(scale);
      for (; i + 16 <= len; i += 16)  // whole lines when kStream
        BNORM_EACH_W(w) BNORM_STOREW(kStream, d + i + w, BNORM_LDW(g + i + w) * scw);
      for (; i + 8 <= len; i += 8) BNORM_ST8(d + i, BNORM_LD8(g + i) * sc);
      for (; i < len; ++i) d[i] = g[i] * scale;
    }
  }
  stream_fence<kStream>();
  const d4 sa = BNORM_FOLD8(a), sb = BNORM_FOLD8(b);
  *out_sum = BNORM_HSUM(sa) + ta;
  *out_dotp = BNORM_HSUM(sb) + tb;
}

inline void grad_rows(const float* dy, const float* x, const RowsMask& mask, std::int64_t rows,
                      std::int64_t stride, std::int64_t len, float mean, double* out_sum, double* out_dotp) {
  with_mask_kind(mask.from, [&](auto kind) {
    grad_rows_t<decltype(kind)::value, false>(dy, x, mask, nullptr, rows, stride, len, mean, 0.0f, out_sum,
                                              out_dotp);
  });
}

inline void grad_scale_rows(const float* dy, const float* x, float* dx, std::int64_t rows,
                            std::int64_t stride, std::int64_t len, float mean, float scale, double* out_sum,
                            double* out_dotp, bool stream) {
  if (stream)
    grad_rows_t<MaskFrom::none, true, true>(dy, x, RowsMask{}, dx, rows, stride, len, mean, scale, out_sum,
                                            out_dotp);
  else
    grad_rows_t<MaskFrom::none, true>(dy, x, RowsMask{}, dx, rows, stride, len, mean, scale, out_sum,
                                      out_dotp);
}

// y = (x - center) * alpha + shift over the block (then the ReLU), with f's coefficients. y may alias x. With
// kStream only whole lines are streamed (line_head_of), and the caller orders the non-temporal stores when
// its elementwise work ends (end_streaming in batch_norm_cpu.hpp), not every call: a fence per row drains the
// write-combining buffers that often (forward_inference 32x512x28x28 from a std::vector at 1 thread: 10.0
// -> 7.3 ms without it, 3.6 ms with whole lines only, as fast as from 64-byte aligned buffers; 4.3 ms plain).
// A row of at least
// 8 floats ends with an overlapping vector when y != x (it rewrites a few outputs with the
// same values); in place, the tail is scalar.
template <bool kRelu, bool kStream>
inline void affine_rows_t(const float* x, float* y, std::int64_t rows, std::int64_t stride, std::int64_t len,
                          const Fold& f) {
  const float center = f.center, alpha = f.alpha, shift = f.shift;
  const f8 m = {center, center, center, center, center, center, center, center};
  const f8 a = {alpha, alpha, alpha, alpha, alpha, alpha, alpha, alpha};
  const f8 b = {shift, shift, shift, shift, shift, shift, shift, shift};
  const fw mw = BNORM_SPLATW(center), aw = BNORM_SPLATW(alpha), bw = BNORM_SPLATW(shift);
  const std::int64_t ahead = rows_ahead(len, rows, stride, len);
  // (Not when streaming: the overlap could rewrite part of a streamed line plainly, which
  // costs a write-combining flush and a line read; 6.9 ms against 3.6 ms in the case above.)
  const bool overlap_tail = len >= 8 && x != y && !kStream;
  const bool spread = !kStream && rows > 1 && spread_prefetch(ahead, len);
  for (std::int64_t r = 0; r < rows; ++r) {
    if (!kStream && rows > 1 && !spread) prefetch_row<true>(y, r, ahead, rows, stride, len);
    const bool pf = spread && r + 1 < rows;
    const float* xr = x + r * stride;
    float* yr = y + r * stride;
    std::int64_t i = 0;
    for (const std::int64_t head = kStream ? line_head_of(yr, len) : head_of(yr, len); i < head; ++i) {
      const float v = (xr[i] - center) * alpha + shift;
      yr[i] = kRelu && v < 0.0f ? 0.0f : v;
    }
    for (; i + 16 <= len; i += 16) {  // whole lines when kStream
      if (pf) __builtin_prefetch(yr + stride + i, 1, 3);
      BNORM_EACH_W(w) {
        fw v = (BNORM_LDW(xr + i + w) - mw) * aw + bw;
        if constexpr (kRelu) v = v < fw{} ? fw{} : v;
        BNORM_STOREW(kStream, yr + i + w, v);
      }
    }
    for (; i + 8 <= len; i += 8) {  // part of a line: plain
      f8 v = (BNORM_LD8(xr + i) - m) * a + b;
      if constexpr (kRelu) v = v < f8{} ? f8{} : v;
      BNORM_ST8(yr + i, v);
    }
    if (i < len && overlap_tail) {
      f8 v = (BNORM_LD8(xr + len - 8) - m) * a + b;
      if constexpr (kRelu) v = v < f8{} ? f8{} : v;
      BNORM_ST8(yr + len - 8, v);
      continue;
    }
    for (; i < len; ++i) {
      const float v = (xr[i] - center) * alpha + shift;
      yr[i] = kRelu && v < 0.0f ? 0.0f : v;
    }
  }
}

inline void affine_rows(const float* x, float* y, std::int64_t rows, std::int64_t stride, std::int64_t len,
                        const Fold& f, bool relu, bool stream) {
  if (stream) {
    if (relu)
      affine_rows_t<true, true>(x, y, rows, stride, len, f);
    else
      affine_rows_t<false, true>(x, y, rows, stride, len, f);
  } else {
    if (relu)
      affine_rows_t<true, false>(x, y, rows, stride, len, f);
    else
      affine_rows_t<false, false>(x, y, rows, stride, len, f);
  }
}

// Rows r0 <= r < r1 of S floats, row r in channel r % C, with per-channel coefficients f[c].
inline void affine_cyclic(const float* x, float* y, std::int64_t r0, std::int64_t r1, std::int64_t C,
                          std::int64_t S, const Fold* f, bool relu, bool stream) {
  std::int64_t c = r0 % C;
  for (std::int64_t r = r0; r < r1; ++r) {
    affine_rows(x + r * S, y + r * S, 1, S, S, f[c], relu, stream);
    if (++c == C) c = 0;
  }
}

// dx = (g - grad_mean - (x - mean) * k) * scale over the block; rows of at least 8 floats
// end with an overlapping vector (dx never aliases an input). Streamed stores are ordered
// by the caller (end_streaming), as in affine_rows_t.
template <MaskFrom kMask, bool kStream>
inline void dx_rows_t(const float* dy, const float* x, const RowsMask& mask, float* dx, std::int64_t rows,
                      std::int64_t stride, std::int64_t len, float mean, float grad_mean, float k,
                      float scale) {
  const float* ymask = mask.y;
  const float mc_s = mask.center, ma_s = mask.alpha, mb_s = mask.shift;
  const f8 mc = {mc_s, mc_s, mc_s, mc_s, mc_s, mc_s, mc_s, mc_s};
  const f8 ma = {ma_s, ma_s, ma_s, ma_s, ma_s, ma_s, ma_s, ma_s};
  const f8 mb = {mb_s, mb_s, mb_s, mb_s, mb_s, mb_s, mb_s, mb_s};
  const f8 m = {mean, mean, mean, mean, mean, mean, mean, mean};
  const f8 gm = {grad_mean, grad_mean, grad_mean, grad_mean, grad_mean, grad_mean, grad_mean, grad_mean};
  const f8 kk = {k, k, k, k, k, k, k, k};
  const f8 sc = {scale, scale, scale, scale, scale, scale, scale, scale};
  const fw mcw = BNORM_SPLATW(mc_s), maw = BNORM_SPLATW(ma_s), mbw = BNORM_SPLATW(mb_s);
  const fw mw = BNORM_SPLATW(mean), gmw = BNORM_SPLATW(grad_mean), kw = BNORM_SPLATW(k);
  const fw scw = BNORM_SPLATW(scale);
  const std::int64_t ahead = rows_ahead(len, rows, stride, len);
  const bool spread = !kStream && rows > 1 && spread_prefetch(ahead, len);
  for (std::int64_t r = 0; r < rows; ++r) {
    if (!kStream && rows > 1 && !spread) prefetch_row<true>(dx, r, ahead, rows, stride, len);
    const bool pf = spread && r + 1 < rows;
    const std::int64_t o = r * stride;
    const float* yr = kMask == MaskFrom::output ? ymask + o : nullptr;
    std::int64_t i = 0;
    for (const std::int64_t head = kStream ? line_head_of(dx + o, len) : head_of(dx + o, len); i < head;
         ++i) {
      const float g = masked<kMask>(dy + o, x + o, yr, mc_s, ma_s, mb_s, i);
      dx[o + i] = ((g - grad_mean) - (x[o + i] - mean) * k) * scale;
    }
    for (; i + 16 <= len; i += 16) {  // whole lines when kStream
      if (pf) __builtin_prefetch(dx + o + stride + i, 1, 3);
      BNORM_EACH_W(w) {
        const std::int64_t e = o + i + w;
        const fw xv = BNORM_LDW(x + e);
        const fw g = BNORM_MASKW(kMask, BNORM_LDW(dy + e), yr + i + w, xv, mcw, maw, mbw);
        BNORM_STOREW(kStream, dx + e, ((g - gmw) - (xv - mw) * kw) * scw);
      }
    }
    for (; i + 8 <= len; i += 8) {  // part of a line: plain
      const f8 xv = BNORM_LD8(x + o + i);
      const f8 g = BNORM_MASK8(kMask, BNORM_LD8(dy + o + i), yr + i, xv, mc, ma, mb);
      BNORM_ST8(dx + o + i, ((g - gm) - (xv - m) * kk) * sc);
    }
    if (i < len && len >= 8 && !kStream) {  // (not when streaming: see affine_rows_t)
      const std::int64_t t = o + len - 8;
      const f8 xv = BNORM_LD8(x + t);
      const f8 g = BNORM_MASK8(kMask, BNORM_LD8(dy + t), yr + len - 8, xv, mc, ma, mb);
      BNORM_ST8(dx + t, ((g - gm) - (xv - m) * kk) * sc);
      continue;
    }
    for (; i < len; ++i) {
      const float g = masked<kMask>(dy + o, x + o, yr, mc_s, ma_s, mb_s, i);
      dx[o + i] = ((g - grad_mean) - (x[o + i] - mean) * k) * scale;
    }
  }
}

template <MaskFrom kMask>
inline void dx_rows_m(const float* dy, const float* x, const RowsMask& mask, float* dx, std::int64_t rows,
                      std::int64_t stride, std::int64_t len, float mean, float grad_mean, float k,
                      float scale, bool stream) {
  if (stream)
    dx_rows_t<kMask, true>(dy, x, mask, dx, rows, stride, len, mean, grad_mean, k, scale);
  else
    dx_rows_t<kMask, false>(dy, x, mask, dx, rows, stride, len, mean, grad_mean, k, scale);
}

inline void dx_rows(const float* dy, const float* x, const RowsMask& mask, float* dx, std::int64_t rows,
                    std::int64_t stride, std::int64_t len, float mean, float grad_mean, float k, float scale,
                    bool stream) {
  with_mask_kind(mask.from, [&](auto kind) {
    dx_rows_m<decltype(kind)::value>(dy, x, mask, dx, rows, stride, len, mean, grad_mean, k, scale, stream);
  });
}

// Rows r0 <= r < r1 of S floats, row r in channel r % C: dx_rows with channel c's mean,
// coefficients g[c] and mask masks[c] (y, if any, at the tensor's start). Streamed stores
// are ordered by the caller (end_streaming).
template <MaskFrom kMask, bool kStream>
inline void dx_cyclic_t(const float* dy, const float* x, const RowsMask* masks, float* dx, std::int64_t r0,
                        std::int64_t r1, std::int64_t C, std::int64_t S, const float* mean,
                        const TrainingGrad* g) {
  std::int64_t c = r0 % C;
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::int64_t o = r * S;
    dx_rows_t<kMask, kStream>(dy + o, x + o, masks[c].at(o), dx + o, 1, S, S, mean[c], g[c].grad_mean, g[c].k,
                              g[c].scale);
    if (++c == C) c = 0;
  }
}

template <MaskFrom kMask>
inline void dx_cyclic_m(const float* dy, const float* x, const RowsMask* masks, float* dx, std::int64_t r0,
                        std::int64_t r1, std::int64_t C, std::int64_t S, const float* mean,
                        const TrainingGrad* g, bool stream) {
  if (stream)
    dx_cyclic_t<kMask, true>(dy, x, masks, dx, r0, r1, C, S, mean, g);
  else
    dx_cyclic_t<kMask, false>(dy, x, masks, dx, r0, r1, C, S, mean, g);
}

// (All channels' masks are of one kind: masks[r0 % C]'s.)
inline void dx_cyclic(const float* dy, const float* x, const RowsMask* masks, float* dx, std::int64_t r0,
                      std::int64_t r1, std::int64_t C, std::int64_t S, const float* mean,
                      const TrainingGrad* g, bool stream) {
  if (r0 >= r1) return;
  with_mask_kind(masks[r0 % C].from, [&](auto kind) {
    dx_cyclic_m<decltype(kind)::value>(dy, x, masks, dx, r0, r1, C, S, mean, g, stream);
  });
}

// ---- channels-last blocks (period P) -------------------------------------------------

// Channels-last blocks are taken in rounds of kRound periods (a round is in L1).
inline constexpr int kRound = 8;

// The tiles of the channels-last reductions: kT = 8 lanes (V = f8), or 16 with AVX-512
// (V = fw); each lane's sums are the same in either. BNORM_LDV loads a V from any
// address through VU, the tile's unaligned type (declared in each tile function: the
// aligned(4) of f8u, fwu would not survive as a template argument); BNORM_ADD_WIDENED
// adds V's eight-lane groups, widened, to d8 accumulators acc[0], acc[1].
#define BNORM_VU typedef float VU __attribute__((vector_size(sizeof(V)), aligned(4), may_alias))
#define BNORM_LDV(p) (*reinterpret_cast<const VU*>(p))
#define BNORM_ADD_WIDENED(acc, v)             \
  do {                                        \
    if constexpr (sizeof(V) == 32) {          \
      (acc)[0] += BNORM_WIDEN8(v);            \
    } else {                                  \
      (acc)[0] += BNORM_WIDEN8(BNORM_LO8(v)); \
      (acc)[1] += BNORM_WIDEN8(BNORM_HI8(v)); \
    }                                         \
  } while (0)

// shifted_flat_t's sums of the tile of lanes [j, j + kT) over `periods` periods of the
// round at `base`: partial sums of four periods in float, widened into acc1, acc2.
template <typename V>
[[gnu::always_inline]] inline void shifted_flat_tile(const float* base, std::int64_t P, std::int64_t periods,
                                                     std::int64_t j, const float* pivot, double* acc1,
                                                     double* acc2) {
  constexpr std::int64_t kT = sizeof(V) / 4;
  BNORM_VU;
  const V p = BNORM_LDV(pivot + j);
  d8 a[kT / 8], b[kT / 8];
  for (std::int64_t h = 0; h < kT / 8; ++h) {
    a[h] = BNORM_LDD8(acc1 + j + 8 * h);
    b[h] = BNORM_LDD8(acc2 + j + 8 * h);
  }
  std::int64_t q = 0;
  for (; q + 4 <= periods; q += 4) {
    const float* r = base + q * P + j;
    const V d0 = BNORM_LDV(r) - p, d1 = BNORM_LDV(r + P) - p;
    const V d2 = BNORM_LDV(r + 2 * P) - p, d3 = BNORM_LDV(r + 3 * P) - p;
    [[maybe_unused]] const V sum = (d0 + d1) + (d2 + d3);
    [[maybe_unused]] const V sq = (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
    BNORM_ADD_WIDENED(a, sum);
    BNORM_ADD_WIDENED(b, sq);
  }
  for (; q < periods; ++q) {
    [[maybe_unused]] const V d = BNORM_LDV(base + q * P + j) - p;
    [[maybe_unused]] const V sq = d * d;
    BNORM_ADD_WIDENED(a, d);
    BNORM_ADD_WIDENED(b, sq);
  }
  for (std::int64_t h = 0; h < kT / 8; ++h) {
    BNORM_STD8(acc1 + j + 8 * h, a[h]);
    BNORM_STD8(acc2 + j + 8 * h, b[h]);
  }
}

// grad_flat_t's sums of the tile of lanes [j, j + kT) over `periods` periods from
// element o (= the round's start + j): g and g * (x - mean) in float, partial sums of four
// periods, widened and added to acc_g, acc_p.
template <MaskFrom kMask, typename V>
[[gnu::always_inline]] inline void grad_flat_tile(const float* dy, const float* x, const FlatMask& mask,
                                                  std::int64_t o, std::int64_t P, std::int64_t periods,
                                                  std::int64_t j, const float* mean, double* acc_g,
                                                  double* acc_p) {
  constexpr std::int64_t kT = sizeof(V) / 4;
  BNORM_VU;
  const float* ymask = mask.y;
  const V m = BNORM_LDV(mean + j);
  V mc{}, ma{}, mb{};
  if constexpr (kMask == MaskFrom::input) {
    mc = BNORM_LDV(mask.center + j);
    ma = BNORM_LDV(mask.alpha + j);
    mb = BNORM_LDV(mask.shift + j);
  }
// The gradient of V lanes at element e (x loaded as xv).
#define BNORM_GRADV(e, xv) BNORM_MASK_T(V, BNORM_LDV, kMask, BNORM_LDV(dy + (e)), ymask + (e), xv, mc, ma, mb)
  d8 ga[kT / 8] = {}, pa[kT / 8] = {};
  std::int64_t q = 0;
  for (; q + 4 <= periods; q += 4) {
    const std::int64_t o0 = o + q * P, o1 = o0 + P, o2 = o1 + P, o3 = o2 + P;
    const V x0 = BNORM_LDV(x + o0), x1 = BNORM_LDV(x + o1), x2 = BNORM_LDV(x + o2), x3 = BNORM_LDV(x + o3);
    const V g0 = BNORM_GRADV(o0, x0), g1 = BNORM_GRADV(o1, x1), g2 = BNORM_GRADV(o2, x2),
            g3 = BNORM_GRADV(o3, x3);
    [[maybe_unused]] const V sg = (g0 + g1) + (g2 + g3);
    [[maybe_unused]] const V sp = (g0 * (x0 - m) + g1 * (x1 - m)) + (g2 * (x2 - m) + g3 * (x3 - m));
    BNORM_ADD_WIDENED(ga, sg);
    BNORM_ADD_WIDENED(pa, sp);
  }
  for (; q < periods; ++q) {
    const std::int64_t oq = o + q * P;
    const V xv = BNORM_LDV(x + oq);
    [[maybe_unused]] const V gv = BNORM_GRADV(oq, xv);
    [[maybe_unused]] const V sp = gv * (xv - m);
    BNORM_ADD_WIDENED(ga, gv);
    BNORM_ADD_WIDENED(pa, sp);
  }
  for (std::int64_t h = 0; h < kT / 8; ++h) {
    BNORM_STD8(acc_g + j + 8 * h, BNORM_LDD8(acc_g + j + 8 * h) + ga[h]);
    BNORM_STD8(acc_p + j + 8 * h, BNORM_LDD8(acc_p + j + 8 * h) + pa[h]);
  }
}
#undef BNORM_GRADV
#undef BNORM_VU
#undef BNORM_LDV
#undef BNORM_ADD_WIDENED

// Shifted statistics of a channels-last block in one pass, per lane j (i = j (mod P)):
// acc1[j] += sum d, acc2[j] += sum d^2 with d = x[i] - pivot[j] in float; partial sums
// of up to four periods are taken in float, then widened into the double accumulators
// (see shifted_rows for the accuracy). The block is taken in rounds of kRound periods
// (a round is in L1), in tiles of 8 lanes. Only the lanes [j0, j1) (multiples of 8, j1 <= P)
// are touched: every lane's sums are the same whatever range it is taken in, so a block
// may be split among threads by lanes (shifted_flat_lanes). P is a multiple of 8.
[[gnu::always_inline]] inline void shifted_flat_t(const float* x, std::int64_t n, std::int64_t P,
                                                  std::int64_t j0, std::int64_t j1, const float* pivot,
                                                  double* acc1, double* acc2) {
  std::int64_t i = 0;
  while (i + P <= n) {
    std::int64_t periods = (n - i) / P;
    if (periods > kRound) periods = kRound;
    const float* base = x + i;
    std::int64_t j = j0;
#ifdef BNORM_SIMD_AVX512
    for (; j + 16 <= j1; j += 16) shifted_flat_tile<fw>(base, P, periods, j, pivot, acc1, acc2);
#endif
    for (; j < j1; j += 8) shifted_flat_tile<f8>(base, P, periods, j, pivot, acc1, acc2);
    i += periods * P;
  }
  for (std::int64_t j = j0; j < j1 && i + j < n; ++j) {
    const float d = x[i + j] - pivot[j];
    acc1[j] += static_cast<double>(d);
    acc2[j] += static_cast<double>(d * d);
  }
}

// Every lane (j0 = 0, j1 = P known to the compiler); shifted_flat_lanes below.
inline void shifted_flat(const float* x, std::int64_t n, std::int64_t P, const float* pivot, double* acc1,
                         double* acc2) {
  shifted_flat_t(x, n, P, 0, P, pivot, acc1, acc2);
}

// acc_g[j] += g, acc_p[j] += g * (x - mean[j]) for i = j (mod P), summed as grad_rows_t
// does (x - mean and the products in float, partial sums of up to four periods in float,
// widened into double); tiles of 8 lanes (16 with AVX-512, grad_flat_tile) keep their sums
// in registers over a round of kRound periods. Only the lanes [j0, j1) (multiples of 8, j1 <= P) are touched,
// as in shifted_flat_t. P is a multiple of 8; mean: P lanes.
template <MaskFrom kMask>
inline void grad_flat_t(const float* dy, const float* x, const FlatMask& mask, std::int64_t n, std::int64_t P,
                        std::int64_t j0, std::int64_t j1, const float* mean, double* acc_g, double* acc_p) {
  const float* ymask = mask.y;
  std::int64_t i = 0;
  while (i + P <= n) {
    std::int64_t periods = (n - i) / P;
    if (periods > kRound) periods = kRound;
    std::int64_t j = j0;
#ifdef BNORM_SIMD_AVX512
    for (; j + 16 <= j1; j += 16)
      grad_flat_tile<kMask, fw>(dy, x, mask, i + j, P, periods, j, mean, acc_g, acc_p);
#endif
    for (; j < j1; j += 8) grad_flat_tile<kMask, f8>(dy, x, mask, i + j, P, periods, j, mean, acc_g, acc_p);
    i += periods * P;
  }
  for (std::int64_t j = j0; j < j1 && i + j < n; ++j) {
    const float g = masked<kMask>(dy + i, x + i, kMask == MaskFrom::output ? ymask + i : nullptr,
                                  kMask == MaskFrom::input ? mask.center[j] : 0.0f,
                                  kMask == MaskFrom::input ? mask.alpha[j] : 0.0f,
                                  kMask == MaskFrom::input ? mask.shift[j] : 0.0f, j);
    acc_g[j] += static_cast<double>(g);
    acc_p[j] += static_cast<double>(g * (x[i + j] - mean[j]));
  }
}

inline void grad_flat(const float* dy, const float* x, const FlatMask& mask, std::int64_t n, std::int64_t P,
                      const float* mean, double* acc_g, double* acc_p) {
  with_mask_kind(mask.from, [&](auto kind) {
    grad_flat_t<decltype(kind)::value>(dy, x, mask, n, P, 0, P, mean, acc_g, acc_p);
  });
}

// The elementwise flat loops: lane l = i mod P runs along with i; per-lane coefficient
// arrays hold P + 8 lanes (lane j the value of lane j % P), so eight lanes starting
// anywhere are contiguous, and the stores can be aligned.
#define BNORM_NEXT_LANE(l) \
  if (++(l) == P) (l) = 0
#define BNORM_NEXT_8_LANES(l) \
  if (((l) += 8) >= P) (l) -= P
#define BNORM_NEXT_W_LANES(l) \
  if (((l) += kW) >= P) (l) -= P

// dx = dy * scale[j] for i = j (mod P); with kStream the stores are non-temporal.
template <bool kStream>
inline void scale_flat_t(const float* dy, float* dx, std::int64_t n, std::int64_t P, const float* scale) {
  std::int64_t i = 0, l = 0;
  for (const std::int64_t head = head_of(dx, n, kStream); i < head; ++i) {
    dx[i] = dy[i] * scale[l];
    BNORM_NEXT_LANE(l);
  }
  for (; i + kW <= n; i += kW) {
    BNORM_STOREW(kStream, dx + i, BNORM_LDW(dy + i) * BNORM_LDW(scale + l));
    BNORM_NEXT_W_LANES(l);
  }
  for (; i < n; ++i) {
    dx[i] = dy[i] * scale[l];
    BNORM_NEXT_LANE(l);
  }
  stream_fence<kStream>();
}

inline void scale_flat(const float* dy, float* dx, std::int64_t n, std::int64_t P, const float* scale,
                       bool stream) {
  if (stream)
    scale_flat_t<true>(dy, dx, n, P, scale);
  else
    scale_flat_t<false>(dy, dx, n, P, scale);
}

// y = (x - center[j]) * alpha[j] + shift[j] (then the ReLU) for i = j (mod P). y may alias x.
// Four loads per 8 outputs (the folded form took three): in cache, 64x1024
// forward_inference at 1 thread takes 9.2-10.3 us against 8.1-9.1 folded (minima of 3000
// calls); tiles of 8 lanes keeping their coefficients in registers down a few periods
// took 11.1-12.5 us (rows 4 KiB apart alias). Out of cache the subtraction is free.
template <bool kRelu, bool kStream>
inline void affine_flat_t(const float* x, float* y, std::int64_t n, std::int64_t P, const float* center,
                          const float* alpha, const float* shift) {
  std::int64_t i = 0, l = 0;
  for (const std::int64_t head = head_of(y, n, kStream); i < head; ++i) {
    const float v = (x[i] - center[l]) * alpha[l] + shift[l];
    y[i] = kRelu && v < 0.0f ? 0.0f : v;
    BNORM_NEXT_LANE(l);
  }
  for (; i + 16 <= n; i += 16) {
    BNORM_EACH_W(w) {
      fw v = (BNORM_LDW(x + i + w) - BNORM_LDW(center + l)) * BNORM_LDW(alpha + l) + BNORM_LDW(shift + l);
      BNORM_NEXT_W_LANES(l);
      if constexpr (kRelu) v = v < fw{} ? fw{} : v;
      BNORM_STOREW(kStream, y + i + w, v);
    }
  }
  for (; i + 8 <= n; i += 8) {
    f8 v = (BNORM_LD8(x + i) - BNORM_LD8(center + l)) * BNORM_LD8(alpha + l) + BNORM_LD8(shift + l);
    if constexpr (kRelu) v = v < f8{} ? f8{} : v;
    BNORM_STORE8(kStream, y + i, v);
    BNORM_NEXT_8_LANES(l);
  }
  for (; i < n; ++i) {
    const float v = (x[i] - center[l]) * alpha[l] + shift[l];
    y[i] = kRelu && v < 0.0f ? 0.0f : v;
    BNORM_NEXT_LANE(l);
  }
  stream_fence<kStream>();
}

inline void affine_flat(const float* x, float* y, std::int64_t n, std::int64_t P, const float* center,
                        const float* alpha, const float* shift, bool relu, bool stream) {
  if (stream) {
    if (relu)
      affine_flat_t<true, true>(x, y, n, P, center, alpha, shift);
    else
      affine_flat_t<false, true>(x, y, n, P, center, alpha, shift);
  } else {
    if (relu)
      affine_flat_t<true, false>(x, y, n, P, center, alpha, shift);
    else
      affine_flat_t<false, false>(x, y, n, P, center, alpha, shift);
  }
}

// dx = (g - grad_mean[j] - (x - mean[j]) * k[j]) * scale[j] for i = j (mod P).
template <MaskFrom kMask, bool kStream>
inline void dx_flat_t(const float* dy, const float* x, const FlatMask& mask, float* dx, std::int64_t n,
                      std::int64_t P, const float* mean, const float* grad_mean, const float* k,
                      const float* scale) {
  const float* ymask = mask.y;
  const float* mc = mask.center;
  const float* ma = mask.alpha;
  const float* mb = mask.shift;
  std::int64_t i = 0, l = 0;
  for (const std::int64_t head = head_of(dx, n, kStream); i < head; ++i) {
    const float g =
        masked<kMask>(dy, x, ymask, kMask == MaskFrom::input ? mc[l] : 0.0f,
                      kMask == MaskFrom::input ? ma[l] : 0.0f, kMask == MaskFrom::input ? mb[l] : 0.0f, i);
    dx[i] = ((g - grad_mean[l]) - (x[i] - mean[l]) * k[l]) * scale[l];
    BNORM_NEXT_LANE(l);
  }
  for (; i + kW <= n; i += kW) {
    const fw xv = BNORM_LDW(x + i);
    const fw g = BNORM_MASKW(kMask, BNORM_LDW(dy + i), ymask + i, xv, BNORM_LDW(mc + l), BNORM_LDW(ma + l),
                             BNORM_LDW(mb + l));
    BNORM_STOREW(kStream, dx + i,
                 ((g - BNORM_LDW(grad_mean + l)) - (xv - BNORM_LDW(mean + l)) * BNORM_LDW(k + l)) *
                     BNORM_LDW(scale + l));
    BNORM_NEXT_W_LANES(l);
  }
  for (; i < n; ++i) {
    const float g =
        masked<kMask>(dy, x, ymask, kMask == MaskFrom::input ? mc[l] : 0.0f,
                      kMask == MaskFrom::input ? ma[l] : 0.0f, kMask == MaskFrom::input ? mb[l] : 0.0f, i);
    dx[i] = ((g - grad_mean[l]) - (x[i] - mean[l]) * k[l]) * scale[l];
    BNORM_NEXT_LANE(l);
  }
  stream_fence<kStream>();
}

template <MaskFrom kMask>
inline void dx_flat_m(const float* dy, const float* x, const FlatMask& mask, float* dx, std::int64_t n,
                      std::int64_t P, const float* mean, const float* grad_mean, const float* k,
                      const float* scale, bool stream) {
  if (stream)
    dx_flat_t<kMask, true>(dy, x, mask, dx, n, P, mean, grad_mean, k, scale);
  else
    dx_flat_t<kMask, false>(dy, x, mask, dx, n, P, mean, grad_mean, k, scale);
}

inline void dx_flat(const float* dy, const float* x, const FlatMask& mask, float* dx, std::int64_t n,
                    std::int64_t P, const float* mean, const float* grad_mean, const float* k,
                    const float* scale, bool stream) {
  with_mask_kind(mask.from, [&](auto kind) {
    dx_flat_m<decltype(kind)::value>(dy, x, mask, dx, n, P, mean, grad_mean, k, scale, stream);
  });
}

#undef BNORM_NEXT_LANE
#undef BNORM_NEXT_8_LANES
#undef BNORM_NEXT_W_LANES
#undef BNORM_LDW
#undef BNORM_STW
#undef BNORM_SPLATW
#undef BNORM_MASKW
#undef BNORM_EACH_W
#undef BNORM_STREAMW
#undef BNORM_STOREW
#undef BNORM_COMBINE32
#undef BNORM_LO8
#undef BNORM_HI8
#undef BNORM_LD8
#undef BNORM_ST8
#undef BNORM_LD4
#undef BNORM_LDD
#undef BNORM_STD
#undef BNORM_CVT
#undef BNORM_MASK8
#undef BNORM_MASK_T
#undef BNORM_TAIL_KEEP
#undef BNORM_WIDEN
#undef BNORM_PREFETCH_ROWS_AHEAD
#undef BNORM_HSUM
#undef BNORM_WIDEN_LO
#undef BNORM_STREAM8
#undef BNORM_STORE8
#undef BNORM_WIDEN_HI
#undef BNORM_WIDEN8
#undef BNORM_LO4
#undef BNORM_HI4
#undef BNORM_LDD8
#undef BNORM_STD8
#undef BNORM_SPLAT8
#undef BNORM_FOLD8

// The lane-range reductions (shifted_flat_t, grad_flat_t for the lanes [j0, j1)), last in
// the file so the loops above keep their place in the code.
inline void shifted_flat_lanes(const float* x, std::int64_t n, std::int64_t P, std::int64_t j0,
                               std::int64_t j1, const float* pivot, double* acc1, double* acc2) {
  shifted_flat_t(x, n, P, j0, j1, pivot, acc1, acc2);
}
inline void grad_flat_lanes(const float* dy, const float* x, const FlatMask& mask, std::int64_t n,
                            std::int64_t P, std::int64_t j0, std::int64_t j1, const float* mean,
                            double* acc_g, double* acc_p) {
  with_mask_kind(mask.from, [&](auto kind) {
    grad_flat_t<decltype(kind)::value>(dy, x, mask, n, P, j0, j1, mean, acc_g, acc_p);
  });
}

}  // namespace bnorm::kernels::cpu::BNORM_SIMD_NS
