// src/kernels/cpu/simd_dispatch.hpp: the choice of the inner loops' instruction set and
// the output store policy, shared by the channels-first and channels-last kernels
// (internal).
//
// The loops of batch_norm_simd.hpp are compiled once per level in simd_dispatch.cpp:
//   generic  baseline x86-64 (SSE2), runs anywhere;
//   avx2     under #pragma GCC target("avx2");
//   avx512   under #pragma GCC target("avx2,avx512f,avx512vl") (the double accumulators
//            of the reductions in one zmm register);
// the level is chosen at the first call from the CPU (cpuid) and BNORM_SIMD, and can be
// forced (tests, benchmarks). Every level gives the same bits: same lanes, same order,
// and no FMA contraction (simd_dispatch.cpp is compiled with -ffp-contract=off; AVX-512
// implies FMA, which GCC would otherwise fuse a * b + c into).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "batch_norm_cpu.hpp"

namespace bnorm::kernels::cpu {

// The inner loops of one instruction set (semantics in batch_norm_simd.hpp). Per-lane
// float coefficient arrays of the *_flat loops hold P + kLaneExtra lanes.
struct SimdOps {
  const char* name;
  void (*moments_rows)(const float* x, std::int64_t rows, std::int64_t stride, std::int64_t len, double* sum,
                       double* m2);
  void (*shifted_rows)(const float* x, std::int64_t rows, std::int64_t stride, std::int64_t len, float pivot,
                       double* s1, double* s2);
  void (*grad_rows)(const float* dy, const float* x, const RowsMask& mask, std::int64_t rows,
                    std::int64_t stride, std::int64_t len, float mean, double* sum, double* dotp);
  void (*grad_scale_rows)(const float* dy, const float* x, float* dx, std::int64_t rows, std::int64_t stride,
                          std::int64_t len, float mean, float scale, double* sum, double* dotp, bool stream);
  void (*affine_rows)(const float* x, float* y, std::int64_t rows, std::int64_t stride, std::int64_t len,
                      const Fold& f, bool relu, bool stream);
  void (*affine_cyclic)(const float* x, float* y, std::int64_t r0, std::int64_t r1, std::int64_t C,
                        std::int64_t S, const Fold* f, bool relu, bool stream);
  void (*dx_cyclic)(const float* dy, const float* x, const RowsMask* masks, float* dx, std::int64_t r0,
                    std::int64_t r1, std::int64_t C, std::int64_t S, const float* mean, const TrainingGrad* g,
                    bool stream);
  void (*dx_rows)(const float* dy, const float* x, const RowsMask& mask, float* dx, std::int64_t rows,
                  std::int64_t stride, std::int64_t len, float mean, float grad_mean, float k, float scale,
                  bool stream);
  void (*shifted_flat)(const float* x, std::int64_t n, std::int64_t P, const float* pivot, double* acc1,
                       double* acc2);
  void (*grad_flat)(const float* dy, const float* x, const FlatMask& mask, std::int64_t n, std::int64_t P,
                    const float* mean, double* acc_g, double* acc_p);
  void (*scale_flat)(const float* dy, float* dx, std::int64_t n, std::int64_t P, const float* scale,
                     bool stream);
  void (*affine_flat)(const float* x, float* y, std::int64_t n, std::int64_t P, const float* center,
                      const float* alpha, const float* shift, bool relu, bool stream);
  void (*dx_flat)(const float* dy, const float* x, const FlatMask& mask, float* dx, std::int64_t n,
                  std::int64_t P, const float* mean, const float* grad_mean, const float* k,
                  const float* scale, bool stream);
  // shifted_flat and grad_flat for the lanes [j0, j1) only (multiples of 8, j1 <= P), with
  // the same sums for each of them.
  void (*shifted_flat_lanes)(const float* x, std::int64_t n, std::int64_t P, std::int64_t j0, std::int64_t j1,
                             const float* pivot, double* acc1, double* acc2);
  void (*grad_flat_lanes)(const float* dy, const float* x, const FlatMask& mask, std::int64_t n,
                          std::int64_t P, std::int64_t j0, std::int64_t j1, const float* mean, double* acc_g,
                          double* acc_p);
};

// In increasing order: a CPU that runs one runs those before it.
enum class SimdLevel { generic, avx2, avx512 };
inline constexpr SimdLevel kSimdLevels[] = {SimdLevel::generic, SimdLevel::avx2, SimdLevel::avx512};

const char* name_of(SimdLevel level);
// The level called `name` ("generic", "avx2", "avx512"), if there is one.
bool level_named(const char* name, SimdLevel& level);
// Whether this CPU runs `level`.
bool cpu_supports(SimdLevel level);
// The loops of `level` (which the CPU must support).
const SimdOps& simd_ops(SimdLevel level);

// The level calls run: the forced one (force_simd_level), else the one BNORM_SIMD names,
// else the best the CPU supports. Throws ArgumentError when BNORM_SIMD names an unknown
// level or one this CPU lacks.
SimdLevel simd_level();
// Forces the level called `name`, or with null or "" restores the automatic choice.
// Throws ArgumentError when `name` is no level or one this CPU lacks. Not meant to be
// called while kernels run.
void force_simd_level(const char* name);

// ---- output stores ----
// Whether the elementwise pass of a call writes its output with non-temporal stores
// (bypassing the caches): when the output exceeds 3/4 of the last-level cache, taken as
// at most 48 MiB (it would evict the input and everything else on its way through the
// cache; see stream_threshold in simd_dispatch.cpp for the measurements). Stored values
// are the same either way. force_streaming_stores(true) makes every size stream (tests).
bool stream_stores(std::int64_t out_bytes);
// The same for a channels-first output written in rows of S floats: rows under 64 floats
// never stream (see simd_dispatch.cpp).
bool stream_rows(std::int64_t out_bytes, std::int64_t S);
void force_streaming_stores(bool on);

// Orders this thread's non-temporal stores before what follows (a barrier, the return to
// the caller): each thread that streamed calls it once its elementwise work is done. The
// channels-first row loops (affine_rows, affine_cyclic, dx_rows) leave it to their caller.
inline void end_streaming(bool stream) {
  if (stream) _mm_sfence();
}

}  // namespace bnorm::kernels::cpu
