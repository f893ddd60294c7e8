// Dispatch of the batch-norm kernels: an ordered list of implementations, each saying
// what it supports; `automatic` takes the first that accepts the call, the reference
// last. explain_choice() and BNORM_VERBOSE=1 say why the earlier ones were rejected.
#include "bnorm/kernels/batch_norm.hpp"

#include <omp.h>

#include <atomic>
#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "bnorm/kernels/batch_norm_ref.hpp"
#include "cpu/batch_norm_cpu.hpp"

namespace bnorm::kernels {
namespace {

enum class Path { cpu_nhwc, cpu_nchw, reference };

// One entry of the ordered list: its name, and whether it supports `dims` (else why not).
struct Candidate {
  Path path;
  const char* name;
  // Whether it supports `dims`; if not, and why_not is not null, the reason. (No string
  // is built on the plain dispatch path: a call's fixed cost matters for small tensors.)
  bool (*supports)(const BatchNormDims& dims, std::string* why_not);
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

constexpr Candidate kImplementations[] = {
    {Path::cpu_nhwc, "cpu_nhwc", nhwc_supports},
    {Path::cpu_nchw, "cpu_nchw", nchw_supports},
    {Path::reference, "reference", reference_supports},
};

const char* name_of(Path path) {
  for (const Candidate& c : kImplementations)
    if (c.path == path) return c.name;
  return "?";
}

// The first implementation of the list that supports `dims`; `explanation` names it and
// the rejected ones before it.
Path choose(const BatchNormDims& dims, std::string* explanation) {
  if (explanation == nullptr) {
    for (const Candidate& candidate : kImplementations)
      if (candidate.supports(dims, nullptr)) return candidate.path;
    return Path::reference;
  }
  std::string rejected;
  for (const Candidate& candidate : kImplementations) {
    std::string why_not;
    if (candidate.supports(dims, &why_not)) {
      if (explanation != nullptr) {
        *explanation = candidate.name;
        if (!rejected.empty()) *explanation += " (" + rejected + ")";
      }
      return candidate.path;
    }
    if (!rejected.empty()) rejected += "; ";
    rejected += std::string(candidate.name) + " rejected: " + why_not;
  }
  return Path::reference;  // unreachable: the reference supports everything
}

Path resolve(Impl impl, const BatchNormDims& dims, std::string* explanation) {
  switch (impl) {
    case Impl::reference:
      if (explanation != nullptr) *explanation = "reference (requested)";
      return Path::reference;
    case Impl::cpu: {
      const Path path = dims.S == 1 ? Path::cpu_nhwc : Path::cpu_nchw;
      if (explanation != nullptr) *explanation = std::string(name_of(path)) + " (requested cpu)";
      return path;
    }
    case Impl::automatic:
      break;
  }
  return choose(dims, explanation);
}

bool verbose() {
  static const bool enabled = [] {
    const char* value = std::getenv("BNORM_VERBOSE");
    return value != nullptr && std::strcmp(value, "1") == 0;
  }();
  return enabled;
}

// Picks the implementation for `op` and, with BNORM_VERBOSE=1, prints the choice.
Path dispatch(const char* op, Impl impl, const BatchNormDims& dims) {
  if (!verbose()) return resolve(impl, dims, nullptr);
  std::string explanation;
  const Path path = resolve(impl, dims, &explanation);
  std::fprintf(stderr, "bnorm: %s (N=%lld,C=%lld,S=%lld) -> %s\n", op, static_cast<long long>(dims.N),
               static_cast<long long>(dims.C), static_cast<long long>(dims.S), explanation.c_str());
  return path;
}

std::atomic<int> g_threads{0};  // 0: OpenMP's default

// Debug-only precondition check (the callers validate at the API boundary).
[[maybe_unused]] bool valid(const BatchNormDims& dims) {
  return dims.N >= 0 && dims.C >= 0 && dims.S >= 0;
}

// Statistics of an empty batch (N*S == 0): mean = 0, var = 0, invstd = 1/sqrt(epsilon).
void write_empty_batch_stats(std::int64_t C, float epsilon, float* mean, float* var, float* invstd) {
  for (std::int64_t c = 0; c < C; ++c) {
    mean[c] = 0.0f;
    var[c] = 0.0f;
    invstd[c] = cpu::invstd_of(0.0, epsilon);
  }
}

// The double statistics of an empty batch: 0, 0 (null pointers skipped).
void write_empty_batch_stats_d(std::int64_t C, double* mean_d, double* var_d) {
  for (std::int64_t c = 0; c < C; ++c) {
    if (mean_d != nullptr) mean_d[c] = 0.0;
    if (var_d != nullptr) var_d[c] = 0.0;
  }
}

void write_zeros(std::int64_t C, float* a, float* b) {
  for (std::int64_t c = 0; c < C; ++c) {
    if (a != nullptr) a[c] = 0.0f;
    if (b != nullptr) b[c] = 0.0f;
  }
}

}  // namespace

std::string explain_choice(const BatchNormDims& dims) {
  std::string explanation;
  choose(dims, &explanation);
  return explanation;
}

void set_num_threads(int n) {
  g_threads.store(n > 0 ? n : 0, std::memory_order_relaxed);
}

int num_threads() {
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

namespace {

// The cpu paths of the training backward (plain, or with the ReLU's mask), after the
// dispatcher's checks; an empty batch gives zero gradients.
void cpu_backward_training(Path path, const float* dy, const float* x, const BatchNormDims& dims,
                           const float* mean, const float* invstd, const float* gamma, float* dx, float* dgamma,
                           float* dbeta, const cpu::ReluMask& mask) {
  if (dims.count() == 0) return write_zeros(dims.C, dgamma, dbeta);
  if (path == Path::cpu_nhwc)
    return cpu::nhwc_backward_training(dy, x, dims, mean, invstd, gamma, dx, dgamma, dbeta, num_threads(), mask);
  cpu::nchw_backward_training(dy, x, dims, mean, invstd, gamma, dx, dgamma, dbeta, num_threads(), mask);
}

// forward_training and forward_training_relu: one dispatch, the ReLU a flag of the cpu
// loops and a separate reference function.
void forward_training_any(bool relu, const float* x, const BatchNormDims& dims, const float* gamma,
                          const float* beta, float epsilon, float* y, float* mean, float* var, float* invstd,
                          double* mean_d, double* var_d, Impl impl) {
  assert(valid(dims) && (dims.C == 0 || (mean != nullptr && var != nullptr && invstd != nullptr)));
  const Path path = dispatch(relu ? "forward_training_relu" : "forward_training", impl, dims);
  if (dims.C == 0) return;
  if (path == Path::reference) {
    return relu ? reference::forward_training_relu(x, dims, gamma, beta, epsilon, y, mean, var, invstd, mean_d,
                                                   var_d)
                : reference::forward_training(x, dims, gamma, beta, epsilon, y, mean, var, invstd, mean_d, var_d);
  }
  if (dims.count() == 0) {
    write_empty_batch_stats_d(dims.C, mean_d, var_d);
    return write_empty_batch_stats(dims.C, epsilon, mean, var, invstd);
  }
  if (path == Path::cpu_nhwc)
    return cpu::nhwc_forward_training(x, dims, gamma, beta, epsilon, y, mean, var, invstd, num_threads(), relu,
                                      mean_d, var_d);
  cpu::nchw_forward_training(x, dims, gamma, beta, epsilon, y, mean, var, invstd, num_threads(), relu, mean_d,
                             var_d);
}

}  // namespace

void moments(const float* x, const BatchNormDims& dims, float* mean, float* var, Impl impl) {
  moments(x, dims, mean, var, nullptr, nullptr, impl);
}

void moments(const float* x, const BatchNormDims& dims, float* mean, float* var, double* mean_d,
             double* var_d, Impl impl) {
  assert(valid(dims) && (dims.C == 0 || (mean != nullptr && var != nullptr)));
  const Path path = dispatch("moments", impl, dims);
  if (dims.C == 0) return;
  if (path == Path::reference) return reference::moments(x, dims, mean, var, mean_d, var_d);
  if (dims.count() == 0) {
    write_empty_batch_stats_d(dims.C, mean_d, var_d);
    return write_zeros(dims.C, mean, var);
  }
  if (path == Path::cpu_nhwc) return cpu::nhwc_moments(x, dims, mean, var, num_threads(), mean_d, var_d);
  cpu::nchw_moments(x, dims, mean, var, num_threads(), mean_d, var_d);
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
  assert(valid(dims));
  const Path path = dispatch("forward_inference", impl, dims);
  if (dims.numel() == 0) return;
  if (path == Path::reference)
    return reference::forward_inference(x, dims, mean, var, gamma, beta, epsilon, y);
  if (path == Path::cpu_nhwc)
    return cpu::nhwc_forward_inference(x, dims, mean, var, gamma, beta, epsilon, y, num_threads());
  cpu::nchw_forward_inference(x, dims, mean, var, gamma, beta, epsilon, y, num_threads());
}

void backward_training(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                       const float* invstd, const float* gamma, float* dx, float* dgamma, float* dbeta,
                       Impl impl) {
  assert(valid(dims));
  const Path path = dispatch("backward_training", impl, dims);
  if (dims.C == 0) return;
  if (path == Path::reference)
    return reference::backward_training(dy, x, dims, mean, invstd, gamma, dx, dgamma, dbeta);
  cpu_backward_training(path, dy, x, dims, mean, invstd, gamma, dx, dgamma, dbeta, cpu::ReluMask{});
}

void backward_training_dx(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                          const float* invstd, const float* gamma, const double* sum_dy,
                          const double* sum_dy_xhat, std::int64_t count, float* dx, Impl impl) {
  assert(valid(dims));
  assert(count >= dims.count());
  (void)impl;  // one elementwise pass: only the reference loop for now (no vector path yet)
  if (dims.C == 0) return;
  reference::backward_training_dx(dy, x, dims, mean, invstd, gamma, sum_dy, sum_dy_xhat, count, dx);
}

void backward_inference(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                        const float* var, const float* gamma, float epsilon, float* dx, float* dgamma,
                        float* dbeta, Impl impl) {
  assert(valid(dims));
  const Path path = dispatch("backward_inference", impl, dims);
  if (dims.C == 0) return;
  if (path == Path::reference)
    return reference::backward_inference(dy, x, dims, mean, var, gamma, epsilon, dx, dgamma, dbeta);
  if (dims.count() == 0) return write_zeros(dims.C, dgamma, dbeta);
  if (path == Path::cpu_nhwc)
    return cpu::nhwc_backward_inference(dy, x, dims, mean, var, gamma, epsilon, dx, dgamma, dbeta,
                                        num_threads());
  cpu::nchw_backward_inference(dy, x, dims, mean, var, gamma, epsilon, dx, dgamma, dbeta, num_threads());
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
                            const float* mean, const float* invstd, const float* gamma, float* dx, float* dgamma,
                            float* dbeta, Impl impl) {
  assert(valid(dims));
  const Path path = dispatch("backward_training_relu", impl, dims);
  if (dims.C == 0) return;
  if (path == Path::reference)
    return reference::backward_training_relu(dy, x, y, dims, mean, invstd, gamma, dx, dgamma, dbeta);
  cpu_backward_training(path, dy, x, dims, mean, invstd, gamma, dx, dgamma, dbeta, cpu::ReluMask::from_output(y));
}

void backward_training_relu(const float* dy, const float* x, const BatchNormDims& dims, const float* mean,
                            const float* invstd, const float* gamma, const float* beta, float* dx, float* dgamma,
                            float* dbeta, Impl impl) {
  assert(valid(dims));
  const Path path = dispatch("backward_training_relu", impl, dims);
  if (dims.C == 0) return;
  if (path == Path::reference)
    return reference::backward_training_relu(dy, x, dims, mean, invstd, gamma, beta, dx, dgamma, dbeta);
  cpu_backward_training(path, dy, x, dims, mean, invstd, gamma, dx, dgamma, dbeta, cpu::ReluMask::from_input(beta));
}

const char* simd_level() {
  return &cpu::simd_ops() == &cpu::simd_ops_generic() ? "generic" : "avx2";
}

void force_generic_simd(bool on) {
  cpu::force_generic_simd(on);
}

void force_streaming_stores(bool on) {
  cpu::force_streaming_stores(on);
}

}  // namespace bnorm::kernels
