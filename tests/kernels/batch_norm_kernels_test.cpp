// Tests of the stateless batch-norm kernels (bnorm/kernels/batch_norm.hpp): every fast
// path against the permanent reference, determinism across thread counts, accuracy on
// data far from zero, finite-difference gradients of the double reference, the
// backward invariants, aliasing / null / assigned outputs, dispatch and empty batches.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/kernels/batch_norm.hpp"
#include "bnorm/kernels/batch_norm_ref.hpp"

namespace bk = bnorm::kernels;
using bk::BatchNormDims;
using bk::Impl;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Deterministic normal samples (mt19937 + Box-Muller, identical on every platform).
class Rng {
 public:
  explicit Rng(std::uint32_t seed) : engine_(seed) {}
  double uniform() {  // in (0, 1)
    return (static_cast<double>(engine_()) + 0.5) / 4294967296.0;
  }
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double r = std::sqrt(-2.0 * std::log(uniform()));
    const double t = 6.283185307179586 * uniform();
    spare_ = r * std::sin(t);
    has_spare_ = true;
    return r * std::cos(t);
  }
  template <typename T = float>
  std::vector<T> normals(std::int64_t n, double mean = 0.0, double stddev = 1.0) {
    std::vector<T> v(static_cast<std::size_t>(n));
    for (T& e : v) e = static_cast<T>(mean + stddev * normal());
    return v;
  }
  template <typename T = float>
  std::vector<T> uniforms(std::int64_t n, double lo, double hi) {
    std::vector<T> v(static_cast<std::size_t>(n));
    for (T& e : v) e = static_cast<T>(lo + (hi - lo) * uniform());
    return v;
  }

 private:
  std::mt19937 engine_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

std::string str(const BatchNormDims& d) {
  return "(N=" + std::to_string(d.N) + ",C=" + std::to_string(d.C) + ",S=" + std::to_string(d.S) + ")";
}

std::vector<float> junk(std::int64_t n) {
  return std::vector<float>(static_cast<std::size_t>(n), kNaN);
}

// |got - want| <= atol + rtol * |want| elementwise, every value finite.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what,
                  double rtol = 1e-5, double atol = 1e-6) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int failures = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    const bool ok = std::isfinite(g) && std::abs(g - w) <= atol + rtol * std::abs(w);
    if (!ok && ++failures <= 5) ADD_FAILURE() << what << "[" << i << "]: got " << g << ", want " << w;
  }
  EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << got.size() << " differ";
}

void expect_bitwise(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << what;
}

// Everything every op produces for one input, by one implementation.
struct Outputs {
  std::vector<float> m_mean, m_var;                             // moments
  std::vector<float> y, mean, var, invstd;                      // forward_training
  std::vector<float> y_inf;                                     // forward_inference
  std::vector<float> dx, dgamma, dbeta;                         // backward_training
  std::vector<float> dx_inf, dgamma_inf, dbeta_inf;             // backward_inference
  std::vector<float> y_relu, mean_relu, var_relu, invstd_relu;  // forward_training_relu
  std::vector<float> dx_relu, dgamma_relu, dbeta_relu;          // backward_training_relu (y)
  std::vector<float> dx_relu_x, dgamma_relu_x, dbeta_relu_x;    // backward_training_relu (mask from x)
  std::vector<std::vector<float>*> all() {
    return {&m_mean,      &m_var,      &y,         &mean,          &var,         &invstd,
            &y_inf,       &dx,         &dgamma,    &dbeta,         &dx_inf,      &dgamma_inf,
            &dbeta_inf,   &y_relu,     &mean_relu, &var_relu,      &invstd_relu, &dx_relu,
            &dgamma_relu, &dbeta_relu, &dx_relu_x, &dgamma_relu_x, &dbeta_relu_x};
  }
};
const char* const kOutputNames[] = {"moments.mean",
                                    "moments.var",
                                    "y",
                                    "mean",
                                    "var",
                                    "invstd",
                                    "y_inference",
                                    "dx",
                                    "dgamma",
                                    "dbeta",
                                    "dx_inference",
                                    "dgamma_inference",
                                    "dbeta_inference",
                                    "y_relu",
                                    "mean_relu",
                                    "var_relu",
                                    "invstd_relu",
                                    "dx_relu",
                                    "dgamma_relu",
                                    "dbeta_relu",
                                    "dx_relu (mask from x)",
                                    "dgamma_relu (mask from x)",
                                    "dbeta_relu (mask from x)"};

struct Inputs {
  BatchNormDims dims;
  std::vector<float> x, dy, gamma, beta, run_mean, run_var;
  // The backward-training kernels are fed the reference's forward statistics (and the
  // reference's ReLU output), so every implementation sees the same mean, invstd and mask.
  std::vector<float> mean, invstd, yrelu;
  float epsilon = 1e-3f;
  bool affine = true;

  Inputs(BatchNormDims d, bool with_affine, std::uint32_t seed) : dims(d), affine(with_affine) {
    Rng rng(seed);
    x = rng.normals(d.numel(), 0.5, 2.0);
    // Different offsets per channel.
    for (std::int64_t n = 0; n < d.N; ++n)
      for (std::int64_t c = 0; c < d.C; ++c)
        for (std::int64_t s = 0; s < d.S; ++s)
          x[static_cast<std::size_t>((n * d.C + c) * d.S + s)] += static_cast<float>(c % 5) - 2.0f;
    dy = rng.normals(d.numel());
    gamma = rng.normals(d.C, 1.0, 0.5);
    beta = rng.normals(d.C, 0.0, 0.5);
    run_mean = rng.normals(d.C, 0.0, 0.5);
    run_var = rng.uniforms(d.C, 0.5, 2.0);
    mean.resize(static_cast<std::size_t>(d.C));
    invstd.resize(static_cast<std::size_t>(d.C));
    refresh();
  }
  // Recomputes mean, invstd and yrelu from x (after x was edited).
  void refresh() {
    std::vector<float> var(mean.size());
    yrelu.resize(x.size());
    bk::reference::forward_training_relu(x.data(), dims, g(), b(), epsilon, yrelu.data(), mean.data(),
                                         var.data(), invstd.data());
  }
  const float* g() const { return affine ? gamma.data() : nullptr; }
  const float* b() const { return affine ? beta.data() : nullptr; }
};

// The natural size of the backward kernels' per-channel sums (dbeta = sum g, dgamma =
// sum g * xhat), channel by channel: sqrt(sum g^2 (1 + xhat^2)) with g = dy, the larger
// xhat of the batch and the running statistics. The fast kernels take g * (x - mean) in
// float (as TensorFlow does), so a sum that cancels to near zero is exact to a fraction
// of this scale, not of its own value; OutputsAccurateAtAnyOffset bounds it at 1e-6.
std::vector<double> gradient_sums_scale(const Inputs& in) {
  const BatchNormDims& d = in.dims;
  std::vector<double> scale(static_cast<std::size_t>(d.C), 0.0);
  for (std::int64_t c = 0; c < d.C; ++c) {
    const std::size_t k = static_cast<std::size_t>(c);
    const double inv_run = 1.0 / std::sqrt(static_cast<double>(in.run_var[k]) + in.epsilon);
    double sq = 0.0;
    for (std::int64_t n = 0; n < d.N; ++n)
      for (std::int64_t s = 0; s < d.S; ++s) {
        const std::size_t i = static_cast<std::size_t>((n * d.C + c) * d.S + s);
        const double g = in.dy[i], x = in.x[i];
        const double h =
            std::max(std::abs((x - in.mean[k]) * in.invstd[k]), std::abs((x - in.run_mean[k]) * inv_run));
        sq += g * g * (1.0 + h * h);
      }
    scale[k] = std::sqrt(sq);
  }
  return scale;
}

// Per-channel sums: |got - want| <= 1e-5 |want| + 1e-6 scale[c], every value finite.
void expect_sums_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what,
                       const std::vector<double>& scale) {
  ASSERT_EQ(got.size(), want.size()) << what;
  ASSERT_EQ(got.size(), scale.size()) << what;
  int failures = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    const bool ok = std::isfinite(g) && std::abs(g - w) <= 1e-6 * scale[i] + 1e-5 * std::abs(w);
    if (!ok && ++failures <= 5)
      ADD_FAILURE() << what << "[" << i << "]: got " << g << ", want " << w << " (scale " << scale[i] << ")";
  }
  EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << got.size() << " differ";
}

// Runs all five ops with outputs pre-filled with NaN (they must be assigned).
Outputs run_all(const Inputs& in, Impl impl) {
  const BatchNormDims& d = in.dims;
  Outputs o;
  o.m_mean = junk(d.C);
  o.m_var = junk(d.C);
  bk::moments(in.x.data(), d, o.m_mean.data(), o.m_var.data(), impl);

  o.y = junk(d.numel());
  o.mean = junk(d.C);
  o.var = junk(d.C);
  o.invstd = junk(d.C);
  bk::forward_training(in.x.data(), d, in.g(), in.b(), in.epsilon, o.y.data(), o.mean.data(), o.var.data(),
                       o.invstd.data(), impl);

  o.y_inf = junk(d.numel());
  bk::forward_inference(in.x.data(), d, in.run_mean.data(), in.run_var.data(), in.g(), in.b(), in.epsilon,
                        o.y_inf.data(), impl);

  o.dx = junk(d.numel());
  o.dgamma = junk(d.C);
  o.dbeta = junk(d.C);
  bk::backward_training(in.dy.data(), in.x.data(), d, in.mean.data(), in.invstd.data(), in.g(), o.dx.data(),
                        o.dgamma.data(), o.dbeta.data(), impl);

  o.dx_inf = junk(d.numel());
  o.dgamma_inf = junk(d.C);
  o.dbeta_inf = junk(d.C);
  bk::backward_inference(in.dy.data(), in.x.data(), d, in.run_mean.data(), in.run_var.data(), in.g(),
                         in.epsilon, o.dx_inf.data(), o.dgamma_inf.data(), o.dbeta_inf.data(), impl);

  o.y_relu = junk(d.numel());
  o.mean_relu = junk(d.C);
  o.var_relu = junk(d.C);
  o.invstd_relu = junk(d.C);
  bk::forward_training_relu(in.x.data(), d, in.g(), in.b(), in.epsilon, o.y_relu.data(), o.mean_relu.data(),
                            o.var_relu.data(), o.invstd_relu.data(), impl);

  o.dx_relu = junk(d.numel());
  o.dgamma_relu = junk(d.C);
  o.dbeta_relu = junk(d.C);
  bk::backward_training_relu(in.dy.data(), in.x.data(), in.yrelu.data(), d, in.mean.data(), in.invstd.data(),
                             in.g(), o.dx_relu.data(), o.dgamma_relu.data(), o.dbeta_relu.data(), impl);

  o.dx_relu_x = junk(d.numel());
  o.dgamma_relu_x = junk(d.C);
  o.dbeta_relu_x = junk(d.C);
  bk::backward_training_relu(in.dy.data(), in.x.data(), d, in.mean.data(), in.invstd.data(), in.g(), in.b(),
                             o.dx_relu_x.data(), o.dgamma_relu_x.data(), o.dbeta_relu_x.data(), impl);
  return o;
}

// Every output of two run_all calls, bitwise equal.
void expect_all_bitwise(Outputs& got_outputs, Outputs& want_outputs) {
  const auto got = got_outputs.all();
  const auto want = want_outputs.all();
  for (std::size_t k = 0; k < got.size(); ++k) expect_bitwise(*got[k], *want[k], kOutputNames[k]);
}

// ---------------------------------------------------------------------------------------
// Fast paths against the reference.

struct ShapeCase {
  std::int64_t N, C, S;
};

// Restores the automatic choice of SIMD level when a test that forces levels ends.
class SimdLevelGuard {
 public:
  ~SimdLevelGuard() { bk::force_simd_level(""); }
};

class FastVsReference : public ::testing::TestWithParam<ShapeCase> {};

// Every SIMD level this machine runs (simd_levels()), each against the reference.
TEST_P(FastVsReference, EveryOpAgreesWithReference) {
  SimdLevelGuard guard;
  const ShapeCase sc = GetParam();
  const BatchNormDims d{sc.N, sc.C, sc.S};
  for (const bool affine : {true, false}) {
    SCOPED_TRACE(str(d) + (affine ? " with gamma/beta" : " without gamma/beta"));
    const Inputs in(d, affine, 1234u + static_cast<std::uint32_t>(sc.N * 7 + sc.C * 3 + sc.S));
    Outputs ref = run_all(in, Impl::reference);
    const std::vector<double> sums_scale = gradient_sums_scale(in);
    for (const std::string& level : bk::simd_levels()) {
      bk::force_simd_level(level);
      for (const Impl impl : {Impl::automatic, Impl::cpu}) {
        SCOPED_TRACE(level + (impl == Impl::cpu ? " Impl::cpu" : " Impl::automatic"));
        Outputs fast = run_all(in, impl);
        const auto got = fast.all();
        const auto want = ref.all();
        for (std::size_t k = 0; k < got.size(); ++k) {
          const std::string name = kOutputNames[k];
          if (name.rfind("dgamma", 0) == 0 || name.rfind("dbeta", 0) == 0)
            expect_sums_close(*got[k], *want[k], name, sums_scale);
          else
            expect_close(*got[k], *want[k], name);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, FastVsReference,
                         ::testing::Values(ShapeCase{2, 3, 1}, ShapeCase{7, 5, 1}, ShapeCase{300, 17, 1},
                                           ShapeCase{1000, 64, 1}, ShapeCase{5000, 3, 1},
                                           ShapeCase{40, 1100, 1}, ShapeCase{4, 3, 5}, ShapeCase{2, 8, 49},
                                           ShapeCase{3, 1, 1000}, ShapeCase{8, 32, 196},
                                           ShapeCase{2, 3, 40000}, ShapeCase{700, 2, 30}),
                         [](const ::testing::TestParamInfo<ShapeCase>& shape) {
                           return "N" + std::to_string(shape.param.N) + "_C" + std::to_string(shape.param.C) +
                                  "_S" + std::to_string(shape.param.S);
                         });

// Known values (SEMANTICS.md 4.3, float64), reached by the fast path in float.
TEST(BatchNormKernels, WorkedNumbers) {
  const BatchNormDims d{3, 2, 1};
  const std::vector<float> x = {1, 2, 3, 6, 5, 10};
  const std::vector<float> dy = {0.1f, -0.2f, 0.3f, 0.5f, -0.4f, 0.2f};
  const std::vector<float> gamma = {1.5f, 0.5f};
  for (const Impl impl : {Impl::cpu, Impl::reference}) {
    std::vector<float> y(6), mean(2), var(2), invstd(2);
    bk::forward_training(x.data(), d, nullptr, nullptr, 1e-5f, y.data(), mean.data(), var.data(),
                         invstd.data(), impl);
    expect_close(mean, {3.0f, 6.0f}, "mean");
    expect_close(var, {8.0f / 3.0f, 32.0f / 3.0f}, "var");
    expect_close(
        y, {-1.2247425750014138f, -1.2247442972928344f, 0.0f, 0.0f, 1.2247425750014138f, 1.2247442972928344f},
        "y");
    std::vector<float> dx(6), dgamma(2), dbeta(2);
    bk::backward_training(dy.data(), x.data(), d, mean.data(), invstd.data(), gamma.data(), dx.data(),
                          dgamma.data(), dbeta.data(), impl);
    expect_close(dbeta, {0.0f, 0.5f}, "dbeta");
    expect_close(dgamma, {-0.6123712875007069f, 0.4898977189171338f}, "dgamma");
    expect_close(dx,
                 {-0.13778267854376533f, -0.02551553489851827f, 0.2755670793753181f, 0.05103101238720144f,
                  -0.13778440083155283f, -0.025515477488683165f},
                 "dx");
  }
}

// ---------------------------------------------------------------------------------------
// Determinism across thread counts.

class ThreadCountGuard {
 public:
  ~ThreadCountGuard() { bk::set_num_threads(0); }
};

TEST(BatchNormKernels, BitwiseIdenticalForAnyThreadCount) {
  ThreadCountGuard guard;
  for (const BatchNormDims d :
       {BatchNormDims{4096, 64, 1}, BatchNormDims{8, 32, 3136}, BatchNormDims{2, 3, 60000},
        BatchNormDims{30000, 3, 1}, BatchNormDims{64, 1024, 1}, BatchNormDims{1000, 77, 1},
        BatchNormDims{32, 17, 196}, BatchNormDims{16, 2048, 7},
        // Small tensors that go parallel: channels-first from 16 Ki
        // elements (by channel, and by (channel, block) task for C = 7);
        // channels-last with fewer blocks than threads (row shares).
        BatchNormDims{32, 16, 64}, BatchNormDims{3, 7, 1000}, BatchNormDims{61, 1100, 1},
        BatchNormDims{200, 600, 1},
        // Channels-last split by lanes and channels (fewer blocks than
        // threads): P = C (one block of 16 and of 100 rows), P = 2C, P = 8C.
        BatchNormDims{16, 4096, 1}, BatchNormDims{100, 520, 1}, BatchNormDims{64, 1028, 1},
        BatchNormDims{64, 1025, 1}}) {
    for (const bool spiky : {false, true}) {
      SCOPED_TRACE(str(d) + (spiky ? " spiky" : " normal"));
      Inputs in(d, true, 99u);
      if (spiky) {
        // +-1e17 at the first and last element of every channel (x and dy): double sums
        // then depend on their order at float precision (the spike absorbs the small
        // values added to it), so a blocking that followed the thread count would show.
        for (std::int64_t c = 0; c < d.C; ++c) {
          const std::size_t first = static_cast<std::size_t>(c * d.S);
          const std::size_t last = static_cast<std::size_t>(((d.N - 1) * d.C + c) * d.S + d.S - 1);
          in.x[first] += 1e17f;
          in.x[last] -= 1e17f;
          in.dy[first] += 1e17f;
          in.dy[last] -= 1e17f;
        }
        in.refresh();
      }
      bk::set_num_threads(1);
      Outputs one = run_all(in, Impl::automatic);
      for (const int threads : {2, 3, 4}) {
        SCOPED_TRACE("threads=" + std::to_string(threads));
        bk::set_num_threads(threads);
        EXPECT_EQ(bk::num_threads(), threads);
        Outputs many = run_all(in, Impl::automatic);
        expect_all_bitwise(many, one);
      }
      // Every level at 2 threads: the same bits again (the levels share lanes and order,
      // simd_level() in batch_norm.hpp).
      SimdLevelGuard levels;
      bk::set_num_threads(2);
      for (const std::string& level : bk::simd_levels()) {
        SCOPED_TRACE(level + " threads=2");
        bk::force_simd_level(level);
        Outputs other = run_all(in, Impl::automatic);
        expect_all_bitwise(other, one);
      }
    }
  }
  bk::set_num_threads(0);
  EXPECT_GE(bk::num_threads(), 1);
}

// Per-channel mean and biased variance of x (N, C, S), two passes in double: the exact
// statistics of the float data, to which the kernels' outputs are compared.
std::pair<std::vector<double>, std::vector<double>> double_two_pass(const std::vector<float>& x,
                                                                    const BatchNormDims& d) {
  const auto at = [&](std::int64_t n, std::int64_t c, std::int64_t s) {
    return static_cast<double>(x[static_cast<std::size_t>((n * d.C + c) * d.S + s)]);
  };
  std::vector<double> mean(static_cast<std::size_t>(d.C), 0.0), var(static_cast<std::size_t>(d.C), 0.0);
  for (std::int64_t c = 0; c < d.C; ++c) {
    double sum = 0.0;
    for (std::int64_t n = 0; n < d.N; ++n)
      for (std::int64_t s = 0; s < d.S; ++s) sum += at(n, c, s);
    const double m = sum / static_cast<double>(d.count());
    double sq = 0.0;
    for (std::int64_t n = 0; n < d.N; ++n)
      for (std::int64_t s = 0; s < d.S; ++s) sq += (at(n, c, s) - m) * (at(n, c, s) - m);
    mean[static_cast<std::size_t>(c)] = m;
    var[static_cast<std::size_t>(c)] = sq / static_cast<double>(d.count());
  }
  return {mean, var};
}

// ---------------------------------------------------------------------------------------
// Accuracy on data far from zero (1e4 and 1e6 times the spread).

TEST(BatchNormKernels, MomentsAccurateWithLargeOffset) {
  for (const double offset : {1e4, 1e6}) {
    for (const BatchNormDims d :
         {BatchNormDims{20000, 3, 1}, BatchNormDims{16, 3, 1250}, BatchNormDims{3000, 64, 1},
          BatchNormDims{5, 24, 900}, BatchNormDims{100, 512, 1}}) {
      SCOPED_TRACE(str(d) + " offset " + std::to_string(offset));
      Rng rng(7u);
      const std::vector<float> x = rng.normals(d.numel(), offset, 1.0);
      const std::size_t C = static_cast<std::size_t>(d.C);
      // Double two-pass reference on the same float data.
      const auto [want_mean, want_var] = double_two_pass(x, d);
      for (const Impl impl : {Impl::cpu, Impl::reference}) {
        SCOPED_TRACE(impl == Impl::cpu ? "Impl::cpu" : "Impl::reference");
        std::vector<float> mean(C), var(C), y(x.size()), mean2(C), var2(C), invstd(C), mean3(C), var3(C),
            invstd3(C);
        bk::moments(x.data(), d, mean.data(), var.data(), impl);
        bk::forward_training(x.data(), d, nullptr, nullptr, 1e-3f, y.data(), mean2.data(), var2.data(),
                             invstd.data(), impl);
        bk::forward_training_relu(x.data(), d, nullptr, nullptr, 1e-3f, y.data(), mean3.data(), var3.data(),
                                  invstd3.data(), impl);
        for (std::size_t c = 0; c < C; ++c) {
          const double sd = std::sqrt(want_var[c]);
          // The float mean cannot be closer than half an ulp (0.03 at 1e6) to the exact one.
          // Bounds: the targets are 0.01 sd and 1e-4 relative; the header
          // (kernels/batch_norm.hpp) promises 3e-7 sd and 52 u = 3.1e-6 relative.
          constexpr double kMeanSd = 3e-7, kVarRel = 3.1e-6;
          const float rounded = static_cast<float>(want_mean[c]);
          const double half_ulp = 0.5 * (std::nextafter(rounded, 2.0f * rounded) - rounded);
          EXPECT_NEAR(mean[c], want_mean[c], kMeanSd * sd + half_ulp);
          EXPECT_NEAR(var[c], want_var[c], kVarRel * want_var[c]);
          EXPECT_NEAR(mean2[c], want_mean[c], kMeanSd * sd + half_ulp);
          EXPECT_NEAR(var2[c], want_var[c], kVarRel * want_var[c]);
          EXPECT_NEAR(invstd[c], 1.0 / std::sqrt(want_var[c] + 1e-3), 1e-4 / sd);
          EXPECT_NEAR(mean3[c], want_mean[c], kMeanSd * sd + half_ulp);
          EXPECT_NEAR(var3[c], want_var[c], kVarRel * want_var[c]);
        }
      }
    }
  }
}

// The double statistics (the overloads with mean_d, var_d): the float outputs are their
// rounding and do not change when they are asked for; unlike the float mean, the double
// one keeps the mean to 3e-7 standard deviations at any offset (what exact merges of
// several calls need).
TEST(BatchNormKernels, DoubleStatisticsAreTheUnroundedOnes) {
  for (const double offset : {0.0, 1e4, 1e6}) {
    for (const BatchNormDims d : {BatchNormDims{1, 3, 1}, BatchNormDims{7, 5, 1}, BatchNormDims{3, 4, 5},
                                  BatchNormDims{3000, 64, 1}, BatchNormDims{5, 24, 900}}) {
      SCOPED_TRACE(str(d) + " offset " + std::to_string(offset));
      Rng rng(11u);
      const std::vector<float> x = rng.normals(d.numel(), offset, 1.0);
      const std::size_t C = static_cast<std::size_t>(d.C);
      const auto [want_mean, want_var] = double_two_pass(x, d);  // reference
      for (const Impl impl : {Impl::cpu, Impl::reference}) {
        SCOPED_TRACE(impl == Impl::cpu ? "Impl::cpu" : "Impl::reference");
        for (int op = 0; op < 3; ++op) {
          SCOPED_TRACE(op == 0 ? "moments" : op == 1 ? "forward_training" : "forward_training_relu");
          std::vector<float> y(x.size()), y2(x.size()), mean(C), var(C), invstd(C),
              mean2 = junk(d.C), var2 = junk(d.C), invstd2 = junk(d.C);
          std::vector<double> mean_d(C, std::nan("")), var_d(C, std::nan(""));
          if (op == 0) {
            bk::moments(x.data(), d, mean.data(), var.data(), impl);
            bk::moments(x.data(), d, mean2.data(), var2.data(), mean_d.data(), var_d.data(), impl);
          } else if (op == 1) {
            bk::forward_training(x.data(), d, nullptr, nullptr, 1e-3f, y.data(), mean.data(), var.data(),
                                 invstd.data(), impl);
            bk::forward_training(x.data(), d, nullptr, nullptr, 1e-3f, y2.data(), mean2.data(), var2.data(),
                                 invstd2.data(), mean_d.data(), var_d.data(), impl);
          } else {
            bk::forward_training_relu(x.data(), d, nullptr, nullptr, 1e-3f, y.data(), mean.data(), var.data(),
                                      invstd.data(), impl);
            bk::forward_training_relu(x.data(), d, nullptr, nullptr, 1e-3f, y2.data(), mean2.data(),
                                      var2.data(), invstd2.data(), mean_d.data(), var_d.data(), impl);
          }
          expect_bitwise(mean2, mean, "mean");
          expect_bitwise(var2, var, "var");
          if (op > 0) {
            expect_bitwise(invstd2, invstd, "invstd");
            expect_bitwise(y2, y, "y");
          }
          for (std::size_t c = 0; c < C; ++c) {
            EXPECT_EQ(static_cast<float>(mean_d[c]), mean[c]) << "channel " << c;
            EXPECT_EQ(static_cast<float>(var_d[c]), var[c]) << "channel " << c;
            const double sd = std::sqrt(want_var[c]);
            EXPECT_NEAR(mean_d[c], want_mean[c], 3e-7 * sd + 1e-15 * std::abs(want_mean[c]))
                << "channel " << c;
            EXPECT_NEAR(var_d[c], want_var[c], 3.1e-6 * want_var[c]) << "channel " << c;
          }
        }
      }
    }
  }
  // An empty batch: 0, 0; C == 0 writes nothing.
  for (const Impl impl : {Impl::automatic, Impl::cpu, Impl::reference}) {
    std::vector<float> mean(3), var(3), invstd(3);
    std::vector<double> mean_d(3, std::nan("")), var_d(3, std::nan(""));
    bk::moments(nullptr, BatchNormDims{0, 3, 4}, mean.data(), var.data(), mean_d.data(), var_d.data(), impl);
    EXPECT_EQ(mean_d, std::vector<double>(3, 0.0));
    EXPECT_EQ(var_d, std::vector<double>(3, 0.0));
    mean_d.assign(3, std::nan(""));
    var_d.assign(3, std::nan(""));
    bk::forward_training(nullptr, BatchNormDims{4, 3, 0}, nullptr, nullptr, 1e-3f, nullptr, mean.data(),
                         var.data(), invstd.data(), mean_d.data(), var_d.data(), impl);
    EXPECT_EQ(mean_d, std::vector<double>(3, 0.0));
    EXPECT_EQ(var_d, std::vector<double>(3, 0.0));
    mean_d.assign(3, std::nan(""));
    var_d.assign(3, std::nan(""));
    bk::forward_training_relu(nullptr, BatchNormDims{0, 3, 1}, nullptr, nullptr, 1e-3f, nullptr, mean.data(),
                              var.data(), invstd.data(), mean_d.data(), var_d.data(), impl);
    EXPECT_EQ(mean_d, std::vector<double>(3, 0.0));
    EXPECT_EQ(var_d, std::vector<double>(3, 0.0));
  }
}

// ---------------------------------------------------------------------------------------
// Finite-difference gradients of the double reference.

// max |a - b| / max |b|
double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double diff = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / std::max(scale, 1e-300);
}

// Central differences of L(v) = sum(forward(v) * dy) with respect to every element of v.
template <typename Forward>
std::vector<double> numeric_gradient(std::vector<double>& v, const std::vector<double>& dy, Forward forward) {
  const double h = 1e-6;
  std::vector<double> grad(v.size());
  auto loss = [&] {
    const std::vector<double> y = forward();
    double l = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i) l += y[i] * dy[i];
    return l;
  };
  for (std::size_t i = 0; i < v.size(); ++i) {
    const double saved = v[i];
    v[i] = saved + h;
    const double up = loss();
    v[i] = saved - h;
    const double down = loss();
    v[i] = saved;
    grad[i] = (up - down) / (2.0 * h);
  }
  return grad;
}

TEST(BatchNormKernels, TrainingGradientsMatchFiniteDifferences) {
  for (const BatchNormDims d : {BatchNormDims{4, 3, 5}, BatchNormDims{6, 2, 1}}) {
    SCOPED_TRACE(str(d));
    Rng rng(21u);
    std::vector<double> x = rng.normals<double>(d.numel(), 1.0, 2.0);
    std::vector<double> gamma = rng.normals<double>(d.C, 1.0, 0.5);
    std::vector<double> beta = rng.normals<double>(d.C, 0.0, 0.5);
    const std::vector<double> dy = rng.normals<double>(d.numel());
    const double eps = 1e-3;
    std::vector<double> mean(static_cast<std::size_t>(d.C)), var(mean), invstd(mean);
    auto forward = [&] {
      std::vector<double> y(x.size()), m(mean.size()), v(mean.size()), inv(mean.size());
      bk::reference::forward_training(x.data(), d, gamma.data(), beta.data(), eps, y.data(), m.data(),
                                      v.data(), inv.data());
      return y;
    };
    std::vector<double> y(x.size());
    bk::reference::forward_training(x.data(), d, gamma.data(), beta.data(), eps, y.data(), mean.data(),
                                    var.data(), invstd.data());
    std::vector<double> dx(x.size()), dgamma(gamma.size()), dbeta(beta.size());
    bk::reference::backward_training(dy.data(), x.data(), d, mean.data(), invstd.data(), gamma.data(),
                                     dx.data(), dgamma.data(), dbeta.data());
    EXPECT_LT(relative_error(numeric_gradient(x, dy, forward), dx), 1e-6);
    EXPECT_LT(relative_error(numeric_gradient(gamma, dy, forward), dgamma), 1e-6);
    EXPECT_LT(relative_error(numeric_gradient(beta, dy, forward), dbeta), 1e-6);
  }
}

TEST(BatchNormKernels, InferenceGradientsMatchFiniteDifferences) {
  for (const BatchNormDims d : {BatchNormDims{4, 3, 5}, BatchNormDims{6, 2, 1}}) {
    SCOPED_TRACE(str(d));
    Rng rng(22u);
    std::vector<double> x = rng.normals<double>(d.numel(), 1.0, 2.0);
    std::vector<double> gamma = rng.normals<double>(d.C, 1.0, 0.5);
    std::vector<double> beta = rng.normals<double>(d.C, 0.0, 0.5);
    const std::vector<double> dy = rng.normals<double>(d.numel());
    const std::vector<double> mean = rng.normals<double>(d.C);
    const std::vector<double> var = rng.uniforms<double>(d.C, 0.5, 2.0);
    const double eps = 1e-3;
    auto forward = [&] {
      std::vector<double> y(x.size());
      bk::reference::forward_inference(x.data(), d, mean.data(), var.data(), gamma.data(), beta.data(), eps,
                                       y.data());
      return y;
    };
    std::vector<double> dx(x.size()), dgamma(gamma.size()), dbeta(beta.size());
    bk::reference::backward_inference(dy.data(), x.data(), d, mean.data(), var.data(), gamma.data(), eps,
                                      dx.data(), dgamma.data(), dbeta.data());
    EXPECT_LT(relative_error(numeric_gradient(x, dy, forward), dx), 1e-6);
    EXPECT_LT(relative_error(numeric_gradient(gamma, dy, forward), dgamma), 1e-6);
    EXPECT_LT(relative_error(numeric_gradient(beta, dy, forward), dbeta), 1e-6);
  }
}

// ---------------------------------------------------------------------------------------
// Invariants of the training backward: sum dx = 0 and
// sum dx * xhat = gamma * invstd * eps / (var + eps) * dgamma, per channel.

template <typename T>
void check_invariants(const std::vector<T>& x, const std::vector<T>& dx, const BatchNormDims& d,
                      const std::vector<T>& gamma, const std::vector<T>& mean, const std::vector<T>& var,
                      const std::vector<T>& invstd, const std::vector<T>& dgamma, double eps, double rtol) {
  for (std::int64_t c = 0; c < d.C; ++c) {
    const std::size_t ci = static_cast<std::size_t>(c);
    double sum_dx = 0.0, sum_abs_dx = 0.0, proj = 0.0, sum_abs_proj = 0.0;
    for (std::int64_t n = 0; n < d.N; ++n)
      for (std::int64_t s = 0; s < d.S; ++s) {
        const std::size_t i = static_cast<std::size_t>((n * d.C + c) * d.S + s);
        const double xhat =
            (static_cast<double>(x[i]) - static_cast<double>(mean[ci])) * static_cast<double>(invstd[ci]);
        sum_dx += static_cast<double>(dx[i]);
        sum_abs_dx += std::abs(static_cast<double>(dx[i]));
        proj += static_cast<double>(dx[i]) * xhat;
        sum_abs_proj += std::abs(static_cast<double>(dx[i]) * xhat);
      }
    const double expected = static_cast<double>(gamma[ci]) * static_cast<double>(invstd[ci]) * eps /
                            (static_cast<double>(var[ci]) + eps) * static_cast<double>(dgamma[ci]);
    EXPECT_NEAR(sum_dx, 0.0, rtol * sum_abs_dx) << "channel " << c;
    EXPECT_NEAR(proj, expected, rtol * sum_abs_proj) << "channel " << c;
    // The right-hand side is not negligible here, so the second check has teeth.
    EXPECT_GT(std::abs(expected), 100.0 * rtol * sum_abs_proj) << "channel " << c;
  }
}

TEST(BatchNormKernels, TrainingBackwardInvariants) {
  const double eps = 1e-2;  // comparable to the variance: eps/(var+eps) is far from 0
  for (const BatchNormDims d : {BatchNormDims{64, 3, 7}, BatchNormDims{500, 4, 1}}) {
    SCOPED_TRACE(str(d));
    Rng rng(5u);
    {  // double reference
      const std::vector<double> x = rng.normals<double>(d.numel(), 0.3, 0.1);
      const std::vector<double> dy = rng.normals<double>(d.numel());
      const std::vector<double> gamma = rng.normals<double>(d.C, 1.0, 0.5);
      std::vector<double> y(x.size()), mean(gamma.size()), var(mean), invstd(mean), dx(x.size()),
          dgamma(mean), dbeta(mean);
      bk::reference::forward_training(x.data(), d, gamma.data(), static_cast<const double*>(nullptr), eps,
                                      y.data(), mean.data(), var.data(), invstd.data());
      bk::reference::backward_training(dy.data(), x.data(), d, mean.data(), invstd.data(), gamma.data(),
                                       dx.data(), dgamma.data(), dbeta.data());
      check_invariants(x, dx, d, gamma, mean, var, invstd, dgamma, eps, 1e-12);
    }
    for (const Impl impl : {Impl::cpu, Impl::reference}) {  // float
      SCOPED_TRACE(impl == Impl::cpu ? "Impl::cpu" : "Impl::reference");
      const std::vector<float> x = rng.normals(d.numel(), 0.3, 0.1);
      const std::vector<float> dy = rng.normals(d.numel());
      const std::vector<float> gamma = rng.normals(d.C, 1.0, 0.5);
      std::vector<float> y(x.size()), mean(gamma.size()), var(mean), invstd(mean), dx(x.size()), dgamma(mean),
          dbeta(mean);
      bk::forward_training(x.data(), d, gamma.data(), nullptr, static_cast<float>(eps), y.data(), mean.data(),
                           var.data(), invstd.data(), impl);
      bk::backward_training(dy.data(), x.data(), d, mean.data(), invstd.data(), gamma.data(), dx.data(),
                            dgamma.data(), dbeta.data(), impl);
      check_invariants(x, dx, d, gamma, mean, var, invstd, dgamma,
                       static_cast<double>(static_cast<float>(eps)), 1e-5);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Aliasing, null outputs, assigned outputs.

TEST(BatchNormKernels, OutputMayAliasInput) {
  for (const BatchNormDims d :
       {BatchNormDims{300, 17, 1}, BatchNormDims{8, 32, 196}, BatchNormDims{5, 2, 3}}) {
    SCOPED_TRACE(str(d));
    const Inputs in(d, true, 3u);
    for (const Impl impl : {Impl::automatic, Impl::reference}) {
      std::vector<float> y(in.x.size()), mean(in.gamma.size()), var(mean), invstd(mean);
      bk::forward_training(in.x.data(), d, in.g(), in.b(), in.epsilon, y.data(), mean.data(), var.data(),
                           invstd.data(), impl);
      std::vector<float> inplace = in.x, mean2(mean.size()), var2(mean), invstd2(mean);
      bk::forward_training(inplace.data(), d, in.g(), in.b(), in.epsilon, inplace.data(), mean2.data(),
                           var2.data(), invstd2.data(), impl);
      expect_bitwise(inplace, y, "forward_training y (in place)");
      expect_bitwise(mean2, mean, "forward_training mean (in place)");
      expect_bitwise(invstd2, invstd, "forward_training invstd (in place)");

      bk::forward_inference(in.x.data(), d, in.run_mean.data(), in.run_var.data(), in.g(), in.b(), in.epsilon,
                            y.data(), impl);
      inplace = in.x;
      bk::forward_inference(inplace.data(), d, in.run_mean.data(), in.run_var.data(), in.g(), in.b(),
                            in.epsilon, inplace.data(), impl);
      expect_bitwise(inplace, y, "forward_inference y (in place)");
    }
  }
}

TEST(BatchNormKernels, NullGradientOutputsAreSkipped) {
  for (const BatchNormDims d : {BatchNormDims{300, 17, 1}, BatchNormDims{8, 32, 196}}) {
    SCOPED_TRACE(str(d));
    const Inputs in(d, true, 4u);
    for (const Impl impl : {Impl::automatic, Impl::reference}) {
      const Outputs full = run_all(in, impl);
      for (int mask = 0; mask < 8; ++mask) {
        SCOPED_TRACE("mask " + std::to_string(mask));
        std::vector<float> dx = junk(d.numel()), dgamma = junk(d.C), dbeta = junk(d.C);
        float* pdx = (mask & 1) ? dx.data() : nullptr;
        float* pdg = (mask & 2) ? dgamma.data() : nullptr;
        float* pdb = (mask & 4) ? dbeta.data() : nullptr;
        bk::backward_training(in.dy.data(), in.x.data(), d, in.mean.data(), in.invstd.data(), in.g(), pdx,
                              pdg, pdb, impl);
        if (pdx) {
          expect_bitwise(dx, full.dx, "dx");
        }
        if (pdg) {
          expect_bitwise(dgamma, full.dgamma, "dgamma");
        }
        if (pdb) {
          expect_bitwise(dbeta, full.dbeta, "dbeta");
        }
        if (!pdx) {
          EXPECT_TRUE(std::isnan(dx[0])) << "dx written although null";
        }

        // Refill in place: pdx, pdg, pdb point into these buffers.
        std::fill(dx.begin(), dx.end(), kNaN);
        std::fill(dgamma.begin(), dgamma.end(), kNaN);
        std::fill(dbeta.begin(), dbeta.end(), kNaN);
        bk::backward_inference(in.dy.data(), in.x.data(), d, in.run_mean.data(), in.run_var.data(), in.g(),
                               in.epsilon, pdx, pdg, pdb, impl);
        if (pdx) {
          expect_bitwise(dx, full.dx_inf, "dx_inference");
        }
        if (pdg) {
          expect_bitwise(dgamma, full.dgamma_inf, "dgamma_inference");
        }
        if (pdb) {
          expect_bitwise(dbeta, full.dbeta_inf, "dbeta_inference");
        }
      }
    }
  }
}

TEST(BatchNormKernels, OutputsAreAssignedNotAccumulated) {
  for (const BatchNormDims d : {BatchNormDims{1000, 64, 1}, BatchNormDims{8, 32, 196}}) {
    SCOPED_TRACE(str(d));
    const Inputs in(d, true, 6u);
    for (const Impl impl : {Impl::automatic, Impl::reference}) {
      // run_all pre-fills with NaN; a second run over the first's outputs must not change
      // anything either (an accumulating kernel would double them).
      Outputs first = run_all(in, impl);
      for (auto* v : first.all())
        for (const float e : *v) ASSERT_TRUE(std::isfinite(e));
      Outputs second = first;
      const BatchNormDims& dd = in.dims;
      bk::forward_training(in.x.data(), dd, in.g(), in.b(), in.epsilon, second.y.data(), second.mean.data(),
                           second.var.data(), second.invstd.data(), impl);
      bk::backward_training(in.dy.data(), in.x.data(), dd, in.mean.data(), in.invstd.data(), in.g(),
                            second.dx.data(), second.dgamma.data(), second.dbeta.data(), impl);
      expect_bitwise(second.y, first.y, "y");
      expect_bitwise(second.dx, first.dx, "dx");
      expect_bitwise(second.dgamma, first.dgamma, "dgamma");
      expect_bitwise(second.dbeta, first.dbeta, "dbeta");
    }
  }
}

// ---------------------------------------------------------------------------------------
// Dispatch.

TEST(BatchNormKernels, ExplainChoice) {
  EXPECT_EQ(bk::explain_choice({8, 3, 49}), "cpu_nchw (cpu_nhwc rejected: S=49 != 1)");
  EXPECT_EQ(bk::explain_choice({8, 3, 1}), "cpu_nhwc");
  EXPECT_EQ(bk::explain_choice({0, 3, 1}), "cpu_nhwc");
  EXPECT_EQ(bk::explain_choice({4, 3, 0}),
            "reference (cpu_nhwc rejected: S=0 != 1; cpu_nchw rejected: S=0 <= 1)");
}

// Runs in a re-executed child: sets BNORM_VERBOSE before the first dispatch reads it.
[[noreturn]] void dispatch_verbosely() {
  setenv("BNORM_VERBOSE", "1", 1);
  std::vector<float> x(8 * 3 * 49, 1.0f), mean(3), var(3);
  bk::moments(x.data(), BatchNormDims{8, 3, 49}, mean.data(), var.data());
  bk::moments(x.data(), BatchNormDims{8, 3, 49}, mean.data(), var.data(), Impl::reference);
  std::exit(0);
}

TEST(BatchNormKernels, VerbosePrintsEachDispatch) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // re-executes: BNORM_VERBOSE read afresh
  EXPECT_EXIT(dispatch_verbosely(), ::testing::ExitedWithCode(0),
              "bnorm: moments \\(N=8,C=3,S=49\\) -> cpu_nchw \\(cpu_nhwc rejected: S=49 != 1\\) "
              "\\[simd (generic|avx2|avx512)\\]\n"
              "bnorm: moments \\(N=8,C=3,S=49\\) -> reference");
}

// ---------------------------------------------------------------------------------------
// Empty batches and zero channels.

TEST(BatchNormKernels, EmptyBatch) {
  const float eps = 1e-3f;
  const float want_invstd = static_cast<float>(1.0 / std::sqrt(static_cast<double>(eps)));
  for (const BatchNormDims d : {BatchNormDims{0, 3, 1}, BatchNormDims{0, 3, 5}, BatchNormDims{4, 3, 0}}) {
    for (const Impl impl : {Impl::automatic, Impl::cpu, Impl::reference}) {
      SCOPED_TRACE(str(d) + " impl " + std::to_string(static_cast<int>(impl)));
      const std::vector<float> gamma = {1, 2, 3}, beta = {0, 1, 2};
      std::vector<float> mean = junk(3), var = junk(3), invstd = junk(3);
      bk::moments(nullptr, d, mean.data(), var.data(), impl);
      expect_bitwise(mean, {0, 0, 0}, "moments mean");
      expect_bitwise(var, {0, 0, 0}, "moments var");

      mean = junk(3);
      var = junk(3);
      bk::forward_training(nullptr, d, gamma.data(), beta.data(), eps, nullptr, mean.data(), var.data(),
                           invstd.data(), impl);
      expect_bitwise(mean, {0, 0, 0}, "mean");
      expect_bitwise(var, {0, 0, 0}, "var");
      expect_bitwise(invstd, {want_invstd, want_invstd, want_invstd}, "invstd");

      bk::forward_inference(nullptr, d, mean.data(), var.data(), gamma.data(), beta.data(), eps, nullptr,
                            impl);

      std::vector<float> dgamma = junk(3), dbeta = junk(3);
      bk::backward_training(nullptr, nullptr, d, mean.data(), invstd.data(), gamma.data(), nullptr,
                            dgamma.data(), dbeta.data(), impl);
      expect_bitwise(dgamma, {0, 0, 0}, "dgamma");
      expect_bitwise(dbeta, {0, 0, 0}, "dbeta");
      dgamma = junk(3);
      dbeta = junk(3);
      bk::backward_inference(nullptr, nullptr, d, mean.data(), var.data(), gamma.data(), eps, nullptr,
                             dgamma.data(), dbeta.data(), impl);
      expect_bitwise(dgamma, {0, 0, 0}, "dgamma_inference");
      expect_bitwise(dbeta, {0, 0, 0}, "dbeta_inference");
    }
  }
}

TEST(BatchNormKernels, ZeroChannelsIsANoOp) {
  for (const BatchNormDims d : {BatchNormDims{4, 0, 1}, BatchNormDims{4, 0, 9}}) {
    for (const Impl impl : {Impl::automatic, Impl::cpu, Impl::reference}) {
      bk::moments(nullptr, d, nullptr, nullptr, impl);
      bk::forward_training(nullptr, d, nullptr, nullptr, 1e-3f, nullptr, nullptr, nullptr, nullptr, impl);
      bk::forward_inference(nullptr, d, nullptr, nullptr, nullptr, nullptr, 1e-3f, nullptr, impl);
      bk::backward_training(nullptr, nullptr, d, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, impl);
      bk::backward_inference(nullptr, nullptr, d, nullptr, nullptr, nullptr, 1e-3f, nullptr, nullptr, nullptr,
                             impl);
    }
  }
  SUCCEED();
}

// ---------------------------------------------------------------------------------------
// Fused batch norm + ReLU: exactly the composition, on every path.

TEST(BatchNormKernels, FusedReluIsTheComposition) {
  for (const BatchNormDims d : {BatchNormDims{300, 17, 1}, BatchNormDims{8, 32, 196},
                                BatchNormDims{2, 3, 40000}, BatchNormDims{5000, 3, 1}}) {
    SCOPED_TRACE(str(d));
    const Inputs in(d, true, 8u);
    for (const Impl impl : {Impl::automatic, Impl::reference}) {
      std::vector<float> y(in.x.size()), mean(in.gamma.size()), var(mean), invstd(mean);
      bk::forward_training(in.x.data(), d, in.g(), in.b(), in.epsilon, y.data(), mean.data(), var.data(),
                           invstd.data(), impl);
      std::vector<float> relu = y;
      for (float& v : relu) v = v < 0.0f ? 0.0f : v;
      std::vector<float> yr(in.x.size()), mean_r(mean), var_r(mean), invstd_r(mean);
      bk::forward_training_relu(in.x.data(), d, in.g(), in.b(), in.epsilon, yr.data(), mean_r.data(),
                                var_r.data(), invstd_r.data(), impl);
      expect_bitwise(yr, relu, "y_relu");
      expect_bitwise(mean_r, mean, "mean");
      expect_bitwise(var_r, var, "var");
      expect_bitwise(invstd_r, invstd, "invstd");
      // In place.
      std::vector<float> inplace = in.x;
      bk::forward_training_relu(inplace.data(), d, in.g(), in.b(), in.epsilon, inplace.data(), mean_r.data(),
                                var_r.data(), invstd_r.data(), impl);
      expect_bitwise(inplace, relu, "y_relu (in place)");

      // Backward: the same as backward_training on the masked gradient.
      std::vector<float> g = in.dy;
      for (std::size_t i = 0; i < g.size(); ++i)
        if (!(in.yrelu[i] > 0.0f)) g[i] = 0.0f;
      std::vector<float> dx(in.x.size()), dgamma(mean.size()), dbeta(mean.size());
      bk::backward_training(g.data(), in.x.data(), d, in.mean.data(), in.invstd.data(), in.g(), dx.data(),
                            dgamma.data(), dbeta.data(), impl);
      std::vector<float> dx_r = junk(d.numel()), dgamma_r = junk(d.C), dbeta_r = junk(d.C);
      bk::backward_training_relu(in.dy.data(), in.x.data(), in.yrelu.data(), d, in.mean.data(),
                                 in.invstd.data(), in.g(), dx_r.data(), dgamma_r.data(), dbeta_r.data(),
                                 impl);
      expect_bitwise(dx_r, dx, "dx_relu");
      expect_bitwise(dgamma_r, dgamma, "dgamma_relu");
      expect_bitwise(dbeta_r, dbeta, "dbeta_relu");
    }
  }
}

// The mask recomputed from x is the forward's own when the forward's double mean is its
// float mean (the header's promise): given what forward_training_relu returned (on any
// path), the x version of the backward gives the y version's bits, for every combination
// of gamma and beta given or null, also where the pre-activation is exactly 0 (channel 1,
// constant, with beta 0: (x - x) * alpha + 0). On the other channels (data near zero)
// the forward's shift holds -(mean_d - mean) * alpha besides beta, about 1e-8 of the
// spread, which moves no element of these data across zero.
TEST(BatchNormKernels, FusedReluMaskFromInputEqualsMaskFromOutput) {
  for (const BatchNormDims d :
       {BatchNormDims{300, 17, 1}, BatchNormDims{8, 32, 196}, BatchNormDims{2, 3, 40000},
        BatchNormDims{64, 1024, 1}, BatchNormDims{7, 5, 3}}) {
    SCOPED_TRACE(str(d));
    Inputs in(d, true, 9u);
    for (std::int64_t n = 0; n < d.N; ++n)  // channel 1 constant
      for (std::int64_t s = 0; s < d.S; ++s) in.x[static_cast<std::size_t>((n * d.C + 1) * d.S + s)] = 0.75f;
    std::vector<float> zero_beta(in.beta.size(), 0.0f);
    for (const Impl fwd : {Impl::automatic, Impl::reference}) {
      for (const int variant : {0, 1, 2, 3}) {
        const float* gamma = variant & 1 ? nullptr : in.gamma.data();
        const float* beta = variant & 2 ? nullptr : (variant == 0 ? zero_beta.data() : in.beta.data());
        SCOPED_TRACE("variant " + std::to_string(variant) +
                     (fwd == Impl::reference ? " reference forward" : ""));
        std::vector<float> y(in.x.size()), mean(in.gamma.size()), var(mean), invstd(mean);
        bk::forward_training_relu(in.x.data(), d, gamma, beta, in.epsilon, y.data(), mean.data(), var.data(),
                                  invstd.data(), fwd);
        std::int64_t zeros = 0;
        for (const float v : y) zeros += v == 0.0f ? 1 : 0;
        EXPECT_GT(zeros, 0);
        for (const Impl impl : {Impl::automatic, Impl::cpu, Impl::reference}) {
          std::vector<float> dx_y = junk(d.numel()), dg_y = junk(d.C), db_y = junk(d.C);
          std::vector<float> dx_x = junk(d.numel()), dg_x = junk(d.C), db_x = junk(d.C);
          bk::backward_training_relu(in.dy.data(), in.x.data(), y.data(), d, mean.data(), invstd.data(),
                                     gamma, dx_y.data(), dg_y.data(), db_y.data(), impl);
          bk::backward_training_relu(in.dy.data(), in.x.data(), d, mean.data(), invstd.data(), gamma, beta,
                                     dx_x.data(), dg_x.data(), db_x.data(), impl);
          expect_bitwise(dx_x, dx_y, "dx");
          expect_bitwise(dg_x, dg_y, "dgamma");
          expect_bitwise(db_x, db_y, "dbeta");
        }
      }
    }
  }
}

TEST(BatchNormKernels, FusedReluEmptyAndZeroChannels) {
  const float eps = 1e-3f;
  const float want_invstd = static_cast<float>(1.0 / std::sqrt(static_cast<double>(eps)));
  for (const Impl impl : {Impl::automatic, Impl::cpu, Impl::reference}) {
    for (const BatchNormDims d : {BatchNormDims{0, 3, 1}, BatchNormDims{0, 3, 5}, BatchNormDims{4, 3, 0}}) {
      std::vector<float> mean = junk(3), var = junk(3), invstd = junk(3), dgamma = junk(3), dbeta = junk(3);
      bk::forward_training_relu(nullptr, d, nullptr, nullptr, eps, nullptr, mean.data(), var.data(),
                                invstd.data(), impl);
      expect_bitwise(mean, {0, 0, 0}, "mean");
      expect_bitwise(var, {0, 0, 0}, "var");
      expect_bitwise(invstd, {want_invstd, want_invstd, want_invstd}, "invstd");
      bk::backward_training_relu(nullptr, nullptr, nullptr, d, mean.data(), invstd.data(), nullptr, nullptr,
                                 dgamma.data(), dbeta.data(), impl);
      expect_bitwise(dgamma, {0, 0, 0}, "dgamma");
      expect_bitwise(dbeta, {0, 0, 0}, "dbeta");
      dgamma = junk(3);
      dbeta = junk(3);
      bk::backward_training_relu(nullptr, nullptr, d, mean.data(), invstd.data(), nullptr, nullptr, nullptr,
                                 dgamma.data(), dbeta.data(), impl);
      expect_bitwise(dgamma, {0, 0, 0}, "dgamma (mask from x)");
      expect_bitwise(dbeta, {0, 0, 0}, "dbeta (mask from x)");
    }
    bk::forward_training_relu(nullptr, BatchNormDims{4, 0, 9}, nullptr, nullptr, eps, nullptr, nullptr,
                              nullptr, nullptr, impl);
    bk::backward_training_relu(nullptr, nullptr, nullptr, BatchNormDims{4, 0, 1}, nullptr, nullptr, nullptr,
                               nullptr, nullptr, nullptr, impl);
    bk::backward_training_relu(nullptr, nullptr, BatchNormDims{4, 0, 1}, nullptr, nullptr, nullptr, nullptr,
                               nullptr, nullptr, nullptr, impl);
  }
}

// ---------------------------------------------------------------------------------------
// Vector code: every SIMD level gives the same bits, and the choice of level is checked.

TEST(BatchNormKernels, EverySimdLevelGivesTheSameBits) {
  SimdLevelGuard guard;
  const std::vector<std::string> levels = bk::simd_levels();
  ASSERT_FALSE(levels.empty());
  EXPECT_EQ(levels.front(), "generic");
  EXPECT_NE(std::find(levels.begin(), levels.end(), std::string(bk::simd_level())), levels.end())
      << bk::simd_level();
  for (const BatchNormDims d :
       {BatchNormDims{1000, 64, 1}, BatchNormDims{5000, 3, 1}, BatchNormDims{8, 32, 196},
        BatchNormDims{2, 3, 40000}, BatchNormDims{40, 1100, 1}, BatchNormDims{7, 5, 1},
        BatchNormDims{3, 13, 49}, BatchNormDims{64, 1024, 1}, BatchNormDims{32, 16, 64}}) {
    SCOPED_TRACE(str(d));
    const Inputs in(d, true, 21u);
    bk::force_simd_level("generic");
    Outputs generic = run_all(in, Impl::cpu);
    for (const std::string& level : levels) {
      SCOPED_TRACE(level);
      bk::force_simd_level(level);
      EXPECT_EQ(bk::simd_level(), level);
      Outputs other = run_all(in, Impl::cpu);
      expect_all_bitwise(other, generic);
    }
  }
}

TEST(BatchNormKernels, ForcingAnUnknownOrMissingSimdLevelThrows) {
  SimdLevelGuard guard;
  const std::string before = bk::simd_level();
  try {
    bk::force_simd_level("avx9");
    FAIL() << "no exception";
  } catch (const bnorm::ArgumentError& e) {
    EXPECT_EQ(e.argument(), "level");
    EXPECT_EQ(e.expected(), "one of generic, avx2, avx512");
    EXPECT_EQ(e.received(), "\"avx9\"");
  }
  EXPECT_EQ(bk::simd_level(), before);  // unchanged
  const std::vector<std::string> levels = bk::simd_levels();
  for (const std::string level : {"avx2", "avx512"}) {
    if (std::find(levels.begin(), levels.end(), level) == levels.end()) {
      EXPECT_THROW(bk::force_simd_level(level), bnorm::ArgumentError) << level;
    }
  }
  bk::force_generic_simd(true);
  EXPECT_STREQ(bk::simd_level(), "generic");
  bk::force_generic_simd(false);
  EXPECT_EQ(bk::simd_level(), before);
}

// BNORM_SIMD naming a level that is not one: every kernel call throws ArgumentError.
// (Runs in a re-executed child: the variable is read once, at the first call.)
void dispatch_with_bad_simd_env() {
  setenv("BNORM_SIMD", "avx9", 1);
  std::vector<float> x(8, 1.0f), mean(2), var(2);
  try {
    bk::moments(x.data(), BatchNormDims{4, 2, 1}, mean.data(), var.data());
  } catch (const bnorm::ArgumentError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::exit(3);
  }
  std::exit(0);
}

TEST(BatchNormKernels, BadSimdEnvironmentIsRefused) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // re-executes: BNORM_SIMD read afresh
  EXPECT_EXIT(dispatch_with_bad_simd_env(), ::testing::ExitedWithCode(3),
              "environment variable BNORM_SIMD: expected one of generic, avx2, avx512, received \"avx9\"");
}

class StreamingStoresGuard {
 public:
  ~StreamingStoresGuard() { bk::force_streaming_stores(false); }
};

// Non-temporal (streaming) stores are used only for outputs larger than the cache; forcing
// them on small tensors runs that path here, with unaligned heads and odd tails included.
TEST(BatchNormKernels, StreamingAndPlainStoresAgreeBitwise) {
  StreamingStoresGuard guard;
  for (const BatchNormDims d :
       {BatchNormDims{1000, 64, 1}, BatchNormDims{8, 32, 196}, BatchNormDims{2, 3, 40001},
        BatchNormDims{40, 1100, 1}, BatchNormDims{7, 5, 1}, BatchNormDims{3, 13, 49},
        BatchNormDims{64, 1024, 1}}) {
    SCOPED_TRACE(str(d));
    const Inputs in(d, true, 23u);
    bk::force_streaming_stores(false);
    Outputs plain = run_all(in, Impl::cpu);
    bk::force_streaming_stores(true);
    Outputs streamed = run_all(in, Impl::cpu);
    bk::force_streaming_stores(false);
    expect_all_bitwise(streamed, plain);
  }
}

// Misaligned buffers (the kernels align their stores, never their sums; streamed rows
// start at a cache line): the results do not depend on where the tensors sit in memory,
// with plain or streaming stores.
TEST(BatchNormKernels, ResultsDoNotDependOnAlignment) {
  StreamingStoresGuard guard;
  for (const BatchNormDims d : {BatchNormDims{300, 17, 1}, BatchNormDims{8, 32, 196},
                                BatchNormDims{64, 40, 1}, BatchNormDims{4, 6, 100}}) {
    SCOPED_TRACE(str(d));
    const Inputs in(d, true, 31u);
    const Outputs base = run_all(in, Impl::cpu);
    for (const std::size_t shift : {1u, 3u, 4u, 5u, 12u}) {
      for (const bool stream : {false, true}) {
        bk::force_streaming_stores(stream);
        SCOPED_TRACE("shift " + std::to_string(shift) + (stream ? " streaming" : ""));
        std::vector<float> xs(in.x.size() + 16), dys(in.x.size() + 16), ys(in.x.size() + 16),
            dxs(in.x.size() + 16);
        std::copy(in.x.begin(), in.x.end(), xs.begin() + static_cast<std::ptrdiff_t>(shift));
        std::copy(in.dy.begin(), in.dy.end(), dys.begin() + static_cast<std::ptrdiff_t>(shift));
        float* x = xs.data() + shift;
        float* dy = dys.data() + shift;
        float* y = ys.data() + (shift * 3) % 8;
        float* dx = dxs.data() + (shift * 5) % 8;
        std::vector<float> mean(in.gamma.size()), var(mean), invstd(mean), dgamma(mean), dbeta(mean);
        bk::forward_training(x, d, in.g(), in.b(), in.epsilon, y, mean.data(), var.data(), invstd.data(),
                             Impl::cpu);
        expect_bitwise(std::vector<float>(y, y + d.numel()), base.y, "y");
        expect_bitwise(mean, base.mean, "mean");
        expect_bitwise(var, base.var, "var");
        bk::backward_training(dy, x, d, in.mean.data(), in.invstd.data(), in.g(), dx, dgamma.data(),
                              dbeta.data(), Impl::cpu);
        expect_bitwise(std::vector<float>(dx, dx + d.numel()), base.dx, "dx");
        expect_bitwise(dgamma, base.dgamma, "dgamma");
        bk::backward_inference(dy, x, d, in.run_mean.data(), in.run_var.data(), in.g(), in.epsilon, dx,
                               dgamma.data(), dbeta.data(), Impl::cpu);
        expect_bitwise(std::vector<float>(dx, dx + d.numel()), base.dx_inf, "dx_inference");
        expect_bitwise(dgamma, base.dgamma_inf, "dgamma_inference");
        bk::forward_inference(x, d, in.run_mean.data(), in.run_var.data(), in.g(), in.b(), in.epsilon, y,
                              Impl::cpu);
        expect_bitwise(std::vector<float>(y, y + d.numel()), base.y_inf, "y_inference");
      }
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Output accuracy at any offset: outputs (not only statistics) of every op, on data
// 1e4, 1e6 and 1e7 times its spread away from zero, every layout, both implementations,
// every instruction set this machine runs, against double computations with the
// statistics each op has: the training forward with its own double batch statistics
// (mean_d, var_d), the inference forward and the backward kernels with the float
// statistics they are given. Bound: 1e-6 of the output's standard deviation (the
// header's accuracy promise; below); a constant channel gives exactly beta. The worst
// errors are printed (docs/benchmarks.md quotes them).

// Worst error of one op, in standard deviations of its output, over a run.
struct WorstErrors {
  std::vector<std::pair<std::string, double>> worst;
  void note(const std::string& op, double err) {
    for (auto& [name, e] : worst)
      if (name == op) {
        e = std::max(e, err);
        return;
      }
    worst.emplace_back(op, err);
  }
};

// Per-channel standard deviation of v (N, C, S) in double.
std::vector<double> channel_sd(const std::vector<double>& v, const BatchNormDims& d) {
  std::vector<double> sd(static_cast<std::size_t>(d.C));
  for (std::int64_t c = 0; c < d.C; ++c) {
    double sum = 0.0, sq = 0.0;
    for (std::int64_t n = 0; n < d.N; ++n)
      for (std::int64_t s = 0; s < d.S; ++s) sum += v[static_cast<std::size_t>((n * d.C + c) * d.S + s)];
    const double m = sum / static_cast<double>(d.count());
    for (std::int64_t n = 0; n < d.N; ++n)
      for (std::int64_t s = 0; s < d.S; ++s) {
        const double e = v[static_cast<std::size_t>((n * d.C + c) * d.S + s)] - m;
        sq += e * e;
      }
    sd[static_cast<std::size_t>(c)] = std::sqrt(sq / static_cast<double>(d.count()));
  }
  return sd;
}

// The training backward in double, with the gradient g (dy, masked by a ReLU or not) and
// the float statistics given: xhat = (x - mean) * invstd, dbeta = sum g,
// dgamma = sum g * xhat, dx = gamma * invstd * (g - dbeta / count - xhat * dgamma / count).
// scale: per channel, the natural size of the sums (sqrt of the sum of their squared terms).
void double_backward_training(const std::vector<float>& g, const std::vector<float>& x,
                              const BatchNormDims& d, const std::vector<float>& mean,
                              const std::vector<float>& invstd, const std::vector<float>& gamma,
                              std::vector<double>& dx, std::vector<double>& dgamma,
                              std::vector<double>& dbeta, std::vector<double>& scale) {
  dx.assign(x.size(), 0.0);
  dgamma.assign(static_cast<std::size_t>(d.C), 0.0);
  dbeta.assign(static_cast<std::size_t>(d.C), 0.0);
  scale.assign(static_cast<std::size_t>(d.C), 0.0);
  const double count = static_cast<double>(d.count());
  for (std::int64_t c = 0; c < d.C; ++c) {
    const std::size_t k = static_cast<std::size_t>(c);
    const double m = mean[k], inv = invstd[k];
    double sg = 0.0, sgx = 0.0, sq = 0.0;
    for (std::int64_t n = 0; n < d.N; ++n)
      for (std::int64_t s = 0; s < d.S; ++s) {
        const std::size_t i = static_cast<std::size_t>((n * d.C + c) * d.S + s);
        const double xhat = (static_cast<double>(x[i]) - m) * inv;
        sg += g[i];
        sgx += g[i] * xhat;
        sq += static_cast<double>(g[i]) * g[i] * (1.0 + xhat * xhat);
      }
    dbeta[k] = sg;
    dgamma[k] = sgx;
    scale[k] = std::sqrt(sq);
    for (std::int64_t n = 0; n < d.N; ++n)
      for (std::int64_t s = 0; s < d.S; ++s) {
        const std::size_t i = static_cast<std::size_t>((n * d.C + c) * d.S + s);
        const double xhat = (static_cast<double>(x[i]) - m) * inv;
        dx[i] = static_cast<double>(gamma[k]) * inv * (g[i] - sg / count - xhat * sgx / count);
      }
  }
}

TEST(BatchNormKernels, OutputsAccurateAtAnyOffset) {
  SimdLevelGuard guard;
  // Bound: 1e-6 of the output's standard deviation, plus 4 u (u = 2^-24) of the value
  // itself for values many deviations out (a float holds them to half an ulp at best: a
  // backward with a ReLU mask leaving few elements of a channel gives dx at 8 deviations).
  constexpr double kBound = 1e-6;
  constexpr double kUlps = 4.0 / 16777216.0;
  const float eps = 1e-3f;
  // Channels-last: period P = C (64), lanes of 5 channels (P = 40), lane split (fewer blocks
  // than threads); channels-first: few channels ((channel, block) tasks), groups, 7x7 rows.
  for (const BatchNormDims d :
       {BatchNormDims{2000, 5, 1}, BatchNormDims{300, 64, 1}, BatchNormDims{64, 1024, 1},
        BatchNormDims{16, 3, 1250}, BatchNormDims{6, 24, 196}, BatchNormDims{8, 16, 49}}) {
    for (const double offset : {1e4, 1e6, 1e7}) {
      SCOPED_TRACE(str(d) + " offset " + std::to_string(offset) + " times the spread");
      Rng rng(17u);
      // Spreads 1, 0.01 and 100 by channel; channel 0 constant (offset + 0.3 spreads).
      const auto spread = [](std::int64_t c) { return c % 3 == 0 ? 1.0 : c % 3 == 1 ? 0.01 : 100.0; };
      std::vector<float> x(static_cast<std::size_t>(d.numel()));
      for (std::int64_t n = 0; n < d.N; ++n)
        for (std::int64_t c = 0; c < d.C; ++c)
          for (std::int64_t s = 0; s < d.S; ++s) {
            const double sd = spread(c);
            x[static_cast<std::size_t>((n * d.C + c) * d.S + s)] =
                static_cast<float>(offset * sd + (c == 0 ? 0.3 * sd : sd * rng.normal()));
          }
      const std::vector<float> dy = rng.normals(d.numel());
      const std::vector<float> gamma = rng.uniforms(d.C, 0.5, 2.0), beta = rng.uniforms(d.C, -1.0, 1.0);
      const std::size_t C = static_cast<std::size_t>(d.C);
      // Given statistics of the inference ops: near the data's (0.3 spreads off, 1.2 times
      // the variance); channel 0 the constant itself.
      std::vector<float> run_mean(C), run_var(C);
      for (std::size_t c = 0; c < C; ++c) {
        const double sd = spread(static_cast<std::int64_t>(c));
        run_mean[c] = c == 0 ? x[0] : static_cast<float>(offset * sd + 0.3 * sd);
        run_var[c] = static_cast<float>(1.2 * sd * sd);
      }
      WorstErrors worst;
      SimdLevelGuard levels;
      for (const std::string& level : bk::simd_levels()) {
        bk::force_simd_level(level);
        for (const Impl impl : {Impl::cpu, Impl::reference}) {
          SCOPED_TRACE(std::string(bk::simd_level()) +
                       (impl == Impl::cpu ? " Impl::cpu" : " Impl::reference"));
          const auto at = [&](std::int64_t n, std::int64_t c, std::int64_t s) {
            return static_cast<std::size_t>((n * d.C + c) * d.S + s);
          };
          // Each element of `got` against `want`, in units of sd[c]; channel 0 (constant)
          // exactly when `exact0`.
          const auto check = [&](const std::string& op, const std::vector<float>& got,
                                 const std::vector<double>& want, const std::vector<double>& sd,
                                 bool exact0) {
            int failures = 0;
            for (std::int64_t c = 0; c < d.C; ++c)
              for (std::int64_t n = 0; n < d.N; ++n)
                for (std::int64_t s = 0; s < d.S; ++s) {
                  const std::size_t i = at(n, c, s);
                  const double err = std::abs(static_cast<double>(got[i]) - want[i]);
                  if (c == 0 && exact0) {
                    if (!(static_cast<double>(got[i]) == want[i]) && ++failures <= 3)
                      ADD_FAILURE() << op << " constant channel: got " << got[i] << ", want exactly "
                                    << want[i];
                    continue;
                  }
                  const double sc = sd[static_cast<std::size_t>(c)];  // 0: a channel masked whole
                  const double rel = err == 0.0 ? 0.0 : err / sc;
                  worst.note(op, rel);
                  if (!(err <= kBound * sc + kUlps * std::abs(want[i])) && ++failures <= 3)
                    ADD_FAILURE() << op << "[" << i << "] channel " << c << ": got " << got[i] << ", want "
                                  << want[i] << ", off by " << rel << " of the output's spread";
                }
          };
          // Per-channel sums (dgamma, dbeta) against double, in units of their scale.
          const auto check_sums = [&](const std::string& op, const std::vector<float>& got,
                                      const std::vector<double>& want, const std::vector<double>& scale) {
            for (std::size_t c = 0; c < C; ++c) {
              const double err = std::abs(static_cast<double>(got[c]) - want[c]);
              worst.note(op, err == 0.0 ? 0.0 : err / scale[c]);
              EXPECT_LE(err, kBound * scale[c])
                  << op << " channel " << c << ": got " << got[c] << ", want " << want[c];
            }
          };

          // Training forward (plain and fused) against the double computation with the
          // call's own double statistics.
          std::vector<float> y(x.size()), yr(x.size()), mean(C), var(C), invstd(C), mean2(C), var2(C),
              invstd2(C);
          std::vector<double> mean_d(C), var_d(C), mean_d2(C), var_d2(C);
          bk::forward_training(x.data(), d, gamma.data(), beta.data(), eps, y.data(), mean.data(), var.data(),
                               invstd.data(), mean_d.data(), var_d.data(), impl);
          bk::forward_training_relu(x.data(), d, gamma.data(), beta.data(), eps, yr.data(), mean2.data(),
                                    var2.data(), invstd2.data(), mean_d2.data(), var_d2.data(), impl);
          std::vector<double> want(x.size()), want_relu(x.size()), out_sd(C);
          for (std::size_t c = 0; c < C; ++c)
            out_sd[c] = gamma[c] * std::sqrt(var_d[c] / (var_d[c] + static_cast<double>(eps)));
          for (std::int64_t c = 0; c < d.C; ++c) {
            const std::size_t k = static_cast<std::size_t>(c);
            const double inv = 1.0 / std::sqrt(var_d[k] + static_cast<double>(eps));
            for (std::int64_t n = 0; n < d.N; ++n)
              for (std::int64_t s = 0; s < d.S; ++s) {
                const std::size_t i = at(n, c, s);
                want[i] = (static_cast<double>(x[i]) - mean_d[k]) * inv * gamma[k] + beta[k];
                want_relu[i] = std::max(0.0, want[i]);
              }
          }
          check("forward_training", y, want, out_sd, true);
          check("forward_training_relu", yr, want_relu, out_sd, true);

          // Inference forward with the given float statistics.
          std::vector<float> yi(x.size());
          bk::forward_inference(x.data(), d, run_mean.data(), run_var.data(), gamma.data(), beta.data(), eps,
                                yi.data(), impl);
          for (std::int64_t c = 0; c < d.C; ++c) {
            const std::size_t k = static_cast<std::size_t>(c);
            const double inv = 1.0 / std::sqrt(static_cast<double>(run_var[k]) + static_cast<double>(eps));
            for (std::int64_t n = 0; n < d.N; ++n)
              for (std::int64_t s = 0; s < d.S; ++s) {
                const std::size_t i = at(n, c, s);
                want[i] = (static_cast<double>(x[i]) - run_mean[k]) * inv * gamma[k] + beta[k];
              }
          }
          check("forward_inference", yi, want, channel_sd(want, d), true);

          // Training backward (plain, and with the ReLU's mask from y or from x) with the
          // forward's float statistics; the reference's mask is the kernel's documented one.
          std::vector<double> dx_want, dg_want, db_want, scale;
          for (int variant = 0; variant < 3; ++variant) {
            const std::string op = variant == 0   ? "backward_training"
                                   : variant == 1 ? "backward_training_relu (y)"
                                                  : "backward_training_relu (mask from x)";
            std::vector<float> g = dy;
            if (variant > 0) {
              for (std::int64_t c = 0; c < d.C; ++c) {
                const std::size_t k = static_cast<std::size_t>(c);
                const float alpha = invstd2[k] * gamma[k];
                for (std::int64_t n = 0; n < d.N; ++n)
                  for (std::int64_t s = 0; s < d.S; ++s) {
                    const std::size_t i = at(n, c, s);
                    const bool on = variant == 1 ? yr[i] > 0.0f : (x[i] - mean2[k]) * alpha + beta[k] > 0.0f;
                    if (!on) g[i] = 0.0f;
                  }
              }
            }
            const std::vector<float>& m = variant == 0 ? mean : mean2;
            const std::vector<float>& iv = variant == 0 ? invstd : invstd2;
            double_backward_training(g, x, d, m, iv, gamma, dx_want, dg_want, db_want, scale);
            std::vector<float> dx = junk(d.numel()), dgamma = junk(d.C), dbeta = junk(d.C);
            if (variant == 0)
              bk::backward_training(dy.data(), x.data(), d, m.data(), iv.data(), gamma.data(), dx.data(),
                                    dgamma.data(), dbeta.data(), impl);
            else if (variant == 1)
              bk::backward_training_relu(dy.data(), x.data(), yr.data(), d, m.data(), iv.data(), gamma.data(),
                                         dx.data(), dgamma.data(), dbeta.data(), impl);
            else
              bk::backward_training_relu(dy.data(), x.data(), d, m.data(), iv.data(), gamma.data(),
                                         beta.data(), dx.data(), dgamma.data(), dbeta.data(), impl);
            check(op + " dx", dx, dx_want, channel_sd(dx_want, d), false);
            check_sums(op + " dgamma", dgamma, dg_want, scale);
            check_sums(op + " dbeta", dbeta, db_want, scale);
          }

          // Inference backward with the given float statistics: dx = dy * gamma * invstd,
          // dgamma = invstd * sum dy (x - mean), dbeta = sum dy.
          {
            std::vector<float> dx = junk(d.numel()), dgamma = junk(d.C), dbeta = junk(d.C), inv(C);
            bk::backward_inference(dy.data(), x.data(), d, run_mean.data(), run_var.data(), gamma.data(), eps,
                                   dx.data(), dgamma.data(), dbeta.data(), impl);
            for (std::size_t c = 0; c < C; ++c)
              inv[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(run_var[c]) + eps));
            double_backward_training(dy, x, d, run_mean, inv, gamma, dx_want, dg_want, db_want, scale);
            for (std::int64_t c = 0; c < d.C; ++c) {
              const std::size_t k = static_cast<std::size_t>(c);
              for (std::int64_t n = 0; n < d.N; ++n)
                for (std::int64_t s = 0; s < d.S; ++s) {
                  const std::size_t i = at(n, c, s);
                  dx_want[i] = static_cast<double>(dy[i]) * gamma[k] * inv[k];
                }
            }
            check("backward_inference dx", dx, dx_want, channel_sd(dx_want, d), false);
            check_sums("backward_inference dgamma", dgamma, dg_want, scale);
            check_sums("backward_inference dbeta", dbeta, db_want, scale);
          }
        }
      }
      bk::force_simd_level("");
      std::string line = "worst errors (output sd) " + str(d) + " offset " + std::to_string(offset) + ":";
      for (const auto& [op, e] : worst.worst) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "\n  %-44s %.2e", op.c_str(), e);
        line += buf;
      }
      std::printf("%s\n", line.c_str());
    }
  }
}
