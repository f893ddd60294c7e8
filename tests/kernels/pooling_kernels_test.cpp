// Tests of the pooling and spatial kernels (bnorm/kernels/pooling.hpp): TensorFlow's
// same-padding split table and the Keras-measured pooling, padding, cropping and
// upsampling examples of ../shared/spec/CNN.md sections 1.5 and 2, tie rules, NHWC vs
// NCHW agreement, assigned outputs, and finite-difference gradients in double.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "bnorm/kernels/pooling.hpp"

namespace bk = bnorm::kernels;
using bk::ImageShape;
using bk::SpatialLayout;

namespace {

std::vector<float> iota(std::int64_t n, float from = 1) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& e : v) e = from++;
  return v;
}

std::vector<double> randoms(std::uint32_t seed, std::int64_t n) {
  std::mt19937 engine(seed);
  std::uniform_real_distribution<double> d(-1.0, 1.0);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (auto& e : v) e = d(engine);
  return v;
}

bk::Pool2d pool(ImageShape s, std::int64_t k, std::int64_t stride, bool same) {
  bk::Pool2d p;
  p.input = s;
  p.pool_h = p.pool_w = k;
  p.stride_h = p.stride_w = stride;
  const auto rows = same ? bk::window_same(s.H, k, stride) : bk::window_valid(s.H, k, stride);
  const auto cols = same ? bk::window_same(s.W, k, stride) : bk::window_valid(s.W, k, stride);
  p.out_h = rows.out;
  p.out_w = cols.out;
  p.pad_top = rows.pad_before;
  p.pad_left = cols.pad_before;
  return p;
}

void expect_values(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << what << " [" << i << "]";
}

// NHWC data of shape s to NCHW.
template <typename T>
std::vector<T> to_nchw(const ImageShape& s, const std::vector<T>& x) {
  std::vector<T> out(x.size());
  for (std::int64_t n = 0; n < s.N; ++n)
    for (std::int64_t h = 0; h < s.H; ++h)
      for (std::int64_t w = 0; w < s.W; ++w)
        for (std::int64_t c = 0; c < s.C; ++c)
          out[static_cast<std::size_t>(((n * s.C + c) * s.H + h) * s.W + w)] =
              x[static_cast<std::size_t>(((n * s.H + h) * s.W + w) * s.C + c)];
  return out;
}

// Checks backward against central differences of forward in double: for a fixed dy,
// dx[i] = d <dy, forward(x)> / d x[i].
void expect_fd_gradient(const std::vector<double>& x, const std::vector<double>& dy,
                        const std::function<std::vector<double>(const std::vector<double>&)>& fwd,
                        const std::vector<double>& dx, const std::string& what) {
  ASSERT_EQ(dx.size(), x.size()) << what;
  const double h = 1e-6;
  for (std::size_t i = 0; i < x.size(); ++i) {
    auto xp = x, xm = x;
    xp[i] += h;
    xm[i] -= h;
    const auto yp = fwd(xp), ym = fwd(xm);
    double fd = 0;
    for (std::size_t j = 0; j < dy.size(); ++j) fd += dy[j] * (yp[j] - ym[j]);
    fd /= 2 * h;
    EXPECT_NEAR(dx[i], fd, 1e-7 * (1.0 + std::fabs(fd))) << what << " dx[" << i << "]";
  }
}

}  // namespace

TEST(PoolingWindows, SamePaddingSplitsAsTensorFlow) {
  // CNN.md section 1.5 table: n, k, s, d, out, total, before, after.
  const std::int64_t table[][8] = {
      {4, 2, 1, 1, 4, 1, 0, 1}, {4, 2, 2, 1, 2, 0, 0, 0}, {4, 3, 1, 2, 4, 4, 2, 2}, {4, 3, 2, 1, 2, 1, 0, 1},
      {4, 4, 1, 1, 4, 3, 1, 2}, {4, 4, 2, 1, 2, 2, 1, 1}, {5, 2, 2, 1, 3, 1, 0, 1}, {5, 3, 2, 1, 3, 2, 1, 1},
      {5, 4, 2, 1, 3, 3, 1, 2}, {6, 3, 2, 1, 3, 1, 0, 1}, {6, 4, 2, 1, 3, 2, 1, 1}, {7, 3, 2, 1, 4, 2, 1, 1},
      {7, 4, 2, 1, 4, 3, 1, 2}};
  for (const auto& r : table) {
    const auto w = bk::window_same(r[0], r[1], r[2], r[3]);
    EXPECT_EQ(w.out, r[4]) << "n " << r[0] << " k " << r[1] << " s " << r[2] << " d " << r[3];
    EXPECT_EQ(w.pad_before + w.pad_after, r[5]);
    EXPECT_EQ(w.pad_before, r[6]);
    EXPECT_EQ(w.pad_after, r[7]);
  }
  EXPECT_EQ(bk::window_valid(5, 2, 2).out, 2);
  EXPECT_EQ(bk::window_valid(5, 3, 1, 2).out, 1);
  EXPECT_EQ(bk::window_valid(2, 3, 1).out, 0);
  EXPECT_EQ(bk::window_valid(7, 3, 2).out, 3);
  EXPECT_EQ(bk::window_same(0, 3, 2).out, 0);
}

TEST(Pooling, KerasMeasuredExamplesOn5x5) {
  // x = 1..25 (5x5, one channel), CNN.md section 2.1.
  const ImageShape s{1, 5, 5, 1, SpatialLayout::nhwc};
  const auto x = iota(25);
  std::vector<float> y(9, NAN);
  bk::max_pool2d_forward(pool(s, 2, 2, true), x.data(), y.data());
  expect_values(y, {7, 9, 10, 17, 19, 20, 22, 24, 25}, "MaxPooling2D(2, same)");
  bk::avg_pool2d_forward(pool(s, 2, 2, true), x.data(), y.data());
  expect_values(y, {4, 6, 7.5f, 14, 16, 17.5f, 21.5f, 23.5f, 25}, "AveragePooling2D(2, same)");
  std::vector<float> y5(25, NAN);
  bk::avg_pool2d_forward(pool(s, 3, 1, true), x.data(), y5.data());
  expect_values(std::vector<float>(y5.begin(), y5.begin() + 10),
                {4, 4.5f, 5.5f, 6.5f, 7, 6.5f, 7, 8, 9, 9.5f},
                "AveragePooling2D(3, strides=1, same), first two rows");
  std::vector<float> neg(25);
  for (std::size_t i = 0; i < 25; ++i) neg[i] = -x[i];
  bk::max_pool2d_forward(pool(s, 3, 2, true), neg.data(), y.data());
  expect_values(y, {-1, -2, -4, -6, -7, -9, -16, -17, -19},
                "MaxPooling2D(3, 2, same) on -x: padding never wins");
  std::vector<float> yv(4, NAN);
  bk::max_pool2d_forward(pool(s, 2, 2, false), x.data(), yv.data());
  expect_values(yv, {7, 9, 17, 19}, "MaxPooling2D(2, valid)");
}

TEST(Pooling, MeasuredGradients) {
  // Max: an all-equal 2x2 window sends its gradient to the top-left cell (TF's first
  // maximum in row-major order).
  const ImageShape s2{1, 2, 2, 1, SpatialLayout::nhwc};
  const std::vector<float> equal(4, 3.0f), one{1.0f};
  std::vector<float> dx(4, NAN);
  bk::max_pool2d_backward(pool(s2, 2, 2, false), equal.data(), one.data(), dx.data());
  expect_values(dx, {1, 0, 0, 0}, "max tie");
  // Average (2, same) on 3x3, dy = 1: 1 / count_real per window.
  const ImageShape s3{1, 3, 3, 1, SpatialLayout::nhwc};
  const std::vector<float> ones(4, 1.0f);
  std::vector<float> dx3(9, NAN);
  bk::avg_pool2d_backward(pool(s3, 2, 2, true), ones.data(), dx3.data());
  expect_values(dx3, {.25f, .25f, .5f, .25f, .25f, .5f, .5f, .5f, 1}, "avg same");
  // Overlapping max windows accumulate: 3x3 stride 1 valid on 4x4 with the maximum in the middle.
  const ImageShape s4{1, 4, 4, 1, SpatialLayout::nhwc};
  std::vector<float> x4(16, 0.0f);
  x4[5] = 9;  // (1, 1) is in all four windows
  std::vector<float> dx4(16, NAN);
  bk::max_pool2d_backward(pool(s4, 3, 1, false), x4.data(), ones.data(), dx4.data());
  EXPECT_EQ(dx4[5], 4.0f);
  // A NaN wins the max and takes the gradient.
  std::vector<float> xn = {1, NAN, 5, 2}, yn(1);
  bk::max_pool2d_forward(pool(s2, 2, 2, false), xn.data(), yn.data());
  EXPECT_TRUE(std::isnan(yn[0]));
  bk::max_pool2d_backward(pool(s2, 2, 2, false), xn.data(), one.data(), dx.data());
  expect_values(dx, {0, 1, 0, 0}, "NaN takes the gradient");
}

TEST(Pooling, LayoutsAgreeAndOutputsAreAssigned) {
  const ImageShape s{2, 7, 6, 3, SpatialLayout::nhwc};
  ImageShape sc = s;
  sc.layout = SpatialLayout::nchw;
  const auto xd = randoms(1, s.numel());
  const std::vector<float> x(xd.begin(), xd.end()), xc = to_nchw(s, x);
  for (const bool same : {false, true})
    for (const std::int64_t k : {1, 2, 3})
      for (const std::int64_t stride : {1, 2, 3}) {
        const auto p = pool(s, k, stride, same), pc = pool(sc, k, stride, same);
        const ImageShape o = p.output();
        const auto dyd = randoms(2, o.numel());
        const std::vector<float> dy(dyd.begin(), dyd.end()), dyc = to_nchw(o, dy);
        for (const bool max : {true, false}) {
          const std::string what = std::string(max ? "max" : "avg") + (same ? " same" : " valid") + " k " +
                                   std::to_string(k) + " s " + std::to_string(stride);
          std::vector<float> y(static_cast<std::size_t>(o.numel()), NAN), yc = y;
          std::vector<float> dx(x.size(), NAN), dxc = dx;
          if (max) {
            bk::max_pool2d_forward(p, x.data(), y.data());
            bk::max_pool2d_forward(pc, xc.data(), yc.data());
            bk::max_pool2d_backward(p, x.data(), dy.data(), dx.data());
            bk::max_pool2d_backward(pc, xc.data(), dyc.data(), dxc.data());
          } else {
            bk::avg_pool2d_forward(p, x.data(), y.data());
            bk::avg_pool2d_forward(pc, xc.data(), yc.data());
            bk::avg_pool2d_backward(p, dy.data(), dx.data());
            bk::avg_pool2d_backward(pc, dyc.data(), dxc.data());
          }
          EXPECT_EQ(to_nchw(o, y), yc) << what;
          EXPECT_EQ(to_nchw(s, dx), dxc) << what;
          for (const float v : y) ASSERT_FALSE(std::isnan(v)) << what;
          for (const float v : dx) ASSERT_FALSE(std::isnan(v)) << what;
        }
      }
}

TEST(Pooling, GradientsMatchFiniteDifferencesInDouble) {
  for (const auto layout : {SpatialLayout::nhwc, SpatialLayout::nchw})
    for (const bool same : {false, true})
      for (const auto& [k, stride] :
           std::vector<std::pair<std::int64_t, std::int64_t>>{{2, 2}, {3, 2}, {3, 1}}) {
        const ImageShape s{2, 5, 4, 2, layout};
        const auto p = pool(s, k, stride, same);
        const auto x = randoms(3, s.numel()), dy = randoms(4, p.output().numel());
        const std::string what = std::string(same ? "same" : "valid") + " k " + std::to_string(k) + " s " +
                                 std::to_string(stride) + (layout == SpatialLayout::nhwc ? " nhwc" : " nchw");
        std::vector<double> dx(x.size());
        bk::avg_pool2d_backward(p, dy.data(), dx.data());
        expect_fd_gradient(
            x, dy,
            [&](const std::vector<double>& xi) {
              std::vector<double> y(static_cast<std::size_t>(p.output().numel()));
              bk::avg_pool2d_forward(p, xi.data(), y.data());
              return y;
            },
            dx, "avg " + what);
        bk::max_pool2d_backward(p, x.data(), dy.data(), dx.data());
        expect_fd_gradient(
            x, dy,
            [&](const std::vector<double>& xi) {
              std::vector<double> y(static_cast<std::size_t>(p.output().numel()));
              bk::max_pool2d_forward(p, xi.data(), y.data());
              return y;
            },
            dx, "max " + what);
      }
}

TEST(GlobalPooling, ValuesLayoutsAndGradients) {
  const ImageShape s{2, 3, 4, 5, SpatialLayout::nhwc};
  ImageShape sc = s;
  sc.layout = SpatialLayout::nchw;
  const auto x = randoms(5, s.numel()), xc = to_nchw(s, x), dy = randoms(6, s.N * s.C);
  std::vector<double> y(10), yc(10), dx(x.size()), dxc(x.size());
  bk::global_avg_pool2d_forward(s, x.data(), y.data());
  bk::global_avg_pool2d_forward(sc, xc.data(), yc.data());
  double sum = 0;
  for (std::int64_t i = 0; i < 12; ++i) sum += x[static_cast<std::size_t>(i * 5 + 2)];
  EXPECT_NEAR(y[2], sum / 12, 1e-15);
  EXPECT_EQ(y, yc);
  bk::global_avg_pool2d_backward(s, dy.data(), dx.data());
  bk::global_avg_pool2d_backward(sc, dy.data(), dxc.data());
  EXPECT_EQ(to_nchw(s, dx), dxc);
  const auto avg = [&](const std::vector<double>& xi) {
    std::vector<double> out(10);
    bk::global_avg_pool2d_forward(s, xi.data(), out.data());
    return out;
  };
  expect_fd_gradient(x, dy, avg, dx, "global avg");
  bk::global_max_pool2d_forward(s, x.data(), y.data());
  bk::global_max_pool2d_forward(sc, xc.data(), yc.data());
  EXPECT_EQ(y, yc);
  bk::global_max_pool2d_backward(s, x.data(), dy.data(), dx.data());
  bk::global_max_pool2d_backward(sc, xc.data(), dy.data(), dxc.data());
  EXPECT_EQ(to_nchw(s, dx), dxc);
  const auto mx = [&](const std::vector<double>& xi) {
    std::vector<double> out(10);
    bk::global_max_pool2d_forward(s, xi.data(), out.data());
    return out;
  };
  expect_fd_gradient(x, dy, mx, dx, "global max");
  // Ties: the first maximum in (h, w) order.
  const ImageShape t{1, 2, 2, 1, SpatialLayout::nhwc};
  const std::vector<float> tx(4, 1.0f), tdy{2.0f};
  std::vector<float> tdx(4, NAN);
  bk::global_max_pool2d_backward(t, tx.data(), tdy.data(), tdx.data());
  expect_values(tdx, {2, 0, 0, 0}, "global max tie");
}

TEST(PadCrop, KerasExamplesAndAdjoints) {
  // ZeroPadding2D(((1, 2), (3, 0))) on 5x5 -> 8x8.
  const ImageShape s{1, 5, 5, 1, SpatialLayout::nhwc};
  const auto x = iota(25);
  std::vector<float> padded(64, NAN);
  bk::zero_pad2d(s, bk::Margins{1, 2, 3, 0}, x.data(), padded.data());
  EXPECT_EQ(padded[0], 0.0f);
  EXPECT_EQ(padded[1 * 8 + 3], 1.0f);
  EXPECT_EQ(padded[5 * 8 + 7], 25.0f);
  EXPECT_EQ(padded[7 * 8 + 7], 0.0f);
  double total = 0;
  for (const float v : padded) total += v;
  EXPECT_EQ(total, 325.0);
  // Cropping2D(((1, 0), (0, 2))) on 5x5: rows 1..4, cols 0..2.
  std::vector<float> cropped(12, NAN);
  bk::crop2d(s, bk::Margins{1, 0, 0, 2}, x.data(), cropped.data());
  expect_values(cropped, {6, 7, 8, 11, 12, 13, 16, 17, 18, 21, 22, 23}, "crop");
  // Both layouts, and each is the other's adjoint: <pad(x), z> == <x, crop(z)>.
  for (const auto layout : {SpatialLayout::nhwc, SpatialLayout::nchw}) {
    const ImageShape a{2, 3, 4, 3, layout};
    const bk::Margins m{1, 2, 0, 3};
    const ImageShape b{2, 6, 7, 3, layout};
    const auto xa = randoms(7, a.numel()), zb = randoms(8, b.numel());
    std::vector<double> pa(static_cast<std::size_t>(b.numel())), cz(static_cast<std::size_t>(a.numel()));
    bk::zero_pad2d(a, m, xa.data(), pa.data());
    bk::crop2d(b, m, zb.data(), cz.data());
    double l = 0, r = 0;
    for (std::size_t i = 0; i < pa.size(); ++i) l += pa[i] * zb[i];
    for (std::size_t i = 0; i < cz.size(); ++i) r += xa[i] * cz[i];
    EXPECT_NEAR(l, r, 1e-12);
  }
}

// zero_pad2d / crop2d copy whole rows: every element against the definition (y = x inside
// the margins, 0 outside), both layouts, several images and channels, uneven margins.
TEST(PadCrop, RowCopiesMatchTheElementwiseDefinition) {
  for (const auto layout : {SpatialLayout::nhwc, SpatialLayout::nchw}) {
    const ImageShape s{3, 5, 4, 3, layout};
    const bk::Margins m{2, 1, 0, 3};
    const ImageShape p{3, 8, 7, 3, layout};
    auto at = [](const ImageShape& q, std::int64_t n, std::int64_t h, std::int64_t w, std::int64_t c) {
      return static_cast<std::size_t>(q.layout == SpatialLayout::nhwc ? ((n * q.H + h) * q.W + w) * q.C + c
                                                                      : ((n * q.C + c) * q.H + h) * q.W + w);
    };
    const auto x = randoms(11, s.numel());
    std::vector<double> padded(static_cast<std::size_t>(p.numel()), NAN);
    bk::zero_pad2d(s, m, x.data(), padded.data());
    std::vector<double> back(static_cast<std::size_t>(s.numel()), NAN);
    bk::crop2d(p, m, padded.data(), back.data());
    for (std::int64_t n = 0; n < p.N; ++n)
      for (std::int64_t h = 0; h < p.H; ++h)
        for (std::int64_t w = 0; w < p.W; ++w)
          for (std::int64_t c = 0; c < p.C; ++c) {
            const std::int64_t hi = h - m.top, wi = w - m.left;
            const bool inside = hi >= 0 && hi < s.H && wi >= 0 && wi < s.W;
            const double want = inside ? x[at(s, n, hi, wi, c)] : 0.0;
            ASSERT_EQ(padded[at(p, n, h, w, c)], want) << "pad " << n << " " << h << " " << w << " " << c;
          }
    for (std::size_t i = 0; i < back.size(); ++i) ASSERT_EQ(back[i], x[i]) << "crop " << i;
  }
}

TEST(Upsampling, NearestAndBilinear) {
  const ImageShape s{1, 2, 2, 1, SpatialLayout::nhwc};
  const std::vector<float> x = {1, 2, 3, 4};
  std::vector<float> y(16, NAN);
  bk::upsample_nearest2d_forward(s, 2, 2, x.data(), y.data());
  expect_values(y, {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}, "nearest");
  bk::upsample_bilinear2d_forward(s, 2, 2, x.data(), y.data());
  // CNN.md section 2.2, measured.
  expect_values(y,
                {1, 1.25f, 1.75f, 2, 1.5f, 1.75f, 2.25f, 2.5f, 2.5f, 2.75f, 3.25f, 3.5f, 3, 3.25f, 3.75f, 4},
                "bilinear");
  std::vector<float> y6(6, NAN);
  bk::upsample_nearest2d_forward(ImageShape{1, 1, 2, 1, SpatialLayout::nhwc}, 1, 3, x.data(), y6.data());
  expect_values(y6, {1, 1, 1, 2, 2, 2}, "nearest (1, 3)");
  for (const auto layout : {SpatialLayout::nhwc, SpatialLayout::nchw})
    for (const auto& [sh, sw] : std::vector<std::pair<std::int64_t, std::int64_t>>{{2, 2}, {3, 2}, {1, 3}}) {
      const ImageShape a{2, 3, 4, 2, layout};
      const ImageShape o{2, 3 * sh, 4 * sw, 2, layout};
      const auto xa = randoms(9, a.numel()), dy = randoms(10, o.numel());
      std::vector<double> dx(xa.size());
      const std::string what = std::to_string(sh) + "x" + std::to_string(sw);
      bk::upsample_nearest2d_backward(a, sh, sw, dy.data(), dx.data());
      expect_fd_gradient(
          xa, dy,
          [&](const std::vector<double>& xi) {
            std::vector<double> out(static_cast<std::size_t>(o.numel()));
            bk::upsample_nearest2d_forward(a, sh, sw, xi.data(), out.data());
            return out;
          },
          dx, "nearest " + what);
      bk::upsample_bilinear2d_backward(a, sh, sw, dy.data(), dx.data());
      expect_fd_gradient(
          xa, dy,
          [&](const std::vector<double>& xi) {
            std::vector<double> out(static_cast<std::size_t>(o.numel()));
            bk::upsample_bilinear2d_forward(a, sh, sw, xi.data(), out.data());
            return out;
          },
          dx, "bilinear " + what);
    }
}
