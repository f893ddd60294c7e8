// Tests of the stateless dense and activation kernels (bnorm/kernels/dense.hpp,
// bnorm/kernels/activation.hpp): fast paths against the permanent references over many
// shapes (including 1 and 0 sized dims), finite-difference gradients of the double
// references, assigned vs accumulated outputs with junk-filled buffers, null outputs,
// aliasing, saturation, and the activation name table.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/kernels/activation.hpp"
#include "bnorm/kernels/dense.hpp"

namespace bk = bnorm::kernels;
using bk::Activation;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

const std::vector<Activation> kAllActivations = {Activation::linear, Activation::relu, Activation::sigmoid,
                                                 Activation::tanh, Activation::softmax};

// Deterministic normal samples (mt19937 + Box-Muller, identical on every platform).
class Rng {
 public:
  explicit Rng(std::uint32_t seed) : engine_(seed) {}
  double uniform() { return (static_cast<double>(engine_()) + 0.5) / 4294967296.0; }
  double normal() {
    const double r = std::sqrt(-2.0 * std::log(uniform()));
    return r * std::cos(6.283185307179586 * uniform());
  }
  template <typename T = float>
  std::vector<T> normals(std::int64_t n, double stddev = 1.0) {
    std::vector<T> v(static_cast<std::size_t>(n));
    for (T& e : v) e = static_cast<T>(stddev * normal());
    return v;
  }

 private:
  std::mt19937 engine_;
};

std::vector<float> junk(std::int64_t n) {
  return std::vector<float>(static_cast<std::size_t>(n), kNaN);
}

std::int64_t size(const std::vector<float>& v) {
  return static_cast<std::int64_t>(v.size());
}

// |got - want| <= atol + rtol * |want| elementwise, every value finite.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what,
                  double rtol = 1e-5, double atol = 1e-6) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int failures = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    const bool ok = std::isfinite(g) && std::abs(g - w) <= atol + rtol * std::abs(w);
    if (!ok && ++failures <= 5) ADD_FAILURE() << what << " [" << i << "]: got " << g << ", want " << w;
  }
}

std::string dims_str(std::int64_t N, std::int64_t K, std::int64_t M) {
  return "(N=" + std::to_string(N) + ",K=" + std::to_string(K) + ",M=" + std::to_string(M) + ")";
}

// Central-difference gradient of the scalar f at point p (double), step h.
std::vector<double> numeric_gradient(std::vector<double>& p, const std::function<double()>& f, double h) {
  std::vector<double> g(p.size());
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double saved = p[i];
    p[i] = saved + h;
    const double plus = f();
    p[i] = saved - h;
    const double minus = f();
    p[i] = saved;
    g[i] = (plus - minus) / (2 * h);
  }
  return g;
}

void expect_gradient(const std::vector<double>& analytic, const std::vector<double>& numeric,
                     const std::string& what, double tol = 1e-6) {
  ASSERT_EQ(analytic.size(), numeric.size()) << what;
  for (std::size_t i = 0; i < analytic.size(); ++i)
    EXPECT_NEAR(analytic[i], numeric[i], tol * (1.0 + std::abs(numeric[i]))) << what << " [" << i << "]";
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// ---------------------------------------------------------------------------------------
// Dense
// ---------------------------------------------------------------------------------------

struct DenseShape {
  std::int64_t N, K, M;
};

const std::vector<DenseShape> kDenseShapes = {
    {1, 1, 1}, {1, 7, 3}, {5, 1, 4},   {6, 3, 1},     {0, 4, 3},    {4, 0, 3},       {4, 3, 0},
    {0, 0, 0}, {2, 2, 2}, {17, 33, 9}, {64, 128, 10}, {3, 1000, 5}, {128, 300, 257}, {1, 512, 1}};

TEST(DenseForward, MatchesReferenceOverShapes) {
  Rng rng(1);
  for (const auto& s : kDenseShapes) {
    for (const bool use_bias : {true, false}) {
      const std::string what = dims_str(s.N, s.K, s.M) + (use_bias ? " bias" : " no bias");
      const auto x = rng.normals(s.N * s.K), w = rng.normals(s.K * s.M), b = rng.normals(s.M);
      const float* bp = use_bias ? b.data() : nullptr;
      auto y = junk(s.N * s.M), y_ref = junk(s.N * s.M);
      bk::dense_forward(x.data(), w.data(), bp, s.N, s.K, s.M, y.data());
      bk::reference::dense_forward(x.data(), w.data(), bp, s.N, s.K, s.M, y_ref.data());
      // Float GEMM vs a double sum rounded once: error grows like sqrt(K) ulp of |x||w|.
      expect_close(y, y_ref, what + " y", 1e-5, 1e-6 * std::sqrt(static_cast<double>(s.K) + 1.0));
    }
  }
}

TEST(DenseBackward, MatchesReferenceOverShapes) {
  Rng rng(2);
  for (const auto& s : kDenseShapes) {
    const std::string what = dims_str(s.N, s.K, s.M);
    const auto x = rng.normals(s.N * s.K), w = rng.normals(s.K * s.M), dy = rng.normals(s.N * s.M);
    // dw and db start from the same non-zero values in both runs: they are accumulated into.
    const auto dw0 = rng.normals(s.K * s.M), db0 = rng.normals(s.M);
    auto dx = junk(s.N * s.K), dx_ref = junk(s.N * s.K);
    auto dw = dw0, dw_ref = dw0, db = db0, db_ref = db0;
    bk::dense_backward(dy.data(), x.data(), w.data(), s.N, s.K, s.M, dx.data(), dw.data(), db.data());
    bk::reference::dense_backward(dy.data(), x.data(), w.data(), s.N, s.K, s.M, dx_ref.data(), dw_ref.data(),
                                  db_ref.data());
    const double atol_dx = 1e-6 * std::sqrt(static_cast<double>(s.M) + 1.0);
    const double atol_dw = 1e-6 * std::sqrt(static_cast<double>(s.N) + 1.0);
    expect_close(dx, dx_ref, what + " dx", 1e-5, atol_dx);
    expect_close(dw, dw_ref, what + " dw", 1e-5, atol_dw);
    expect_close(db, db_ref, what + " db", 1e-6, atol_dw);
  }
}

TEST(Dense, WorkedNumbers) {
  // x (1, 2), w (2, 3), b (3).
  const std::vector<float> x = {1, 2}, w = {1, 2, 3, 4, 5, 6}, b = {0.5f, -1, 0};
  auto y = junk(3);
  bk::dense_forward(x.data(), w.data(), b.data(), 1, 2, 3, y.data());
  EXPECT_EQ(y, (std::vector<float>{9.5f, 11, 15}));

  const std::vector<float> dy = {1, 0, -1};
  auto dx = junk(2);
  std::vector<float> dw(6, 0.0f), db(3, 0.0f);
  bk::dense_backward(dy.data(), x.data(), w.data(), 1, 2, 3, dx.data(), dw.data(), db.data());
  EXPECT_EQ(dx, (std::vector<float>{-2, -2}));              // dy @ w^T
  EXPECT_EQ(dw, (std::vector<float>{1, 0, -1, 2, 0, -2}));  // x^T @ dy
  EXPECT_EQ(db, (std::vector<float>{1, 0, -1}));
}

TEST(Dense, NullBiasIsZeroBias) {
  Rng rng(3);
  const std::int64_t N = 9, K = 11, M = 6;
  const auto x = rng.normals(N * K), w = rng.normals(K * M);
  const std::vector<float> zeros(M, 0.0f);
  auto y_null = junk(N * M), y_zero = junk(N * M);
  bk::dense_forward(x.data(), w.data(), nullptr, N, K, M, y_null.data());
  bk::dense_forward(x.data(), w.data(), zeros.data(), N, K, M, y_zero.data());
  EXPECT_EQ(y_null, y_zero);
}

TEST(Dense, GradientsAreAccumulatedAndDxAssigned) {
  Rng rng(4);
  const std::int64_t N = 7, K = 5, M = 3;
  const auto x = rng.normals(N * K), w = rng.normals(K * M), dy = rng.normals(N * M);
  // Gradient alone: from zeroed buffers.
  auto dx1 = junk(N * K);
  std::vector<float> dw1(K * M, 0.0f), db1(M, 0.0f);
  bk::dense_backward(dy.data(), x.data(), w.data(), N, K, M, dx1.data(), dw1.data(), db1.data());

  // Pre-filled dw/db: the gradient is added. dx pre-filled with NaN: overwritten.
  const auto dw0 = rng.normals(K * M), db0 = rng.normals(M);
  auto dx = junk(N * K);
  auto dw = dw0, db = db0;
  bk::dense_backward(dy.data(), x.data(), w.data(), N, K, M, dx.data(), dw.data(), db.data());
  EXPECT_EQ(dx, dx1);
  std::vector<float> dw_want(dw0.size()), db_want(db0.size());
  for (std::size_t i = 0; i < dw0.size(); ++i) dw_want[i] = dw0[i] + dw1[i];
  for (std::size_t i = 0; i < db0.size(); ++i) db_want[i] = db0[i] + db1[i];
  expect_close(dw, dw_want, "dw = dw0 + grad", 1e-6, 1e-6);
  expect_close(db, db_want, "db = db0 + grad", 1e-6, 1e-6);

  // A second call adds the same gradient again; dx stays the same (assigned).
  bk::dense_backward(dy.data(), x.data(), w.data(), N, K, M, dx.data(), dw.data(), db.data());
  EXPECT_EQ(dx, dx1);
  for (std::size_t i = 0; i < dw0.size(); ++i) dw_want[i] = dw0[i] + 2 * dw1[i];
  for (std::size_t i = 0; i < db0.size(); ++i) db_want[i] = db0[i] + 2 * db1[i];
  expect_close(dw, dw_want, "dw = dw0 + 2 grad", 1e-6, 1e-6);
  expect_close(db, db_want, "db = db0 + 2 grad", 1e-6, 1e-6);

  // The reference follows the same contract.
  auto dx_ref = junk(N * K);
  auto dw_ref = dw0, db_ref = db0;
  bk::reference::dense_backward(dy.data(), x.data(), w.data(), N, K, M, dx_ref.data(), dw_ref.data(),
                                db_ref.data());
  for (std::size_t i = 0; i < dw0.size(); ++i) dw_want[i] = dw0[i] + dw1[i];
  for (std::size_t i = 0; i < db0.size(); ++i) db_want[i] = db0[i] + db1[i];
  expect_close(dx_ref, dx1, "reference dx");
  expect_close(dw_ref, dw_want, "reference dw");
  expect_close(db_ref, db_want, "reference db");
}

TEST(Dense, NullOutputsAreSkipped) {
  Rng rng(5);
  const std::int64_t N = 4, K = 6, M = 5;
  const auto x = rng.normals(N * K), w = rng.normals(K * M), dy = rng.normals(N * M);
  auto dx_all = junk(N * K);
  std::vector<float> dw_all(K * M, 0.0f), db_all(M, 0.0f);
  bk::dense_backward(dy.data(), x.data(), w.data(), N, K, M, dx_all.data(), dw_all.data(), db_all.data());

  auto dx = junk(N * K);
  bk::dense_backward(dy.data(), x.data(), w.data(), N, K, M, dx.data(), nullptr, nullptr);
  EXPECT_EQ(dx, dx_all);
  std::vector<float> dw(K * M, 0.0f), db(M, 0.0f);
  bk::dense_backward(dy.data(), x.data(), w.data(), N, K, M, nullptr, dw.data(), nullptr);
  EXPECT_EQ(dw, dw_all);
  bk::dense_backward(dy.data(), x.data(), w.data(), N, K, M, nullptr, nullptr, db.data());
  EXPECT_EQ(db, db_all);
  bk::dense_backward(dy.data(), x.data(), w.data(), N, K, M, nullptr, nullptr, nullptr);
}

TEST(Dense, EmptyShapes) {
  for (const bool fast : {true, false}) {
    const std::string what = fast ? "fast" : "reference";
    auto forward = [&](const float* x, const float* w, const float* b, std::int64_t N, std::int64_t K,
                       std::int64_t M, float* y) {
      if (fast)
        bk::dense_forward(x, w, b, N, K, M, y);
      else
        bk::reference::dense_forward(x, w, b, N, K, M, y);
    };
    auto backward = [&](const float* dy, const float* x, const float* w, std::int64_t N, std::int64_t K,
                        std::int64_t M, float* dx, float* dw, float* db) {
      if (fast)
        bk::dense_backward(dy, x, w, N, K, M, dx, dw, db);
      else
        bk::reference::dense_backward(dy, x, w, N, K, M, dx, dw, db);
    };
    // K == 0: y = b (or 0); dw is empty, db still sums dy.
    const std::vector<float> b = {1.5f, -2.0f, 3.0f};
    auto y = junk(2 * 3);
    forward(nullptr, nullptr, b.data(), 2, 0, 3, y.data());
    EXPECT_EQ(y, (std::vector<float>{1.5f, -2, 3, 1.5f, -2, 3})) << what;
    forward(nullptr, nullptr, nullptr, 2, 0, 3, y.data());
    EXPECT_EQ(y, std::vector<float>(6, 0.0f)) << what;
    const std::vector<float> dy = {1, 2, 3, 4, 5, 6};
    std::vector<float> db = {10, 20, 30};
    backward(dy.data(), nullptr, nullptr, 2, 0, 3, nullptr, nullptr, db.data());
    EXPECT_EQ(db, (std::vector<float>{15, 27, 39})) << what;

    // M == 0: dx = 0 (assigned over junk); y and dw are empty.
    const std::vector<float> x = {1, 2, 3, 4, 5, 6};
    auto dx = junk(2 * 3);
    backward(nullptr, x.data(), nullptr, 2, 3, 0, dx.data(), nullptr, nullptr);
    EXPECT_EQ(dx, std::vector<float>(6, 0.0f)) << what;

    // N == 0: dw and db are left as they were (plus an empty sum).
    const std::vector<float> w = {1, 2, 3, 4, 5, 6};
    std::vector<float> dw = {1, 2, 3, 4, 5, 6}, db2 = {7, 8, 9};
    backward(nullptr, nullptr, w.data(), 0, 2, 3, nullptr, dw.data(), db2.data());
    EXPECT_EQ(dw, w) << what;
    EXPECT_EQ(db2, (std::vector<float>{7, 8, 9})) << what;
  }
}

TEST(Dense, FiniteDifferenceGradientsOfDoubleReference) {
  Rng rng(6);
  for (const DenseShape s :
       {DenseShape{1, 1, 1}, DenseShape{3, 4, 2}, DenseShape{5, 2, 6}, DenseShape{1, 6, 1}}) {
    const std::string what = dims_str(s.N, s.K, s.M);
    auto x = rng.normals<double>(s.N * s.K), w = rng.normals<double>(s.K * s.M), b = rng.normals<double>(s.M);
    const auto g = rng.normals<double>(s.N * s.M);  // L = sum g * y, so dL/dy = g
    std::vector<double> y(static_cast<std::size_t>(s.N * s.M));
    auto loss = [&] {
      bk::reference::dense_forward(x.data(), w.data(), b.data(), s.N, s.K, s.M, y.data());
      return dot(g, y);
    };
    std::vector<double> dx(x.size(), std::nan("")), dw(w.size(), 0.0), db(b.size(), 0.0);
    bk::reference::dense_backward(g.data(), x.data(), w.data(), s.N, s.K, s.M, dx.data(), dw.data(),
                                  db.data());
    expect_gradient(dx, numeric_gradient(x, loss, 1e-5), what + " dx");
    expect_gradient(dw, numeric_gradient(w, loss, 1e-5), what + " dw");
    expect_gradient(db, numeric_gradient(b, loss, 1e-5), what + " db");
  }
}

TEST(Dense, FastGradientsMatchFiniteDifferencesInFloat) {
  // The float fast path, checked directly against a double finite difference of the
  // double reference at the same (float-representable) point.
  Rng rng(7);
  const std::int64_t N = 4, K = 3, M = 5;
  const auto xf = rng.normals(N * K), wf = rng.normals(K * M), gf = rng.normals(N * M);
  std::vector<double> x(xf.begin(), xf.end()), w(wf.begin(), wf.end()), g(gf.begin(), gf.end());
  std::vector<double> y(static_cast<std::size_t>(N * M));
  auto loss = [&] {
    bk::reference::dense_forward(x.data(), w.data(), static_cast<const double*>(nullptr), N, K, M, y.data());
    return dot(g, y);
  };
  auto dx = junk(N * K);
  std::vector<float> dw(K * M, 0.0f), db(M, 0.0f);
  bk::dense_backward(gf.data(), xf.data(), wf.data(), N, K, M, dx.data(), dw.data(), db.data());
  expect_gradient(std::vector<double>(dx.begin(), dx.end()), numeric_gradient(x, loss, 1e-5), "dx", 1e-5);
  expect_gradient(std::vector<double>(dw.begin(), dw.end()), numeric_gradient(w, loss, 1e-5), "dw", 1e-5);
}

// ---------------------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------------------

TEST(ActivationNames, RoundTrip) {
  const std::vector<std::string> names = {"linear", "relu", "sigmoid", "tanh", "softmax"};
  for (std::size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(bk::activation_from_name(names[i]), kAllActivations[i]);
    EXPECT_EQ(bk::activation_name(kAllActivations[i]), names[i]);
  }
}

TEST(ActivationNames, UnknownNameThrowsArgumentError) {
  for (const std::string bad : {"mish", "Relu", "RELU", "", " relu", "softmax "}) {
    try {
      bk::activation_from_name(bad);
      ADD_FAILURE() << "no throw for \"" << bad << "\"";
    } catch (const bnorm::ArgumentError& e) {
      EXPECT_EQ(e.argument(), "activation");
      EXPECT_EQ(e.received(), "\"" + bad + "\"");
      for (const char* name : {"linear", "relu", "sigmoid", "tanh", "softmax"})
        EXPECT_NE(e.expected().find(name), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("activation"), std::string::npos);
    }
  }
}

struct ActShape {
  std::int64_t rows, cols;
};

const std::vector<ActShape> kActShapes = {{1, 1}, {3, 1}, {1, 10}, {7, 13},
                                          {0, 5}, {5, 0}, {0, 0},  {64, 1000}};

TEST(ActivationForward, MatchesReferenceOverShapes) {
  Rng rng(10);
  for (const Activation a : kAllActivations)
    for (const auto& s : kActShapes) {
      const std::string what =
          bk::activation_name(a) + " (" + std::to_string(s.rows) + ", " + std::to_string(s.cols) + ")";
      const auto x = rng.normals(s.rows * s.cols, 4.0);
      auto y = junk(size(x)), y_ref = junk(size(x));
      bk::activation_forward(a, x.data(), s.rows, s.cols, y.data());
      bk::reference::activation_forward(a, x.data(), s.rows, s.cols, y_ref.data());
      expect_close(y, y_ref, what, 1e-6, 1e-7);
    }
}

// The fast kernels use their own vectorizable float exp: over the whole range where
// sigmoid is not saturated, and for softmax's exp(x - max) down to where it underflows,
// they stay within a few ulp of the double reference.
TEST(ActivationForward, ExpAccurateOverItsRange) {
  std::vector<float> x;
  for (float v = -87.0f; v <= 87.0f; v += 0.0137f) x.push_back(v);
  const auto n = size(x);
  auto y = junk(n), y_ref = junk(n);
  bk::activation_forward(Activation::sigmoid, x.data(), 1, n, y.data());
  bk::reference::activation_forward(Activation::sigmoid, x.data(), 1, n, y_ref.data());
  double worst = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double rel = std::abs(static_cast<double>(y[i]) - y_ref[i]) / std::abs(static_cast<double>(y_ref[i]));
    worst = std::max(worst, rel);
  }
  EXPECT_LT(worst, 4 * 6e-8) << "sigmoid: largest relative error";  // 4 ulp
  // Softmax of a row whose entries span 80 natural-log units: exp(x - max) from 1 to e^-80.
  // The row's max is 0, so x - max is exact and only exp and the scaling can differ
  // (otherwise the float subtraction alone costs |x| ulp, as in TensorFlow).
  std::vector<float> row;
  for (float v = -80.0f; v < 0.0f; v += 0.031f) row.push_back(v);
  row.push_back(0.0f);
  const auto m = size(row);
  auto s = junk(m), s_ref = junk(m);
  bk::activation_forward(Activation::softmax, row.data(), 1, m, s.data());
  bk::reference::activation_forward(Activation::softmax, row.data(), 1, m, s_ref.data());
  worst = 0.0;
  for (std::size_t i = 0; i < row.size(); ++i)
    if (s_ref[i] > 1e-37f)
      worst = std::max(worst, std::abs(static_cast<double>(s[i]) - s_ref[i]) / static_cast<double>(s_ref[i]));
  EXPECT_LT(worst, 4 * 6e-8) << "softmax: largest relative error";
}

TEST(ActivationBackward, MatchesReferenceOverShapes) {
  Rng rng(11);
  for (const Activation a : kAllActivations)
    for (const auto& s : kActShapes) {
      const std::string what =
          bk::activation_name(a) + " (" + std::to_string(s.rows) + ", " + std::to_string(s.cols) + ")";
      const auto x = rng.normals(s.rows * s.cols, 3.0), dy = rng.normals(s.rows * s.cols);
      auto y = junk(size(x));
      bk::reference::activation_forward(a, x.data(), s.rows, s.cols, y.data());
      auto dx = junk(size(x)), dx_ref = junk(size(x));
      bk::activation_backward(a, y.data(), dy.data(), s.rows, s.cols, dx.data());
      bk::reference::activation_backward(a, y.data(), dy.data(), s.rows, s.cols, dx_ref.data());
      expect_close(dx, dx_ref, what, 1e-5, 1e-6);
    }
}

TEST(Activation, InPlaceAndAliasing) {
  Rng rng(12);
  const std::int64_t rows = 6, cols = 9;
  for (const Activation a : kAllActivations) {
    const std::string what = bk::activation_name(a);
    const auto x = rng.normals(rows * cols, 3.0), dy = rng.normals(rows * cols);
    auto y = junk(rows * cols);
    bk::activation_forward(a, x.data(), rows, cols, y.data());
    auto in_place = x;
    bk::activation_forward(a, in_place.data(), rows, cols, in_place.data());
    EXPECT_EQ(in_place, y) << what << " forward y aliasing x";
    auto ref_in_place = x, ref_y = junk(rows * cols);
    bk::reference::activation_forward(a, x.data(), rows, cols, ref_y.data());
    bk::reference::activation_forward(a, ref_in_place.data(), rows, cols, ref_in_place.data());
    EXPECT_EQ(ref_in_place, ref_y) << what << " reference forward y aliasing x";

    auto dx = junk(rows * cols);
    bk::activation_backward(a, y.data(), dy.data(), rows, cols, dx.data());
    auto dx_is_dy = dy;
    bk::activation_backward(a, y.data(), dx_is_dy.data(), rows, cols, dx_is_dy.data());
    EXPECT_EQ(dx_is_dy, dx) << what << " backward dx aliasing dy";
    auto dx_is_y = y;
    bk::activation_backward(a, dx_is_y.data(), dy.data(), rows, cols, dx_is_y.data());
    EXPECT_EQ(dx_is_y, dx) << what << " backward dx aliasing y";

    auto ref_dx = junk(rows * cols), ref_dx_is_dy = dy, ref_dx_is_y = y;
    bk::reference::activation_backward(a, y.data(), dy.data(), rows, cols, ref_dx.data());
    bk::reference::activation_backward(a, y.data(), ref_dx_is_dy.data(), rows, cols, ref_dx_is_dy.data());
    bk::reference::activation_backward(a, ref_dx_is_y.data(), dy.data(), rows, cols, ref_dx_is_y.data());
    EXPECT_EQ(ref_dx_is_dy, ref_dx) << what << " reference backward dx aliasing dy";
    EXPECT_EQ(ref_dx_is_y, ref_dx) << what << " reference backward dx aliasing y";
  }
}

TEST(Activation, FiniteDifferenceGradientsOfDoubleReference) {
  Rng rng(13);
  for (const Activation a : kAllActivations)
    for (const ActShape s : {ActShape{1, 1}, ActShape{1, 5}, ActShape{4, 3}, ActShape{3, 7}}) {
      const std::string what =
          bk::activation_name(a) + " (" + std::to_string(s.rows) + ", " + std::to_string(s.cols) + ")";
      auto x = rng.normals<double>(s.rows * s.cols, 2.0);
      if (a == Activation::relu)  // keep clear of the kink at 0
        for (double& v : x)
          if (std::abs(v) < 0.05) v = v < 0 ? -0.05 : 0.05;
      const auto g = rng.normals<double>(s.rows * s.cols);  // L = sum g * y
      std::vector<double> y(x.size());
      auto loss = [&] {
        bk::reference::activation_forward(a, x.data(), s.rows, s.cols, y.data());
        return dot(g, y);
      };
      loss();
      const std::vector<double> y_at_x = y;
      std::vector<double> dx(x.size(), std::nan(""));
      bk::reference::activation_backward(a, y_at_x.data(), g.data(), s.rows, s.cols, dx.data());
      expect_gradient(dx, numeric_gradient(x, loss, 1e-6), what);

      // The float fast backward agrees with the same numeric gradient to float accuracy.
      const std::vector<float> yf(y_at_x.begin(), y_at_x.end()), gf(g.begin(), g.end());
      auto dxf = junk(size(yf));
      bk::activation_backward(a, yf.data(), gf.data(), s.rows, s.cols, dxf.data());
      expect_gradient(std::vector<double>(dxf.begin(), dxf.end()), numeric_gradient(x, loss, 1e-6),
                      what + " fast", 1e-5);
    }
}

TEST(Activation, ReluAtZeroHasZeroGradient) {
  const std::vector<float> x = {-1.0f, -0.0f, 0.0f, 1e-30f, 2.0f};
  for (const bool fast : {true, false}) {
    auto y = junk(5), dx = junk(5);
    const std::vector<float> dy = {3, 3, 3, 3, 3};
    if (fast) {
      bk::activation_forward(Activation::relu, x.data(), 1, 5, y.data());
      bk::activation_backward(Activation::relu, y.data(), dy.data(), 1, 5, dx.data());
    } else {
      bk::reference::activation_forward(Activation::relu, x.data(), 1, 5, y.data());
      bk::reference::activation_backward(Activation::relu, y.data(), dy.data(), 1, 5, dx.data());
    }
    EXPECT_EQ(y, (std::vector<float>{0, 0, 0, 1e-30f, 2})) << fast;
    EXPECT_EQ(dx, (std::vector<float>{0, 0, 0, 3, 3})) << fast;  // tf ReluGrad: 0 at x = 0
  }
  // NaN propagates through relu forward (as TensorFlow's).
  const float nan_in = kNaN;
  float nan_out = 0.0f;
  bk::activation_forward(Activation::relu, &nan_in, 1, 1, &nan_out);
  EXPECT_TRUE(std::isnan(nan_out));
}

TEST(Activation, SigmoidSaturatesWithoutNaN) {
  const std::vector<float> x = {-kInf, -1000, -100, -20, 0, 20, 100, 1000, kInf};
  auto y = junk(size(x));
  bk::activation_forward(Activation::sigmoid, x.data(), 1, size(x), y.data());
  for (const float v : y) EXPECT_FALSE(std::isnan(v));
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], 0.0f);  // exp(100) overflows float: 1 / inf, as TF/PyTorch float32
  EXPECT_NEAR(y[3], 2.0611536e-9f, 1e-15);
  EXPECT_EQ(y[4], 0.5f);
  EXPECT_EQ(y[5], 1.0f);
  EXPECT_EQ(y[6], 1.0f);
  EXPECT_EQ(y[7], 1.0f);
  EXPECT_EQ(y[8], 1.0f);

  auto y_ref = junk(size(x));
  bk::reference::activation_forward(Activation::sigmoid, x.data(), 1, size(x), y_ref.data());
  for (const float v : y_ref) EXPECT_FALSE(std::isnan(v));
  EXPECT_EQ(y_ref[0], 0.0f);
  EXPECT_EQ(y_ref[1], 0.0f);
  EXPECT_LT(y_ref[2], 1e-43f);  // a denormal in double-then-float
  EXPECT_EQ(y_ref[8], 1.0f);

  // Gradient at saturation is exactly 0, never NaN.
  const std::vector<float> dy(x.size(), 1.0f);
  auto dx = junk(size(x));
  bk::activation_backward(Activation::sigmoid, y.data(), dy.data(), 1, size(x), dx.data());
  for (std::size_t i = 0; i < x.size(); ++i) {
    EXPECT_FALSE(std::isnan(dx[i])) << i;
    if (i != 3 && i != 4) {
      EXPECT_EQ(dx[i], 0.0f) << i;
    }
  }
  EXPECT_EQ(dx[4], 0.25f);

  const float nan_in = kNaN;
  float nan_out = 0.0f;
  bk::activation_forward(Activation::sigmoid, &nan_in, 1, 1, &nan_out);
  EXPECT_TRUE(std::isnan(nan_out));
}

TEST(Activation, TanhSaturates) {
  const std::vector<float> x = {-kInf, -100, -10, 0, 10, 100, kInf};
  auto y = junk(size(x));
  bk::activation_forward(Activation::tanh, x.data(), 1, size(x), y.data());
  EXPECT_EQ(y, (std::vector<float>{-1, -1, -1, 0, 1, 1, 1}));
  const std::vector<float> dy(x.size(), 2.0f);
  auto dx = junk(size(x));
  bk::activation_backward(Activation::tanh, y.data(), dy.data(), 1, size(x), dx.data());
  EXPECT_EQ(dx, (std::vector<float>{0, 0, 0, 2, 0, 0, 0}));
}

TEST(Activation, SoftmaxSaturatesAndRowsSumToOne) {
  // One row per case; cols = 3.
  const std::vector<float> x = {-100,  100,  0,      // one dominant logit
                                100,   100,  100,    // equal large logits
                                1000,  0,    -1000,  // far apart
                                -1e4,  -1e4, -1e4,   // equal very negative logits
                                -kInf, 0,    1,      // -inf gives exactly 0
                                88,    89,   90};    // exp(x) alone would overflow
  const std::int64_t rows = 6, cols = 3;
  for (const bool fast : {true, false}) {
    auto y = junk(rows * cols);
    if (fast)
      bk::activation_forward(Activation::softmax, x.data(), rows, cols, y.data());
    else
      bk::reference::activation_forward(Activation::softmax, x.data(), rows, cols, y.data());
    for (std::int64_t r = 0; r < rows; ++r) {
      double sum = 0.0;
      for (std::int64_t j = 0; j < cols; ++j) {
        const float v = y[static_cast<std::size_t>(r * cols + j)];
        EXPECT_TRUE(std::isfinite(v)) << fast << " row " << r;
        EXPECT_GE(v, 0.0f);
        sum += v;
      }
      EXPECT_NEAR(sum, 1.0, 1e-6) << fast << " row " << r;
    }
    EXPECT_EQ(y[0], 0.0f);
    EXPECT_EQ(y[1], 1.0f);
    EXPECT_LT(y[2], 1e-43f);  // exp(-100): a float denormal
    EXPECT_NEAR(y[3], 1.0f / 3, 1e-7);
    EXPECT_EQ(y[6], 1.0f);
    EXPECT_EQ(y[12], 0.0f);
    EXPECT_NEAR(y[17], 0.66524096f, 1e-6);
  }
}

TEST(Activation, SoftmaxShiftInvarianceAndBackwardRowsSumToZero) {
  Rng rng(14);
  const std::int64_t rows = 5, cols = 11;
  const auto x = rng.normals(rows * cols, 3.0), dy = rng.normals(rows * cols);
  auto shifted = x;
  for (float& v : shifted) v += 50.0f;  // exactly representable shift of the logits
  auto y = junk(rows * cols), y_shifted = junk(rows * cols);
  bk::activation_forward(Activation::softmax, x.data(), rows, cols, y.data());
  bk::activation_forward(Activation::softmax, shifted.data(), rows, cols, y_shifted.data());
  expect_close(y_shifted, y, "softmax(x + 50) = softmax(x)", 1e-4, 1e-7);

  // sum_j dx_j = sum_j y_j (dy_j - dot) = dot - dot = 0: softmax outputs live on the simplex.
  auto dx = junk(rows * cols);
  bk::activation_backward(Activation::softmax, y.data(), dy.data(), rows, cols, dx.data());
  for (std::int64_t r = 0; r < rows; ++r) {
    double sum = 0.0;
    for (std::int64_t j = 0; j < cols; ++j) sum += dx[static_cast<std::size_t>(r * cols + j)];
    EXPECT_NEAR(sum, 0.0, 1e-6) << "row " << r;
  }
}

TEST(Activation, SoftmaxRowsAreIndependent) {
  // Softmax normalizes over cols only: a (2, 3) call equals two (1, 3) calls.
  const std::vector<float> x = {1, 2, 3, -5, 0, 5};
  auto both = junk(6), first = junk(3), second = junk(3);
  bk::activation_forward(Activation::softmax, x.data(), 2, 3, both.data());
  bk::activation_forward(Activation::softmax, x.data(), 1, 3, first.data());
  bk::activation_forward(Activation::softmax, x.data() + 3, 1, 3, second.data());
  EXPECT_EQ(std::vector<float>(both.begin(), both.begin() + 3), first);
  EXPECT_EQ(std::vector<float>(both.begin() + 3, both.end()), second);
}

}  // namespace
