// Tests of the activations added for convolutional networks (bnorm/kernels/activation.hpp):
// the Keras-measured values of ../shared/spec/CNN.md section 4, the name table (aliases,
// the two hard_sigmoid forms), fast kernels against the double reference, finite-
// difference gradients of the reference, the gradients at the kinks, aliasing, and the
// parameterized ReLU of the ReLU / LeakyReLU layers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/kernels/activation.hpp"

namespace bk = bnorm::kernels;
using bk::Activation;

namespace {

const std::vector<Activation> kAll = {
    Activation::linear,     Activation::relu,       Activation::sigmoid,      Activation::tanh,
    Activation::softmax,    Activation::relu6,      Activation::silu,         Activation::swish,
    Activation::gelu,       Activation::gelu_tanh,  Activation::elu,          Activation::selu,
    Activation::softplus,   Activation::softsign,   Activation::hard_sigmoid, Activation::hard_sigmoid_keras2,
    Activation::hard_silu,  Activation::hard_swish, Activation::leaky_relu,   Activation::exponential,
    Activation::log_softmax};

std::vector<float> forward(Activation a, const std::vector<float>& x, std::int64_t rows = 1) {
  std::vector<float> y(x.size(), std::numeric_limits<float>::quiet_NaN());
  bk::activation_forward(a, x.data(), rows, static_cast<std::int64_t>(x.size()) / rows, y.data());
  return y;
}

// dx for dy = 1 through the fast kernel (x and y both passed).
std::vector<float> gradient(Activation a, const std::vector<float>& x) {
  const auto y = forward(a, x);
  const std::vector<float> dy(x.size(), 1.0f);
  std::vector<float> dx(x.size(), std::numeric_limits<float>::quiet_NaN());
  bk::activation_backward(a, x.data(), y.data(), dy.data(), 1, static_cast<std::int64_t>(x.size()),
                          dx.data());
  return dx;
}

void expect_values(const std::vector<float>& got, const std::vector<double>& want, const std::string& what,
                   double tol = 1e-6) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol * (1.0 + std::fabs(want[i]))) << what << " [" << i << "]";
}

std::vector<double> normals(std::uint32_t seed, std::size_t n, double scale) {
  std::mt19937 engine(seed);
  std::normal_distribution<double> d(0.0, scale);
  std::vector<double> v(n);
  for (auto& e : v) e = d(engine);
  return v;
}

}  // namespace

TEST(CnnActivations, NamesRoundTripKeepTheNameRead) {
  for (const Activation a : kAll) {
    const std::string name = bk::activation_name(a);
    const auto version =
        a == Activation::hard_sigmoid_keras2 ? bk::ActivationVersion::keras2 : bk::ActivationVersion::keras3;
    EXPECT_EQ(bk::activation_from_name(name, version), a) << name;
    EXPECT_EQ(bk::activation_from_name(bk::activation_unique_name(a)), a) << name;
  }
  EXPECT_EQ(bk::activation_name(Activation::swish), "swish");
  EXPECT_EQ(bk::activation_name(Activation::silu), "silu");
  EXPECT_EQ(bk::activation_name(Activation::hard_swish), "hard_swish");
  EXPECT_EQ(bk::activation_name(Activation::hard_sigmoid_keras2), "hard_sigmoid");
  EXPECT_EQ(bk::activation_unique_name(Activation::hard_sigmoid_keras2), "hard_sigmoid_keras2");
  EXPECT_EQ(bk::activation_from_name("hard_sigmoid"), Activation::hard_sigmoid);
  EXPECT_EQ(bk::activation_from_name("hard_sigmoid", bk::ActivationVersion::keras2),
            Activation::hard_sigmoid_keras2);
  try {
    bk::activation_from_name("mish");
    ADD_FAILURE() << "no throw";
  } catch (const bnorm::ArgumentError& e) {
    EXPECT_EQ(e.argument(), "activation");
    EXPECT_NE(e.expected().find("\"hard_silu\""), std::string::npos);
    EXPECT_EQ(e.received(), "\"mish\"");
  }
}

TEST(CnnActivations, KerasMeasuredValues) {
  // CNN.md section 4, Keras 3.15 printed to 7 digits.
  const std::vector<float> x = {-4, -1, -0.5f, 0.5f, 1, 3};
  expect_values(forward(Activation::silu, x),
                {-0.0719448, -0.2689414, -0.1887703, 0.3112297, 0.7310586, 2.8577223}, "silu");
  expect_values(forward(Activation::swish, x),
                {-0.0719448, -0.2689414, -0.1887703, 0.3112297, 0.7310586, 2.8577223}, "swish");
  expect_values(forward(Activation::gelu, x),
                {-0.0001267, -0.1586552, -0.1542688, 0.3457312, 0.8413447, 2.9959502}, "gelu");
  expect_values(forward(Activation::gelu_tanh, x),
                {-0.0000702, -0.1588080, -0.1542860, 0.3457140, 0.8411920, 2.9963627}, "gelu_tanh");
  expect_values(forward(Activation::hard_sigmoid, x), {0, 0.3333334, 0.4166666, 0.5833333, 0.6666667, 1},
                "hard_sigmoid");
  expect_values(forward(Activation::hard_silu, x), {-0.0, -0.3333334, -0.2083333, 0.2916666, 0.6666667, 3},
                "hard_silu");
  expect_values(forward(Activation::elu, x), {-0.9816844, -0.6321206, -0.3934693, 0.5, 1, 3}, "elu");
  expect_values(forward(Activation::selu, x),
                {-1.7258986, -1.1113307, -0.6917582, 0.5253505, 1.0507010, 3.1521029}, "selu");
  expect_values(forward(Activation::softplus, x),
                {0.0181499, 0.3132617, 0.4740770, 0.9740769, 1.3132616, 3.0485873}, "softplus");
  expect_values(forward(Activation::exponential, x),
                {0.0183156, 0.3678794, 0.6065306, 1.6487212, 2.7182817, 20.085537}, "exponential");
  expect_values(forward(Activation::relu6, {-1, 0, 2, 6, 7}), {0, 0, 2, 6, 6}, "relu6");
  expect_values(forward(Activation::leaky_relu, {-1, 0, 2}), {-0.2, 0, 2}, "leaky_relu");
  expect_values(forward(Activation::softsign, {-3, 0, 1}), {-0.75, 0, 0.5}, "softsign");
  // tf.keras hard_sigmoid.
  expect_values(forward(Activation::hard_sigmoid_keras2, {-4, -3, -2.5f, -1, 0, 1, 2.5f, 3}),
                {0, 0, 0, 0.3, 0.5, 0.7, 1, 1}, "hard_sigmoid keras2");
  // log_softmax over the last axis, two rows of the measured 10-vector.
  const std::vector<float> row = {-4, -3, -1, -0.5f, 0, 0.5f, 1, 2.5f, 3, 7};
  std::vector<float> two = row;
  two.insert(two.end(), row.begin(), row.end());
  const auto y = forward(Activation::log_softmax, two, 2);
  EXPECT_NEAR(y[0], -11.0346613, 2e-6);
  EXPECT_NEAR(y[9], -0.0346617, 2e-7);
  EXPECT_NEAR(y[10], -11.0346613, 2e-6);
  EXPECT_NEAR(y[19], -0.0346617, 2e-7);
}

TEST(CnnActivations, GradientsAtTheKinks) {
  // CNN.md section 4, "Gradients at the kinks" (TF kernels).
  const std::vector<float> x = {-1, 0, 2, 6, 7};
  expect_values(gradient(Activation::relu, x), {0, 0, 1, 1, 1}, "relu");
  expect_values(gradient(Activation::relu6, x), {0, 0, 1, 0, 0}, "relu6");
  expect_values(gradient(Activation::leaky_relu, {-1, 0, 1}), {0.2, 0.2, 1}, "leaky_relu");
  expect_values(gradient(Activation::hard_sigmoid, {-3, -2.9f, 0, 2.9f, 3}),
                {0, 1 / 6.0, 1 / 6.0, 1 / 6.0, 0}, "hard_sigmoid");
  expect_values(gradient(Activation::hard_sigmoid_keras2, {-3, -2.5f, 0, 2.5f, 3}), {0, 0.2, 0.2, 0.2, 0},
                "hard_sigmoid keras2");
  expect_values(gradient(Activation::hard_silu, {-4, -3, 0, 3, 4}), {0, 0, 0.5, 1, 1}, "hard_silu");
  expect_values(gradient(Activation::elu, {-1, 0, 1}), {std::exp(-1.0), 1, 1}, "elu");
}

TEST(CnnActivations, FastMatchesReferenceForwardAndBackward) {
  struct Shape {
    std::int64_t rows, cols;
  };
  const std::vector<Shape> shapes = {{1, 1}, {3, 7}, {17, 33}, {0, 5}, {4, 0}, {2, 100}};
  std::uint32_t seed = 1;
  for (const Activation a : kAll) {
    for (const auto& s : shapes) {
      const auto n = static_cast<std::size_t>(s.rows * s.cols);
      const auto xd = normals(seed++, n, 3.0), gd = normals(seed++, n, 1.0);
      const std::vector<float> x(xd.begin(), xd.end()), dy(gd.begin(), gd.end());
      std::vector<float> y(n, NAN), y_ref(n, NAN), dx(n, NAN), dx_ref(n, NAN);
      bk::activation_forward(a, x.data(), s.rows, s.cols, y.data());
      bk::reference::activation_forward(a, x.data(), s.rows, s.cols, y_ref.data());
      bk::activation_backward(a, x.data(), y.data(), dy.data(), s.rows, s.cols, dx.data());
      bk::reference::activation_backward(a, x.data(), y_ref.data(), dy.data(), s.rows, s.cols, dx_ref.data());
      const std::string what =
          bk::activation_unique_name(a) + " (" + std::to_string(s.rows) + "," + std::to_string(s.cols) + ")";
      for (std::size_t i = 0; i < n; ++i) {
        EXPECT_NEAR(y[i], y_ref[i], 4e-6 * (1.0 + std::fabs(y_ref[i]))) << what << " y[" << i << "]";
        EXPECT_NEAR(dx[i], dx_ref[i], 4e-6 * (1.0 + std::fabs(dx_ref[i]))) << what << " dx[" << i << "]";
      }
    }
  }
}

TEST(CnnActivations, ReferenceGradientsMatchFiniteDifferences) {
  const std::int64_t rows = 3, cols = 6;
  const std::size_t n = rows * cols;
  std::uint32_t seed = 100;
  for (const Activation a : kAll) {
    auto x = normals(seed++, n, 2.0);
    // Keep away from the kinks (0, +-2.5, +-3, 6), where the derivative jumps.
    for (auto& v : x)
      for (const double kink : {0.0, 2.5, -2.5, 3.0, -3.0, 6.0})
        if (std::fabs(v - kink) < 0.05) v += 0.1;
    const auto dy = normals(seed++, n, 1.0);
    std::vector<double> y(n), dx(n);
    bk::reference::activation_forward(a, x.data(), rows, cols, y.data());
    bk::reference::activation_backward(a, x.data(), y.data(), dy.data(), rows, cols, dx.data());
    const auto loss = [&](const std::vector<double>& xi) {
      std::vector<double> yi(n);
      bk::reference::activation_forward(a, xi.data(), rows, cols, yi.data());
      double s = 0;
      for (std::size_t i = 0; i < n; ++i) s += yi[i] * dy[i];
      return s;
    };
    const double h = 1e-6;
    for (std::size_t i = 0; i < n; ++i) {
      auto xp = x, xm = x;
      xp[i] += h;
      xm[i] -= h;
      const double fd = (loss(xp) - loss(xm)) / (2 * h);
      EXPECT_NEAR(dx[i], fd, 1e-6 * (1.0 + std::fabs(fd)))
          << bk::activation_unique_name(a) << " [" << i << "]";
    }
  }
}

TEST(CnnActivations, BackwardReadsOneTensorAndAliases) {
  const std::vector<float> x = {-2.2f, -0.7f, 0.3f, 1.9f, 4.0f, -5.0f};
  const std::vector<float> dy = {0.5f, -1.0f, 2.0f, 0.25f, -0.75f, 1.5f};
  const auto n = static_cast<std::int64_t>(x.size());
  for (const Activation a : kAll) {
    const auto y = forward(a, x);
    const bool reads_x = bk::activation_backward_reads(a) == bk::BackwardReads::x;
    std::vector<float> want(x.size());
    bk::activation_backward(a, x.data(), y.data(), dy.data(), 1, n, want.data());
    // Only the tensor it reads: the other is null.
    std::vector<float> dx(x.size(), NAN);
    bk::activation_backward(a, reads_x ? x.data() : nullptr, reads_x ? nullptr : y.data(), dy.data(), 1, n,
                            dx.data());
    EXPECT_EQ(dx, want) << bk::activation_unique_name(a);
    // dx aliasing dy, and aliasing the tensor read.
    auto in_dy = dy;
    bk::activation_backward(a, x.data(), y.data(), in_dy.data(), 1, n, in_dy.data());
    EXPECT_EQ(in_dy, want) << bk::activation_unique_name(a);
    auto in_x = x, in_y = y;
    bk::activation_backward(a, in_x.data(), in_y.data(), dy.data(), 1, n,
                            reads_x ? in_x.data() : in_y.data());
    EXPECT_EQ(reads_x ? in_x : in_y, want) << bk::activation_unique_name(a);
    // The y-only overload: the same for y readers, refused (nothing written) for x readers.
    std::vector<float> old(x.size(), NAN);
    if (reads_x) {
      EXPECT_THROW(bk::activation_backward(a, y.data(), dy.data(), 1, n, old.data()), bnorm::ArgumentError);
      EXPECT_TRUE(std::isnan(old[0]));
      EXPECT_THROW(bk::reference::activation_backward(a, y.data(), dy.data(), 1, n, old.data()),
                   bnorm::ArgumentError);
    } else {
      bk::activation_backward(a, y.data(), dy.data(), 1, n, old.data());
      EXPECT_EQ(old, want) << bk::activation_unique_name(a);
    }
  }
}

TEST(CnnActivations, SaturationGivesNoNaN) {
  const std::vector<float> x = {-100, -20, 20, 100};
  for (const Activation a :
       {Activation::silu, Activation::gelu, Activation::gelu_tanh, Activation::softplus, Activation::elu,
        Activation::selu, Activation::softsign, Activation::hard_silu}) {
    for (const float v : forward(a, x)) EXPECT_TRUE(std::isfinite(v)) << bk::activation_unique_name(a);
    for (const float v : gradient(a, x)) EXPECT_TRUE(std::isfinite(v)) << bk::activation_unique_name(a);
  }
  EXPECT_EQ(forward(Activation::silu, {100})[0], 100.0f);
  EXPECT_EQ(forward(Activation::softplus, {100})[0], 100.0f);
  EXPECT_EQ(forward(Activation::gelu, {-100})[0], 0.0f);
}

// ---------------------------------------------------------------- ReLU layer kernel

// ReLU() and ReLU(max_value=6) run loops of their own (vectorized): on long inputs with
// every special value, the definition element by element.
TEST(ReluParams, CommonFormsOnLongInputsFollowTheDefinition) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> special = {-inf,      -7, -1e-30f,   -0.0f, 0.0f, 1e-30f, 3,
                                      5.999999f, 6,  6.000001f, 1e30f, inf,  nan};
  std::vector<float> x(1037), dy(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    x[i] = i % 3 == 0 ? special[i / 3 % special.size()] : static_cast<float>(i % 17) - 8.5f;
    dy[i] = 0.25f * static_cast<float>(i % 7) - 0.5f;
  }
  std::vector<float> y(x.size()), dx(x.size());
  const auto n = static_cast<std::int64_t>(x.size());
  for (const bool six : {false, true}) {
    const bk::ReluParams p{0.0, 0.0, six, six ? 6.0 : 0.0};
    bk::relu_forward(p, x.data(), n, y.data());
    bk::relu_backward(p, x.data(), dy.data(), n, dx.data());
    for (std::size_t i = 0; i < x.size(); ++i) {
      const float v = x[i];
      const float want_y = std::isnan(v) ? nan : std::min(v > 0 ? v : 0.0f, six ? 6.0f : inf);
      const float want_dx = dy[i] * (v > 0 && (!six || v < 6) ? 1.0f : 0.0f);
      if (std::isnan(want_y)) {
        EXPECT_TRUE(std::isnan(y[i])) << "ReLU(six=" << six << ") at " << i;
      } else {
        EXPECT_EQ(y[i], want_y) << "ReLU(six=" << six << ") of " << v << " at " << i;
      }
      EXPECT_EQ(dx[i], want_dx) << "ReLU(six=" << six << ") gradient at " << v << ", element " << i;
    }
  }
}

TEST(ReluParams, KerasMeasuredValuesAndKinks) {
  const std::vector<float> x = {-4, -3, -1, -0.5f, 0, 0.5f, 1, 2.5f, 3, 7};
  std::vector<float> y(x.size());
  const bk::ReluParams p{0.1, 1.0, true, 2.0};
  bk::relu_forward(p, x.data(), static_cast<std::int64_t>(x.size()), y.data());
  expect_values(y, {-0.5, -0.4, -0.2, -0.15, -0.1, -0.05, 0, 2, 2, 2}, "ReLU(2, 0.1, 1)");

  const std::vector<float> k = {-1, 0, 2, 6, 7}, ones(5, 1.0f);
  std::vector<float> dx(5);
  const auto grad = [&](const bk::ReluParams& q) {
    bk::relu_backward(q, k.data(), ones.data(), 5, dx.data());
    return dx;
  };
  expect_values(grad({0.0, 0.0, true, 6.0}), {0, 0, 1, 0, 0}, "ReLU(max_value=6): relu6, 0 at 6");
  expect_values(grad({0.0, 0.0, true, 2.0}), {0, 0, 1, 0, 0}, "ReLU(max_value=2): 1 at 2");
  expect_values(grad({0.0, 0.0, true, 7.0}), {0, 0, 1, 1, 1}, "ReLU(max_value=7): 1 at 7");
  expect_values(grad({0.0, 0.0, false, 0.0}), {0, 0, 1, 1, 1}, "ReLU()");
  expect_values(grad({0.3, 0.0, false, 0.0}), {0.3, 0.3, 1, 1, 1}, "leaky 0.3: slope at 0");
  expect_values(grad({0.3, 0.0, true, 6.0}), {0.3, 0, 1, 0, 0}, "relu6 and slope");
  expect_values(grad({0.0, 2.0, true, 6.0}), {0, 0, 0, 1, 0}, "threshold 2 with max 6: clip passes at 6");
  expect_values(grad({0.5, 2.0, false, 0.0}), {0.5, 0.5, 0, 1, 1}, "threshold 2, slope 0.5");
  // Forward of the max_value 6 forms.
  std::vector<float> y6(5);
  bk::relu_forward(bk::ReluParams{0.3, 0.0, true, 6.0}, k.data(), 5, y6.data());
  expect_values(y6, {-0.3, 0, 2, 6, 6}, "relu6 and slope forward");
}

TEST(ReluParams, GradientsMatchFiniteDifferencesInDouble) {
  const std::vector<bk::ReluParams> params = {{0, 0, false, 0},  {0.2, 0, false, 0}, {0, 0, true, 6},
                                              {0.1, 0, true, 6}, {0.1, 1, true, 2},  {0.3, 0.5, false, 0},
                                              {0, 0, true, 1.5}};
  auto x = normals(7, 40, 3.0);
  for (auto& v : x)
    for (const double kink : {0.0, 0.5, 1.0, 1.5, 2.0, 6.0})
      if (std::fabs(v - kink) < 0.05) v += 0.1;
  const auto dy = normals(8, 40, 1.0);
  for (const auto& p : params) {
    std::vector<double> dx(x.size());
    bk::relu_backward(p, x.data(), dy.data(), 40, dx.data());
    const double h = 1e-6;
    for (std::size_t i = 0; i < x.size(); ++i) {
      double yp, ym;
      const double xp = x[i] + h, xm = x[i] - h;
      bk::relu_forward(p, &xp, 1, &yp);
      bk::relu_forward(p, &xm, 1, &ym);
      EXPECT_NEAR(dx[i], dy[i] * (yp - ym) / (2 * h), 1e-6)
          << "slope " << p.negative_slope << " threshold " << p.threshold << " [" << i << "]";
    }
  }
}
