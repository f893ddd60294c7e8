// The tables of inner loops (batch_norm_simd.hpp compiled once per instruction set), the
// choice among them, and the output store policy: everything the channels-first and
// channels-last kernels share about the machine they run on.
#include "simd_dispatch.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "bnorm/core/error.hpp"

// ---- the inner loops, once per instruction set ----
#define BNORM_SIMD_NS simd_generic
#include "batch_norm_simd.hpp"
#undef BNORM_SIMD_NS

#pragma GCC push_options
#pragma GCC target("avx2")
#define BNORM_SIMD_NS simd_avx2
#define BNORM_SIMD_AVX2 1
#include "batch_norm_simd.hpp"
#undef BNORM_SIMD_AVX2
#undef BNORM_SIMD_NS
#pragma GCC pop_options

// AVX-512 F and VL: the double accumulators of the reductions are 64-byte vectors there
// (d8 in batch_norm_simd.hpp); the AVX2 macros hold too.
#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512vl")
#define BNORM_SIMD_NS simd_avx512
#define BNORM_SIMD_AVX2 1
#define BNORM_SIMD_AVX512 1
#include "batch_norm_simd.hpp"
#undef BNORM_SIMD_AVX512
#undef BNORM_SIMD_AVX2
#undef BNORM_SIMD_NS
#pragma GCC pop_options

namespace bnorm::kernels::cpu {
namespace {

#define BNORM_SIMD_TABLE(ns)                                                                            \
  SimdOps {                                                                                             \
#ns, ns::moments_rows, ns::shifted_rows, ns::grad_rows, ns::grad_scale_rows, ns::affine_rows,       \
        ns::affine_cyclic, ns::dx_cyclic, ns::dx_rows, ns::shifted_flat, ns::grad_flat, ns::scale_flat, \
        ns::affine_flat, ns::dx_flat, ns::shifted_flat_lanes, ns::grad_flat_lanes                       \
  }
const SimdOps kGeneric = BNORM_SIMD_TABLE(simd_generic);
const SimdOps kAvx2 = BNORM_SIMD_TABLE(simd_avx2);
const SimdOps kAvx512 = BNORM_SIMD_TABLE(simd_avx512);
#undef BNORM_SIMD_TABLE

// The best level this CPU supports.
SimdLevel best_level() {
  static const SimdLevel best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) return SimdLevel::avx512;
    return __builtin_cpu_supports("avx2") ? SimdLevel::avx2 : SimdLevel::generic;
  }();
  return best;
}

std::string level_list() {
  std::string names;
  for (const SimdLevel level : kSimdLevels) names += std::string(names.empty() ? "" : ", ") + name_of(level);
  return names;
}

// What a level name should have been, or "" when it names a level this CPU supports.
std::string level_error(const char* name) {
  SimdLevel level = SimdLevel::generic;
  if (!level_named(name, level)) return "one of " + level_list();
  if (!cpu_supports(level))
    return std::string("a level this CPU supports (up to ") + name_of(best_level()) + ")";
  return "";
}

// The level BNORM_SIMD names (read once), or the best one when it is unset or empty;
// `error` is set when it names an unknown level or one this CPU lacks.
struct EnvChoice {
  SimdLevel level = SimdLevel::generic;
  std::string error;
};

const EnvChoice& env_choice() {
  static const EnvChoice choice = [] {
    EnvChoice c;
    c.level = best_level();
    const char* env = std::getenv("BNORM_SIMD");
    if (env == nullptr || *env == '\0') return c;
    c.error = level_error(env);
    if (c.error.empty()) level_named(env, c.level);
    return c;
  }();
  return choice;
}

std::atomic<int> g_forced{-1};  // a SimdLevel, or -1: the automatic choice
std::atomic<bool> g_force_stream{false};

}  // namespace

bool level_named(const char* name, SimdLevel& level) {
  for (const SimdLevel l : kSimdLevels) {
    if (std::strcmp(name, name_of(l)) != 0) continue;
    level = l;
    return true;
  }
  return false;
}

const char* name_of(SimdLevel level) {
  switch (level) {
    case SimdLevel::avx2:
      return "avx2";
    case SimdLevel::avx512:
      return "avx512";
    case SimdLevel::generic:
      break;
  }
  return "generic";
}

bool cpu_supports(SimdLevel level) {
  return static_cast<int>(level) <= static_cast<int>(best_level());
}

const SimdOps& simd_ops(SimdLevel level) {
  switch (level) {
    case SimdLevel::avx512:
      return kAvx512;
    case SimdLevel::avx2:
      return kAvx2;
    case SimdLevel::generic:
      break;
  }
  return kGeneric;
}

SimdLevel simd_level() {
  const int forced = g_forced.load(std::memory_order_relaxed);
  if (forced >= 0) return static_cast<SimdLevel>(forced);
  const EnvChoice& env = env_choice();
  if (!env.error.empty()) {
    const char* value = std::getenv("BNORM_SIMD");
    throw ArgumentError("bnorm kernels", "environment variable BNORM_SIMD", env.error,
                        std::string("\"") + (value != nullptr ? value : "") + "\"");
  }
  return env.level;
}

void force_simd_level(const char* name) {
  if (name == nullptr || *name == '\0') return g_forced.store(-1, std::memory_order_relaxed);
  const std::string error = level_error(name);
  if (!error.empty())
    throw ArgumentError("force_simd_level", "level", error, std::string("\"") + name + "\"");
  SimdLevel level = SimdLevel::generic;
  level_named(name, level);
  g_forced.store(static_cast<int>(level), std::memory_order_relaxed);
}

// ---- output stores ----
namespace {

// Streaming pays when the output cannot stay in the last-level cache next to the input
// (and the next reader finds it in memory either way). The cache is the whole shared L3,
// taken as at most kMaxCache: inside a virtual machine, sysconf (and glibc) see the
// host's whole L3 (480 MiB on the 2-vCPU benchmark VM), although the cache a guest
// really gets is far smaller. Measured there (interleaved harness runs, minima, plain vs
// streaming): 49 MiB outputs at 2 threads: NCHW 32x128x56x56 forward_training 3242-5097
// vs 2169-2361 us, NHWC 3386-3989 vs 3085 us, backward_training 7146-8199 vs
// 6008-6842 us, forward_inference 2092-2170 vs 1855 us; at 1 thread streaming won too
// (100 MiB: 14500-15800 vs 10070-11240 us); 24.5 MiB outputs: a coin toss, either way by
// up to 1.3x between runs; 12 MiB: plain 3-5 % faster. (glibc's memcpy rule, 3/4 of one
// thread's share, would stream 49 MiB at 2 threads only on caches under 65 MiB, and
// single-threaded outputs that fit a small L3 too early.)
constexpr std::int64_t kMaxCache = 48LL << 20;

// 3/4 of the last-level cache (at most kMaxCache; 32 MiB when the size is unknown).
std::int64_t stream_threshold() {
  static const std::int64_t bytes = [] {
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (l3 <= 0) l3 = 32L << 20;
    return std::min<std::int64_t>(l3, kMaxCache) * 3 / 4;
  }();
  return bytes;
}

}  // namespace

bool stream_stores(std::int64_t out_bytes) {
  if (g_force_stream.load(std::memory_order_relaxed)) return true;
  return out_bytes > stream_threshold();
}

// Channels-first outputs are written row by row (rows of S floats). The row loops stream
// only the whole 64-byte lines of a row and store its partial end lines plainly
// (line_head_of in batch_norm_simd.hpp): streaming part of a line is slow (it flushes a
// half-filled write-combining buffer; 256x256x14x14 forward_inference at 1 thread took
// 28.7 ms when rows of 196 floats were streamed whole, against 3.5 ms for a copy). With
// whole lines only, 14x14 maps gain as 28x28 do (256x256x14x14 at 1 thread, plain ->
// streamed: forward_training 7.8 -> 5.7 ms, backward_training 15.5 -> 11.5 ms,
// forward_inference 4.5 -> 4.1 ms). Rows under 64 floats (7x7, 8x8 maps) are not streamed:
// their partial lines would be most of them.
bool stream_rows(std::int64_t out_bytes, std::int64_t S) {
  if (g_force_stream.load(std::memory_order_relaxed)) return true;
  return S >= 64 && stream_stores(out_bytes);
}

void force_streaming_stores(bool on) {
  g_force_stream.store(on, std::memory_order_relaxed);
}

}  // namespace bnorm::kernels::cpu
