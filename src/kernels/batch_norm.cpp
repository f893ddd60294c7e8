// Dispatch of the batch-norm kernels: an ordered list of implementations, each row
// saying what it supports and holding its functions; `automatic` takes the first that
// accepts the call, the reference last. explain_choice() and BNORM_VERBOSE=1 say why the
// earlier ones were rejected. choose_call() is the one place that decides, for every
// entry point: the row, the SIMD level of the cpu rows and the thread count. Empty
// batches are answered before it (write_empty_batch), the same for every row.
#include "bnorm/kernels/batch_norm.hpp"

#include <omp.h>

#include <atomic>
#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/kernels/batch_norm_ref.hpp"
#include "cpu/batch_norm_cpu.hpp"
#include "cpu/simd_dispatch.hpp"

namespace bnorm::kernels {
namespace {

using cpu::Exec;
using cpu::ReluMask;

// The reference kernels with the signatures of the rows (the SIMD loops and the thread
// count unused; the ReLU's mask as the fused reference functions take it).
namespace ref_row {

void moments(const float* x, const BatchNormDims& dims, float* mean, float* var, double* mean_d,
             double* var_d, const Exec&) {
  reference::moments(x, dims, mean, var, mean_d, var_d);
}

void forward_training(const float* x, const BatchNormDims& dims, const float* gamma, const float* beta,
                      float epsilon, float* y, float* mean, float* var, float* invstd, double* mean_d,
                      double* var_d, bool relu, const Exec&) {
  if (relu)
    return reference::forward_training_relu(x, dims, gamma, beta, epsilon, y, mean, var, invstd, mean_d,
                                            var_d);
  reference::forward_training(x, dims, gamma, beta, epsilon, y, mean, var, invstd, mean_d, var_d);
}

void forward_inference(const float* x, const BatchNormDims& dims, const float* mean, const float* var,
                       const float* gamma, const float* beta, float epsilon, float* y, const Exec&) {
  reference::forward_inference(x, dims, mean, var, gamma, beta, epsilon, y);
}

void backward_training(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                       const float* invstd, const float* gamma, float* dx, float* dgamma, float* dbeta,
                       const ReluMask& mask, const Exec&) {
  switch (mask.from) {
    case cpu::MaskFrom::output:
      return reference::backward_training_relu(dy, x, mask.y, dims, mean, invstd, gamma, dx, dgamma, dbeta);
    case cpu::MaskFrom::input:
      return reference::backward_training_relu(dy, x, dims, mean, invstd, gamma, mask.beta, dx, dgamma,
                                               dbeta);
    case cpu::MaskFrom::none:
      break;
  }
  reference::backward_training(dy, x, dims, mean, invstd, gamma, dx, dgamma, dbeta);
}

void backward_inference(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                        const float* var, const float* gamma, float epsilon, float* dx, float* dgamma,
                        float* dbeta, const Exec&) {
  reference::backward_inference(dy, x, dims, mean, var, gamma, epsilon, dx, dgamma, dbeta);
}

}  // namespace ref_row

// One row of the ordered list: its name, whether it is a cpu (fast) kernel, whether it
// supports `dims` (else why not), and its functions.
struct Implementation {
  const char* name;
  bool is_cpu;
  // Whether it supports `dims`; if not, and why_not is not null, the reason. (No string
  // is built on the plain dispatch path: a call's fixed cost matters for small tensors.)
  bool (*supports)(const BatchNormDims& dims, std::string* why_not);
  decltype(&cpu::nchw_moments) moments;
  decltype(&cpu::nchw_forward_training) forward_training;
  decltype(&cpu::nchw_forward_inference) forward_inference;
  decltype(&cpu::nchw_backward_training) backward_training;
  decltype(&cpu::nchw_backward_inference) backward_inference;
};

bool nhwc_supports(const BatchNormDims& dims, std::string* why_not) {
  if (dims.S == 1) return true;
  if (why_not != nullptr) *why_not = "S=" + std::to_string(dims.S) + " != 1";
  return false;
}

bool nchw_supports(const BatchNormDims& dims, std::string* why_not) {
  if (dims.S > 1) return true;
  if (why_not != nullptr) *why_not = "S=" + std::to_string(dims.S) + " <= 1";
  return false;
}

bool reference_supports(const BatchNormDims&, std::string*) {
  return true;
}

constexpr Implementation kImplementations[] = {
    {"cpu_nhwc", true, nhwc_supports, cpu::nhwc_moments, cpu::nhwc_forward_training,
     cpu::nhwc_forward_inference, cpu::nhwc_backward_training, cpu::nhwc_backward_inference},
    {"cpu_nchw", true, nchw_supports, cpu::nchw_moments, cpu::nchw_forward_training,
     cpu::nchw_forward_inference, cpu::nchw_backward_training, cpu::nchw_backward_inference},
    {"reference", false, reference_supports, ref_row::moments, ref_row::forward_training,
     ref_row::forward_inference, ref_row::backward_training, ref_row::backward_inference},
};
constexpr const Implementation& kReference = kImplementations[std::size(kImplementations) - 1];

// The first row that supports `dims`, among the cpu rows only with `cpu_only`;
// `explanation` (if not null) names it and the rejected ones before it.
const Implementation& choose(const BatchNormDims& dims, bool cpu_only, std::string* explanation) {
  std::string rejected;
  for (const Implementation& row : kImplementations) {
    if (cpu_only && !row.is_cpu) continue;
    std::string why_not;
    if (row.supports(dims, explanation != nullptr ? &why_not : nullptr)) {
      if (explanation != nullptr) {
        *explanation = row.name;
        if (!rejected.empty()) *explanation += " (" + rejected + ")";
      }
      return row;
    }
    if (explanation == nullptr) continue;
    if (!rejected.empty()) rejected += "; ";
    rejected += std::string(row.name) + " rejected: " + why_not;
  }
  return kReference;  // unreachable: the reference supports everything, and the cpu rows cover every S
}

const Implementation& resolve(Impl impl, const BatchNormDims& dims, std::string* explanation) {
  switch (impl) {
    case Impl::reference:
      if (explanation != nullptr) *explanation = "reference (requested)";
      return kReference;
    case Impl::cpu: {
      const Implementation& row = choose(dims, true, nullptr);
      if (explanation != nullptr) *explanation = std::string(row.name) + " (requested cpu)";
      return row;
    }
    case Impl::automatic:
      break;
  }
  return choose(dims, false, explanation);
}

bool verbose() {
  static const bool enabled = [] {
    const char* value = std::getenv("BNORM_VERBOSE");
    return value != nullptr && std::strcmp(value, "1") == 0;
  }();
  return enabled;
}

std::atomic<int> g_threads{0};  // 0: OpenMP's default

// A decided call: the row, and what its functions run with.
struct Call {
  const Implementation& row;
  Exec exec;
};

// The one choice of every entry point: the row for `impl` and `dims`, the SIMD level (a
// cpu row's; resolved for the reference too, so that a bad BNORM_SIMD is refused on any
// path) and the thread count. With BNORM_VERBOSE=1 it prints the choice.
Call choose_call(const char* op, Impl impl, const BatchNormDims& dims) {
  const cpu::SimdLevel level = cpu::simd_level();
  const int threads = num_threads();
  if (!verbose()) return {resolve(impl, dims, nullptr), Exec{cpu::simd_ops(level), threads}};
  std::string explanation;
  const Implementation& row = resolve(impl, dims, &explanation);
  if (row.is_cpu) explanation += std::string(" [simd ") + cpu::name_of(level) + "]";
  std::fprintf(stderr, "bnorm: %s (N=%lld,C=%lld,S=%lld) -> %s\n", op, static_cast<long long>(dims.N),
               static_cast<long long>(dims.C), static_cast<long long>(dims.S), explanation.c_str());
  return {row, Exec{cpu::simd_ops(level), threads}};
}

// Debug-only precondition check (the callers validate at the API boundary).
[[maybe_unused]] bool valid(const BatchNormDims& dims) {
  return dims.N >= 0 && dims.C >= 0 && dims.S >= 0;
}

// The per-channel outputs a call writes for an empty batch (null: the call has none, or
// skips it).
struct EmptyOutputs {
  float* mean = nullptr;     // 0
  float* var = nullptr;      // 0
  float* invstd = nullptr;   // 1 / sqrt(epsilon)
  double* mean_d = nullptr;  // 0
  double* var_d = nullptr;   // 0
  float* dgamma = nullptr;   // 0
  float* dbeta = nullptr;    // 0
  float epsilon = 0.0f;
};

// Whether the call has no work (C == 0, or an empty batch N*S == 0, whose per-channel
// outputs it then writes): the one place empty batches are handled, before dispatch.
bool write_empty_batch(const BatchNormDims& dims, const EmptyOutputs& out) {
  assert(valid(dims));
  if (dims.C > 0 && dims.count() > 0) return false;
  for (std::int64_t c = 0; c < dims.C; ++c) {
    if (out.mean != nullptr) out.mean[c] = 0.0f;
    if (out.var != nullptr) out.var[c] = 0.0f;
    if (out.invstd != nullptr) out.invstd[c] = invstd_of(0.0, out.epsilon);
    if (out.mean_d != nullptr) out.mean_d[c] = 0.0;
    if (out.var_d != nullptr) out.var_d[c] = 0.0;
    if (out.dgamma != nullptr) out.dgamma[c] = 0.0f;
    if (out.dbeta != nullptr) out.dbeta[c] = 0.0f;
  }
  return true;
}

// forward_training and forward_training_relu: the ReLU a flag of the rows.
void forward_training_any(bool relu, const float* x, const BatchNormDims& dims, const float* gamma,
                          const float* beta, float epsilon, float* y, float* mean, float* var, float* invstd,
                          double* mean_d, double* var_d, Impl impl) {
  assert(dims.C == 0 || (mean != nullptr && var != nullptr && invstd != nullptr));
  if (write_empty_batch(
          dims,
          {.mean = mean, .var = var, .invstd = invstd, .mean_d = mean_d, .var_d = var_d, .epsilon = epsilon}))
    return;
  const Call call = choose_call(relu ? "forward_training_relu" : "forward_training", impl, dims);
  call.row.forward_training(x, dims, gamma, beta, epsilon, y, mean, var, invstd, mean_d, var_d, relu,
                            call.exec);
}

// The training backward, plain or with the ReLU's mask.
void backward_training_any(const char* op, const float* dy, const float* x, const BatchNormDims& dims,
                           const float* mean, const float* invstd, const float* gamma, float* dx,
                           float* dgamma, float* dbeta, const ReluMask& mask, Impl impl) {
  if (write_empty_batch(dims, {.dgamma = dgamma, .dbeta = dbeta})) return;
  const Call call = choose_call(op, impl, dims);
  call.row.backward_training(dy, x, dims, mean, invstd, gamma, dx, dgamma, dbeta, mask, call.exec);
}

}  // namespace

std::string explain_choice(const BatchNormDims& dims) {
  std::string explanation;
  choose(dims, false, &explanation);
  return explanation;
}

void set_num_threads(int n) {
  g_threads.store(n > 0 ? n : 0, std::memory_order_relaxed);
}

int num_threads() {
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

void moments(const float* x, const BatchNormDims& dims, float* mean, float* var, Impl impl) {
  moments(x, dims, mean, var, nullptr, nullptr, impl);
}

void moments(const float* x, const BatchNormDims& dims, float* mean, float* var, double* mean_d,
             double* var_d, Impl impl) {
  assert(dims.C == 0 || (mean != nullptr && var != nullptr));
  if (write_empty_batch(dims, {.mean = mean, .var = var, .mean_d = mean_d, .var_d = var_d})) return;
  const Call call = choose_call("moments", impl, dims);
  call.row.moments(x, dims, mean, var, mean_d, var_d, call.exec);
}

void forward_training(const float* x, const BatchNormDims& dims, const float* gamma, const float* beta,
                      float epsilon, float* y, float* mean, float* var, float* invstd, Impl impl) {
  forward_training(x, dims, gamma, beta, epsilon, y, mean, var, invstd, nullptr, nullptr, impl);
}

void forward_training(const float* x, const BatchNormDims& dims, const float* gamma, const float* beta,
                      float epsilon, float* y, float* mean, float* var, float* invstd, double* mean_d,
                      double* var_d, Impl impl) {
  forward_training_any(false, x, dims, gamma, beta, epsilon, y, mean, var, invstd, mean_d, var_d, impl);
}

void forward_inference(const float* x, const BatchNormDims& dims, const float* mean, const float* var,
                       const float* gamma, const float* beta, float epsilon, float* y, Impl impl) {
  if (write_empty_batch(dims, {})) return;
  const Call call = choose_call("forward_inference", impl, dims);
  call.row.forward_inference(x, dims, mean, var, gamma, beta, epsilon, y, call.exec);
}

void backward_training(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                       const float* invstd, const float* gamma, float* dx, float* dgamma, float* dbeta,
                       Impl impl) {
  backward_training_any("backward_training", dy, x, dims, mean, invstd, gamma, dx, dgamma, dbeta, ReluMask{},
                        impl);
}

void backward_training_dx(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                          const float* invstd, const float* gamma, const double* sum_dy,
                          const double* sum_dy_xhat, std::int64_t count, float* dx, Impl impl) {
  assert(count >= dims.count());
  if (write_empty_batch(dims, {})) return;  // (dx has no elements)
  (void)impl;  // one elementwise pass: only the reference loop for now (no vector path yet)
  reference::backward_training_dx(dy, x, dims, mean, invstd, gamma, sum_dy, sum_dy_xhat, count, dx);
}

void backward_inference(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                        const float* var, const float* gamma, float epsilon, float* dx, float* dgamma,
                        float* dbeta, Impl impl) {
  if (write_empty_batch(dims, {.dgamma = dgamma, .dbeta = dbeta})) return;
  const Call call = choose_call("backward_inference", impl, dims);
  call.row.backward_inference(dy, x, dims, mean, var, gamma, epsilon, dx, dgamma, dbeta, call.exec);
}

void forward_training_relu(const float* x, const BatchNormDims& dims, const float* gamma, const float* beta,
                           float epsilon, float* y, float* mean, float* var, float* invstd, Impl impl) {
  forward_training_relu(x, dims, gamma, beta, epsilon, y, mean, var, invstd, nullptr, nullptr, impl);
}

void forward_training_relu(const float* x, const BatchNormDims& dims, const float* gamma, const float* beta,
                           float epsilon, float* y, float* mean, float* var, float* invstd, double* mean_d,
                           double* var_d, Impl impl) {
  forward_training_any(true, x, dims, gamma, beta, epsilon, y, mean, var, invstd, mean_d, var_d, impl);
}

void backward_training_relu(const float* dy, const float* x, const float* y, const BatchNormDims& dims,
                            const float* mean, const float* invstd, const float* gamma, float* dx,
                            float* dgamma, float* dbeta, Impl impl) {
  backward_training_any("backward_training_relu", dy, x, dims, mean, invstd, gamma, dx, dgamma, dbeta,
                        ReluMask::from_output(y), impl);
}

void backward_training_relu(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                            const float* invstd, const float* gamma, const float* beta, float* dx,
                            float* dgamma, float* dbeta, Impl impl) {
  backward_training_any("backward_training_relu", dy, x, dims, mean, invstd, gamma, dx, dgamma, dbeta,
                        ReluMask::from_input(beta), impl);
}

const char* simd_level() {
  return cpu::name_of(cpu::simd_level());
}

std::vector<std::string> simd_levels() {
  std::vector<std::string> names;
  for (const cpu::SimdLevel level : cpu::kSimdLevels)
    if (cpu::cpu_supports(level)) names.emplace_back(cpu::name_of(level));
  return names;
}

void force_simd_level(const std::string& level) {
  cpu::force_simd_level(level.c_str());
}

void force_generic_simd(bool on) {
  cpu::force_simd_level(on ? "generic" : nullptr);
}

void force_streaming_stores(bool on) {
  cpu::force_streaming_stores(on);
}

}  // namespace bnorm::kernels
