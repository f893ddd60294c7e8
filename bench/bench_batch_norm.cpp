// bench_batch_norm: bnorm's batch-norm kernels side by side with the permanent reference,
// libtorch and oneDNN (when built in), and a same-size copy and two-pass sweep as the
// memory roofline, in one process and one run, at 1 and 2 threads.
//
// Byte model (what GB/s counts): the tensors an op must move, 4 bytes per element each,
// per-channel vectors ignored:
//   fwd_train, fwd_infer, fwd_train_relu   read x, write y            2 streams
//   bwd_train, bwd_infer, bwd_train_relu   read dy, x, write dx       3 streams
// (bwd_train_relu needs no more: bnorm recomputes the ReLU's mask from x; libtorch's
// threshold_backward also reads y, oneDNN a workspace of one bit per element.)
// Rooflines, on the same streams and the same number of threads:
//   copy    one pass:  out = in_1 + ... + in_R  (R = 1: y = x; R = 2: dx = x + dy; ...)
//   sweep2  two passes: a reduction over the inputs (sum of in_1 * ... * in_R), then copy
// roof_frac = roofline time / impl time, with the roofline of the targets:
//   forward training (and + ReLU), backward (all three): copy for nchw, sweep2 for nhwc/nc;
//   forward inference: copy.
//
// Output: a table on stdout and a JSON file (default bench/results/latest.json):
//   {"machine": {...}, "byte_model": "...", "records": [
//     {"op", "shape", "layout", "threads", "impl", "median_us", "gbps", "roof_frac"}, ...]}
#include <malloc.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "bnorm/kernels/batch_norm.hpp"

#ifdef BNORM_BENCH_HAVE_TORCH
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>
#endif
#ifdef BNORM_BENCH_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace bk = bnorm::kernels;

namespace {

constexpr float kEps = 1e-5f;

// ---------------------------------------------------------------------------------------
// Shapes, layouts, ops.

struct Shape {
  std::int64_t N, C, H, W;  // 2-D shapes: H = W = 0
  const char* set;          // "main" or "long"
  int layers;               // ResNet-50 layers with this shape (long set), else 0
  bool two_d() const { return H == 0; }
  std::int64_t numel() const { return N * C * (two_d() ? 1 : H * W); }
  std::string name() const {
    std::string s = std::to_string(N) + "x" + std::to_string(C);
    if (!two_d()) s += "x" + std::to_string(H) + "x" + std::to_string(W);
    return s;
  }
};

enum class Layout { nchw, nhwc, nc };
const char* name_of(Layout l) {
  return l == Layout::nchw ? "nchw" : l == Layout::nhwc ? "nhwc" : "nc";
}

bk::BatchNormDims dims_of(const Shape& s, Layout l) {
  if (l == Layout::nchw) return {s.N, s.C, s.H * s.W};
  if (l == Layout::nhwc) return {s.N * s.H * s.W, s.C, 1};
  return {s.N, s.C, 1};
}

enum class Op { fwd_train, fwd_infer, bwd_train, bwd_infer, fwd_train_relu, bwd_train_relu };
constexpr Op kOps[] = {Op::fwd_train, Op::fwd_infer,      Op::bwd_train,
                       Op::bwd_infer, Op::fwd_train_relu, Op::bwd_train_relu};
const char* name_of(Op op) {
  switch (op) {
    case Op::fwd_train: return "fwd_train";
    case Op::fwd_infer: return "fwd_infer";
    case Op::bwd_train: return "bwd_train";
    case Op::bwd_infer: return "bwd_infer";
    case Op::fwd_train_relu: return "fwd_train_relu";
    case Op::bwd_train_relu: return "bwd_train_relu";
  }
  return "?";
}
// Input streams of the byte model (the output is one more).
int inputs_of(Op op) {
  switch (op) {
    case Op::fwd_train:
    case Op::fwd_infer:
    case Op::fwd_train_relu: return 1;
    case Op::bwd_train:
    case Op::bwd_infer:
    case Op::bwd_train_relu: return 2;
  }
  return 1;
}
// The roofline a case is judged against: "copy" or "sweep2".
const char* roof_of(Op op, Layout l) {
  if (op == Op::fwd_infer) return "copy";
  return l == Layout::nchw ? "copy" : "sweep2";
}

// ---------------------------------------------------------------------------------------
// Buffers.

struct Free {
  void operator()(float* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<float[], Free>;

Buffer make_buffer(std::int64_t n) {
  const std::size_t bytes = (static_cast<std::size_t>(std::max<std::int64_t>(n, 1)) * 4 + 63) / 64 * 64;
  Buffer b(static_cast<float*>(std::aligned_alloc(64, bytes)));
  if (!b) {
    std::fprintf(stderr, "bench: out of memory (%zu bytes)\n", bytes);
    std::exit(1);
  }
  std::memset(b.get(), 0, bytes);  // touch every page now, not in a timed call
  return b;
}

// Cheap deterministic pseudo-normal samples (sum of four uniforms, centred).
struct Rng {
  std::uint64_t s;
  float uniform() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return static_cast<float>((s >> 40) & 0xFFFFFF) / 16777216.0f;
  }
  float normal() { return (uniform() + uniform() + uniform() + uniform() - 2.0f) * 1.732f; }
};

// ---------------------------------------------------------------------------------------
// Roofline kernels: plain loops on the op's streams, split into equal contiguous chunks,
// one per thread. Compiled for AVX2 and baseline, picked at load time.

__attribute__((target_clones("avx2", "default"))) void copy_chunk(const float* __restrict a,
                                                                  const float* __restrict b,
                                                                  const float* __restrict c,
                                                                  float* __restrict out, std::int64_t n,
                                                                  int inputs) {
  if (inputs == 1) {
    for (std::int64_t i = 0; i < n; ++i) out[i] = a[i];
  } else if (inputs == 2) {
    for (std::int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
  } else {
    for (std::int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i] + c[i];
  }
}

__attribute__((target_clones("avx2", "default"))) float reduce_chunk(const float* __restrict a,
                                                                     const float* __restrict b,
                                                                     const float* __restrict c,
                                                                     std::int64_t n, int inputs) {
  float s = 0.0f;
  if (inputs == 1) {
#pragma omp simd reduction(+ : s)
    for (std::int64_t i = 0; i < n; ++i) s += a[i];
  } else if (inputs == 2) {
#pragma omp simd reduction(+ : s)
    for (std::int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  } else {
#pragma omp simd reduction(+ : s)
    for (std::int64_t i = 0; i < n; ++i) s += a[i] * b[i] * c[i];
  }
  return s;
}

volatile float g_sink = 0.0f;

void roofline(const float* a, const float* b, const float* c, float* out, std::int64_t n, int inputs,
              int threads, bool two_pass) {
  float total = 0.0f;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const std::int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
    if (two_pass) total += reduce_chunk(a + lo, b + lo, c + lo, hi - lo, inputs);
    copy_chunk(a + lo, b + lo, c + lo, out + lo, hi - lo, inputs);
  }
  if (two_pass) g_sink = total;
}

// ---------------------------------------------------------------------------------------
// One case: a (shape, layout) with its buffers, and the runners of every impl and op.

struct Case {
  Shape shape;
  Layout layout;
  bk::BatchNormDims d;
  std::int64_t n;
  Buffer x, dy, yrelu, y, dx;
  std::vector<float> gamma, beta, rmean, rvar, mean, var, invstd, dgamma, dbeta, smean, svar;

  Case(const Shape& s, Layout l) : shape(s), layout(l), d(dims_of(s, l)), n(s.numel()) {
    x = make_buffer(n);
    dy = make_buffer(n);
    yrelu = make_buffer(n);
    y = make_buffer(n);
    dx = make_buffer(n);
    const auto C = static_cast<std::size_t>(s.C);
    Rng rng{0x9E3779B97F4A7C15ull ^ static_cast<std::uint64_t>(n)};
    gamma.resize(C);
    beta.resize(C);
    rmean.resize(C);
    rvar.resize(C);
    for (std::size_t c = 0; c < C; ++c) {
      gamma[c] = 1.0f + 0.2f * rng.normal();
      beta[c] = 0.2f * rng.normal();
      rmean[c] = 0.5f * rng.normal();
      rvar[c] = 0.5f + rng.uniform();
    }
    // x: channel offsets + unit noise, whatever the layout.
    const std::int64_t inner = d.S;
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t c = (i / inner) % d.C;
      x[i] = 0.5f * static_cast<float>(c % 7) - 1.0f + rng.normal();
      dy[i] = rng.normal();
    }
    mean.resize(C);
    var.resize(C);
    invstd.resize(C);
    dgamma.resize(C);
    dbeta.resize(C);
    // Forward statistics every backward uses, and the ReLU output libtorch's
    // bwd_train_relu reads.
    bk::forward_training_relu(x.get(), d, gamma.data(), beta.data(), kEps, yrelu.get(), mean.data(), var.data(),
                              invstd.data());
    smean = mean;
    svar = var;
  }
};

using Runner = std::function<void()>;

Runner bnorm_runner(Case& k, Op op, bk::Impl impl) {
  float* g = k.gamma.data();
  float* b = k.beta.data();
  switch (op) {
    case Op::fwd_train:
      return [&k, g, b, impl] {
        bk::forward_training(k.x.get(), k.d, g, b, kEps, k.y.get(), k.mean.data(), k.var.data(), k.invstd.data(),
                             impl);
      };
    case Op::fwd_infer:
      return [&k, g, b, impl] {
        bk::forward_inference(k.x.get(), k.d, k.rmean.data(), k.rvar.data(), g, b, kEps, k.y.get(), impl);
      };
    case Op::bwd_train:
      return [&k, g, impl] {
        bk::backward_training(k.dy.get(), k.x.get(), k.d, k.smean.data(), k.invstd.data(), g, k.dx.get(),
                              k.dgamma.data(), k.dbeta.data(), impl);
      };
    case Op::bwd_infer:
      return [&k, g, impl] {
        bk::backward_inference(k.dy.get(), k.x.get(), k.d, k.rmean.data(), k.rvar.data(), g, kEps, k.dx.get(),
                               k.dgamma.data(), k.dbeta.data(), impl);
      };
    case Op::fwd_train_relu:
      return [&k, g, b, impl] {
        bk::forward_training_relu(k.x.get(), k.d, g, b, kEps, k.y.get(), k.mean.data(), k.var.data(),
                                  k.invstd.data(), impl);
      };
    case Op::bwd_train_relu:  // the mask recomputed from x (reads dy and x only)
      return [&k, g, b, impl] {
        bk::backward_training_relu(k.dy.get(), k.x.get(), k.d, k.smean.data(), k.invstd.data(), g, b, k.dx.get(),
                                   k.dgamma.data(), k.dbeta.data(), impl);
      };
  }
  return {};
}

Runner roof_runner(Case& k, Op op, int threads, bool two_pass) {
  const int inputs = inputs_of(op);
  return [&k, inputs, threads, two_pass] {
    // Streams: dy, x, y (as many as the op reads), into dx.
    roofline(k.dy.get(), k.x.get(), k.yrelu.get(), k.dx.get(), k.n, inputs, threads, two_pass);
  };
}

#ifdef BNORM_BENCH_HAVE_TORCH
// libtorch on the same buffers (from_blob, no copies); outputs are allocated by libtorch
// per call, as a user calling it gets (glibc's mmap is disabled in main(), so large
// blocks are recycled without page faults).
struct TorchCase {
  at::Tensor x, dy, yrelu, w, b, rm, rv, sm, si;
  std::vector<float> rm_own, rv_own;
  explicit TorchCase(Case& k) {
    const auto opts = at::TensorOptions().dtype(at::kFloat);
    const Shape& s = k.shape;
    auto wrap = [&](float* p) {
      if (k.layout == Layout::nc) return at::from_blob(p, {s.N, s.C}, opts);
      if (k.layout == Layout::nchw) return at::from_blob(p, {s.N, s.C, s.H, s.W}, opts);
      return at::from_blob(p, {s.N, s.C, s.H, s.W}, {s.H * s.W * s.C, 1, s.W * s.C, s.C}, opts);
    };
    x = wrap(k.x.get());
    dy = wrap(k.dy.get());
    yrelu = wrap(k.yrelu.get());
    rm_own = k.rmean;
    rv_own = k.rvar;
    w = at::from_blob(k.gamma.data(), {s.C}, opts);
    b = at::from_blob(k.beta.data(), {s.C}, opts);
    rm = at::from_blob(rm_own.data(), {s.C}, opts);
    rv = at::from_blob(rv_own.data(), {s.C}, opts);
    sm = at::from_blob(k.smean.data(), {s.C}, opts);
    si = at::from_blob(k.invstd.data(), {s.C}, opts);
  }
};

Runner torch_runner(TorchCase& t, Op op) {
  const double eps = static_cast<double>(kEps);
  switch (op) {
    case Op::fwd_train:
      return [&t, eps] { g_sink = std::get<0>(at::native_batch_norm(t.x, t.w, t.b, t.rm, t.rv, true, 0.1, eps)).dim(); };
    case Op::fwd_infer:
      return [&t, eps] { g_sink = std::get<0>(at::native_batch_norm(t.x, t.w, t.b, t.rm, t.rv, false, 0.1, eps)).dim(); };
    case Op::bwd_train:
      return [&t, eps] {
        g_sink = std::get<0>(at::native_batch_norm_backward(t.dy, t.x, t.w, t.rm, t.rv, t.sm, t.si, true, eps,
                                                            {true, true, true}))
                     .dim();
      };
    case Op::bwd_infer:
      return [&t, eps] {
        g_sink = std::get<0>(at::native_batch_norm_backward(t.dy, t.x, t.w, t.rm, t.rv, {}, {}, false, eps,
                                                            {true, true, true}))
                     .dim();
      };
    case Op::fwd_train_relu:
      return [&t, eps] {
        at::Tensor y = std::get<0>(at::native_batch_norm(t.x, t.w, t.b, t.rm, t.rv, true, 0.1, eps));
        at::relu_(y);
      };
    case Op::bwd_train_relu:
      return [&t, eps] {
        const at::Tensor g = at::threshold_backward(t.dy, t.yrelu, 0);
        g_sink = std::get<0>(at::native_batch_norm_backward(g, t.x, t.w, t.rm, t.rv, t.sm, t.si, true, eps,
                                                            {true, true, true}))
                     .dim();
      };
  }
  return {};
}
#endif

#ifdef BNORM_BENCH_HAVE_DNNL
// oneDNN on the same buffers. `as4d`: a 2-D (N, C) tensor described as (N, C, 1, 1) nhwc,
// the description that gets oneDNN's vectorized kernel.
struct DnnlCase {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::memory::desc data_md, stat_md;
  dnnl::memory src, dst, ddst, dsrc, mean, var, scale, shift, dscale, dshift, ws;
  std::vector<float> mean_own, var_own;
  explicit DnnlCase(Case& k, bool as4d) {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const Shape& s = k.shape;
    if (k.layout == Layout::nc && !as4d) {
      data_md = dnnl::memory::desc({s.N, s.C}, dt::f32, tag::nc);
    } else if (k.layout == Layout::nc) {
      data_md = dnnl::memory::desc({s.N, s.C, 1, 1}, dt::f32, tag::nhwc);
    } else {
      data_md = dnnl::memory::desc({s.N, s.C, s.H, s.W}, dt::f32,
                                   k.layout == Layout::nchw ? tag::nchw : tag::nhwc);
    }
    stat_md = dnnl::memory::desc({s.C}, dt::f32, tag::a);
    src = dnnl::memory(data_md, eng, k.x.get());
    dst = dnnl::memory(data_md, eng, k.y.get());
    ddst = dnnl::memory(data_md, eng, k.dy.get());
    dsrc = dnnl::memory(data_md, eng, k.dx.get());
    mean_own = k.smean;
    var_own = k.svar;
    mean = dnnl::memory(stat_md, eng, mean_own.data());
    var = dnnl::memory(stat_md, eng, var_own.data());
    scale = dnnl::memory(stat_md, eng, k.gamma.data());
    shift = dnnl::memory(stat_md, eng, k.beta.data());
    dscale = dnnl::memory(stat_md, eng, k.dgamma.data());
    dshift = dnnl::memory(stat_md, eng, k.dbeta.data());
  }
};

Runner dnnl_runner(DnnlCase& c, Op op) {
  using flags = dnnl::normalization_flags;
  using pk = dnnl::prop_kind;
  const flags ss = flags::use_scale | flags::use_shift;
  const bool relu = op == Op::fwd_train_relu || op == Op::bwd_train_relu;
  const bool infer = op == Op::fwd_infer || op == Op::bwd_infer;
  const flags fl = ss | (relu ? flags::fuse_norm_relu : flags::none) | (infer ? flags::use_global_stats : flags::none);
  const pk fwd_kind = op == Op::fwd_infer ? pk::forward_inference : pk::forward_training;
  dnnl::batch_normalization_forward::primitive_desc fpd(
      dnnl::batch_normalization_forward::desc(fwd_kind, c.data_md, kEps, fl), c.eng);
  if (relu) c.ws = dnnl::memory(fpd.workspace_desc(), c.eng);
  auto fwd = std::make_shared<dnnl::batch_normalization_forward>(fpd);
  std::unordered_map<int, dnnl::memory> fargs = {{DNNL_ARG_SRC, c.src},     {DNNL_ARG_DST, c.dst},
                                                 {DNNL_ARG_MEAN, c.mean},   {DNNL_ARG_VARIANCE, c.var},
                                                 {DNNL_ARG_SCALE, c.scale}, {DNNL_ARG_SHIFT, c.shift}};
  if (relu) fargs[DNNL_ARG_WORKSPACE] = c.ws;
  if (op == Op::fwd_train || op == Op::fwd_infer || op == Op::fwd_train_relu)
    return [&c, fwd, fargs] {
      fwd->execute(c.strm, fargs);
      c.strm.wait();
    };
  // Backward: statistics from a forward run (and the ReLU workspace).
  if (!infer) {
    fwd->execute(c.strm, fargs);
    c.strm.wait();
  }
  dnnl::batch_normalization_backward::primitive_desc bpd(
      dnnl::batch_normalization_backward::desc(pk::backward, c.data_md, c.data_md, kEps, fl), c.eng, fpd);
  auto bwd = std::make_shared<dnnl::batch_normalization_backward>(bpd);
  std::unordered_map<int, dnnl::memory> bargs = {
      {DNNL_ARG_SRC, c.src},       {DNNL_ARG_DIFF_DST, c.ddst},       {DNNL_ARG_MEAN, c.mean},
      {DNNL_ARG_VARIANCE, c.var},  {DNNL_ARG_SCALE, c.scale},         {DNNL_ARG_SHIFT, c.shift}, {DNNL_ARG_DIFF_SRC, c.dsrc},
      {DNNL_ARG_DIFF_SCALE, c.dscale}, {DNNL_ARG_DIFF_SHIFT, c.dshift}};
  if (relu) bargs[DNNL_ARG_WORKSPACE] = c.ws;
  return [&c, bwd, bargs] {
    bwd->execute(c.strm, bargs);
    c.strm.wait();
  };
}

std::string dnnl_impl_name(DnnlCase& c, Op op) {
  using flags = dnnl::normalization_flags;
  const flags fl = flags::use_scale | flags::use_shift;
  const dnnl::prop_kind kind =
      op == Op::fwd_infer ? dnnl::prop_kind::forward_inference : dnnl::prop_kind::forward_training;
  dnnl::batch_normalization_forward::primitive_desc fpd(
      dnnl::batch_normalization_forward::desc(kind, c.data_md, kEps, fl), c.eng);
  return fpd.impl_info_str();
}
#endif

// ---------------------------------------------------------------------------------------
// Timing.

struct Options {
  std::string out = "bench/results/latest.json";
  std::vector<int> threads = {1, 2};
  bool main_set = true, long_set = true;
  double budget_s = 0.12;       // per (case, impl): repetitions = budget / first call
  double long_budget_s = 0.05;  // the same for the long set
  int max_reps = 200;
  int min_reps = 5;
  std::string only_op;  // run one op only (debugging)
  std::string shapes;   // comma-separated shape names to run (e.g. 1024x512,32x16x8x8), or all
  bool reference = true;
};

double now_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median microseconds of `run`: one warm-up call, then repetitions for about `budget`.
constexpr double kWarmupUs = 20000.0;

double median_us(const Runner& run, double budget_s, int min_reps, int max_reps) {
  double t0 = now_us();
  run();
  const double first = now_us() - t0;
  if (first > 250000.0 && min_reps <= 1) return first;  // very slow (the reference): one call
  // Short calls warm up for kWarmupUs of calls first: right after another library's
  // calls, its pool threads (libtorch's, oneDNN's, OpenBLAS's) still spin for a few
  // milliseconds on this machine's 2 cores, and the OpenMP workers of the next impl
  // compete with them (64x1024 forward_inference of bnorm at 2 threads: 10-11 us for the
  // first 4 ms of calls, then 6.3 us; the same for every impl).
  if (first < 2000.0) {
    const double until = now_us() + kWarmupUs;
    do run();
    while (now_us() < until);
  }
  int reps = static_cast<int>(budget_s * 1e6 / std::max(first, 1.0));
  reps = std::clamp(reps, min_reps, max_reps);
  std::vector<double> times(static_cast<std::size_t>(reps));
  for (double& t : times) {
    t0 = now_us();
    run();
    t = now_us() - t0;
  }
  std::nth_element(times.begin(), times.begin() + reps / 2, times.end());
  double m = times[static_cast<std::size_t>(reps / 2)];
  if (reps % 2 == 0) {
    m = (m + *std::max_element(times.begin(), times.begin() + reps / 2)) / 2.0;
  }
  return m;
}

struct Record {
  std::string op, shape, layout, impl, set;
  int threads;
  double median_us, gbps, roof_frac;
};

const char* const kPeers[] = {"libtorch", "onednn", "onednn_nhwc4d"};
bool is_peer(const std::string& impl) {
  for (const char* p : kPeers)
    if (impl == p) return true;
  return false;
}

std::string machine_line() {
  std::string model = "?";
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  bool avx2 = false, fma = false, avx512 = false;
  while (std::getline(cpuinfo, line)) {
    if (model == "?" && line.rfind("model name", 0) == 0) model = line.substr(line.find(':') + 2);
    if (line.rfind("flags", 0) == 0) {
      avx2 = line.find(" avx2") != std::string::npos;
      fma = line.find(" fma") != std::string::npos;
      avx512 = line.find(" avx512f") != std::string::npos;
    }
  }
  std::string load = "?";
  std::ifstream loadavg("/proc/loadavg");
  if (loadavg) {
    std::string one;
    loadavg >> one;
    load = one;
  }
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE), l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  std::ostringstream os;
  os << model << ", " << cores << " cores, " << (avx2 ? "AVX2 " : "") << (fma ? "FMA " : "")
     << (avx512 ? "AVX-512 " : "") << "L2 " << (l2 >> 10) << " KiB, L3 " << (l3 >> 20) << " MiB, load average "
     << load << " at start";
  return os.str();
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (const char ch : s) {
    if (ch == '"' || ch == '\\') o += '\\';
    o += ch;
  }
  return o;
}

void write_json(const Options& opt, const std::vector<Record>& recs, const std::string& machine) {
  const std::string path = opt.out;
  const auto slash = path.rfind('/');
  if (slash != std::string::npos) {
    const std::string cmd = "mkdir -p '" + path.substr(0, slash) + "'";
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "bench: cannot create %s\n", cmd.c_str());
  }
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    std::fprintf(stderr, "bench: cannot write %s\n", path.c_str());
    return;
  }
  std::fprintf(f, "{\n  \"machine\": {\"cpu\": \"%s\", \"simd\": \"%s\"},\n", json_escape(machine).c_str(),
               bk::simd_level());
  std::fprintf(f,
               "  \"byte_model\": \"4 bytes per element per stream; fwd_train, fwd_infer, fwd_train_relu: x, y; "
               "bwd_train, bwd_infer, bwd_train_relu: dy, x, dx. roof_frac = roofline time / "
               "impl time; roofline: copy (one pass) for nchw training/backward and all inference forward, "
               "sweep2 (reduction pass + copy pass) for nhwc/nc training and backward\",\n");
  std::fprintf(f, "  \"records\": [\n");
  for (std::size_t i = 0; i < recs.size(); ++i) {
    const Record& r = recs[i];
    std::fprintf(f,
                 "    {\"op\": \"%s\", \"shape\": \"%s\", \"layout\": \"%s\", \"threads\": %d, \"impl\": \"%s\", "
                 "\"median_us\": %.3f, \"gbps\": %.3f, \"roof_frac\": %.4f}%s\n",
                 r.op.c_str(), r.shape.c_str(), r.layout.c_str(), r.threads, r.impl.c_str(), r.median_us, r.gbps,
                 r.roof_frac, i + 1 < recs.size() ? "," : "");
  }
  std::fprintf(f, "  ]\n}\n");
  std::fclose(f);
}

std::vector<Shape> shapes(const Options& opt) {
  std::vector<Shape> v;
  if (opt.main_set) {
    for (const Shape& s : {Shape{32, 64, 56, 56, "main", 0}, Shape{256, 256, 14, 14, "main", 0},
                           Shape{8, 32, 112, 112, "main", 0}, Shape{32, 16, 8, 8, "main", 0},
                           Shape{1024, 512, 0, 0, "main", 0}, Shape{64, 1024, 0, 0, "main", 0},
                           Shape{4096, 64, 0, 0, "main", 0}})
      v.push_back(s);
  }
  if (opt.long_set) {
    // The batch-norm layers of ResNet-50 (torchvision v1.5) at batch 32: distinct shapes
    // and how many of the 53 layers have each. 32x64x56x56 (6 layers) is in the main set.
    for (const Shape& s :
         {Shape{32, 64, 112, 112, "long", 1}, Shape{32, 256, 56, 56, "long", 4}, Shape{32, 128, 56, 56, "long", 1},
          Shape{32, 128, 28, 28, "long", 7}, Shape{32, 512, 28, 28, "long", 5}, Shape{32, 256, 28, 28, "long", 1},
          Shape{32, 256, 14, 14, "long", 11}, Shape{32, 1024, 14, 14, "long", 7},
          Shape{32, 512, 14, 14, "long", 1}, Shape{32, 512, 7, 7, "long", 5}, Shape{32, 2048, 7, 7, "long", 4}})
      v.push_back(s);
  }
  return v;
}

double geomean(const std::vector<double>& v) {
  if (v.empty()) return std::nan("");
  double s = 0.0;
  for (const double e : v) s += std::log(e);
  return std::exp(s / static_cast<double>(v.size()));
}

int run(const Options& opt) {
  const std::string machine = machine_line();
  std::printf("bench_batch_norm: %s; bnorm simd %s\n", machine.c_str(), bk::simd_level());
  std::printf("peers:%s%s\n",
#ifdef BNORM_BENCH_HAVE_TORCH
              " libtorch " TORCH_VERSION,
#else
              " (no libtorch)",
#endif
#ifdef BNORM_BENCH_HAVE_DNNL
              " oneDNN"
#else
              " (no oneDNN)"
#endif
  );
  std::printf("median us (GB/s by the byte model); ratio = fastest peer time / bnorm time; roof = roofline time "
              "/ bnorm time\n");
  std::vector<Record> recs;
  const double start = now_us();
  for (const Shape& shape : shapes(opt)) {
    if (!opt.shapes.empty() && ("," + opt.shapes + ",").find("," + shape.name() + ",") == std::string::npos)
      continue;
    const std::vector<Layout> layouts =
        shape.two_d() ? std::vector<Layout>{Layout::nc} : std::vector<Layout>{Layout::nchw, Layout::nhwc};
    for (const Layout layout : layouts) {
      Case k(shape, layout);
#ifdef BNORM_BENCH_HAVE_TORCH
      TorchCase tc(k);
#endif
#ifdef BNORM_BENCH_HAVE_DNNL
      DnnlCase dc(k, false);
      std::unique_ptr<DnnlCase> dc4;
      if (layout == Layout::nc) dc4 = std::make_unique<DnnlCase>(k, true);
      std::printf("\n== %s %s (%s set%s, %.1f MiB) oneDNN: %s%s%s\n", shape.name().c_str(), name_of(layout),
                  shape.set, shape.layers ? (", " + std::to_string(shape.layers) + " layers").c_str() : "",
                  static_cast<double>(k.n) * 4.0 / 1048576.0, dnnl_impl_name(dc, Op::fwd_train).c_str(),
                  dc4 ? ", as (N,C,1,1) nhwc: " : "", dc4 ? dnnl_impl_name(*dc4, Op::fwd_train).c_str() : "");
#else
      std::printf("\n== %s %s (%s set, %.1f MiB)\n", shape.name().c_str(), name_of(layout), shape.set,
                  static_cast<double>(k.n) * 4.0 / 1048576.0);
#endif
      const double budget = std::string(shape.set) == "long" ? opt.long_budget_s : opt.budget_s;
      std::printf("%-15s %2s %12s %12s %12s %12s %12s %12s %12s %7s %6s\n", "op", "t", "bnorm", "reference",
                  "libtorch", "onednn", "onednn_4d", "copy", "sweep2", "ratio", "roof");
      for (const int threads : opt.threads) {
        bk::set_num_threads(threads);
        omp_set_num_threads(threads);
#ifdef BNORM_BENCH_HAVE_TORCH
        at::set_num_threads(threads);
#endif
        for (const Op op : kOps) {
          if (!opt.only_op.empty() && opt.only_op != name_of(op)) continue;
          std::vector<std::pair<std::string, Runner>> impls;
          impls.emplace_back("copy", roof_runner(k, op, threads, false));
          impls.emplace_back("sweep2", roof_runner(k, op, threads, true));
          impls.emplace_back("bnorm", bnorm_runner(k, op, bk::Impl::automatic));
          // The reference is single-threaded: measured once, at 1 thread, main set only.
          if (opt.reference && threads == 1 && std::string(shape.set) == "main")
            impls.emplace_back("reference", bnorm_runner(k, op, bk::Impl::reference));
#ifdef BNORM_BENCH_HAVE_TORCH
          impls.emplace_back("libtorch", torch_runner(tc, op));
#endif
#ifdef BNORM_BENCH_HAVE_DNNL
          impls.emplace_back("onednn", dnnl_runner(dc, op));
          if (dc4) impls.emplace_back("onednn_nhwc4d", dnnl_runner(*dc4, op));
#endif
          std::map<std::string, double> us;
          for (auto& [name, runner] : impls) {
            const bool slow = name == "reference";
            us[name] = median_us(runner, budget, slow ? 1 : opt.min_reps, slow ? 3 : opt.max_reps);
          }
          const double bytes = 4.0 * static_cast<double>(k.n) * (inputs_of(op) + 1);
          const double roof_us = us[roof_of(op, layout)];
          double best_peer = 0.0;
          for (const auto& [name, t] : us) {
            recs.push_back({name_of(op), shape.name(), name_of(layout), name, shape.set, threads, t,
                            bytes / (t * 1e3), roof_us / t});
            if (is_peer(name) && (best_peer == 0.0 || t < best_peer)) best_peer = t;
          }
          auto cell = [&](const char* name) {
            char buf[32];
            const auto it = us.find(name);
            if (it == us.end()) return std::string("-");
            std::snprintf(buf, sizeof buf, "%.0f(%.1f)", it->second, bytes / (it->second * 1e3));
            return std::string(buf);
          };
          std::printf("%-15s %2d %12s %12s %12s %12s %12s %12s %12s %7.2f %6.2f\n", name_of(op), threads,
                      cell("bnorm").c_str(), cell("reference").c_str(), cell("libtorch").c_str(),
                      cell("onednn").c_str(), cell("onednn_nhwc4d").c_str(), cell("copy").c_str(),
                      cell("sweep2").c_str(), best_peer > 0.0 ? best_peer / us["bnorm"] : std::nan(""),
                      roof_us / us["bnorm"]);
          std::fflush(stdout);
        }
      }
    }
  }
  bk::set_num_threads(0);

  // Summary: per op and thread count, geometric means over the cases.
  std::printf("\n== summary: geometric means over shapes and layouts (ratio = fastest peer / bnorm; roof = "
              "roofline / bnorm)\n");
  std::printf("%-15s %2s %6s %8s %8s %8s\n", "op", "t", "cases", "ratio", "roof", "min");
  std::map<std::tuple<std::string, std::string, std::string, int>, std::map<std::string, double>> by_case;
  for (const Record& r : recs) by_case[{r.op, r.shape, r.layout, r.threads}][r.impl] = r.median_us;
  for (const Op op : kOps) {
    for (const int threads : opt.threads) {
      std::vector<double> ratios, roofs;
      for (const auto& [key, m] : by_case) {
        if (std::get<0>(key) != name_of(op) || std::get<3>(key) != threads) continue;
        double best = 0.0;
        for (const auto& [impl, t] : m)
          if (is_peer(impl) && (best == 0.0 || t < best)) best = t;
        const Layout l = std::get<2>(key) == "nchw" ? Layout::nchw
                         : std::get<2>(key) == "nhwc" ? Layout::nhwc
                                                      : Layout::nc;
        if (best > 0.0) ratios.push_back(best / m.at("bnorm"));
        roofs.push_back(m.at(roof_of(op, l)) / m.at("bnorm"));
      }
      if (roofs.empty()) continue;
      std::printf("%-15s %2d %6zu %8.2f %8.2f %8.2f\n", name_of(op), threads, roofs.size(), geomean(ratios),
                  geomean(roofs), ratios.empty() ? std::nan("") : *std::min_element(ratios.begin(), ratios.end()));
    }
  }
  write_json(opt, recs, machine);
  std::printf("\nwrote %s (%zu records) in %.0f s\n", opt.out.c_str(), recs.size(), (now_us() - start) / 1e6);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Peers allocate their outputs per call: keep glibc from returning large blocks to the
  // kernel (mmap / trim), so they are recycled without page faults, as a caching
  // allocator would.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);

  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--out") {
      opt.out = value();
    } else if (a == "--set") {
      const std::string s = value();
      opt.main_set = s == "main" || s == "all";
      opt.long_set = s == "long" || s == "all";
    } else if (a == "--threads") {
      opt.threads.clear();
      std::stringstream ss(value());
      std::string t;
      while (std::getline(ss, t, ',')) opt.threads.push_back(std::atoi(t.c_str()));
    } else if (a == "--budget") {
      opt.budget_s = std::atof(value().c_str());
    } else if (a == "--long-budget") {
      opt.long_budget_s = std::atof(value().c_str());
    } else if (a == "--op") {
      opt.only_op = value();
    } else if (a == "--shape") {
      opt.shapes = value();
    } else if (a == "--simd") {
      bk::force_simd_level(value());  // bnorm's loops (peers keep theirs)
    } else if (a == "--no-reference") {
      opt.reference = false;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--out FILE] [--set main|long|all] [--threads 1,2] [--budget S] [--long-budget S] "
                   "[--op NAME] [--shape NxC[xHxW],...] [--simd generic|avx2|avx512] [--no-reference]\n",
                   argv[0]);
      return a == "--help" ? 0 : 2;
    }
  }
  return run(opt);
}
