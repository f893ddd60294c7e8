// Tests of the stateless convolution kernels (bnorm/kernels/conv.hpp): the oneDNN path
// against the permanent reference over many shapes (strides, dilation, odd/even sizes,
// same/valid padding, groups and depthwise, both layouts, batch 0, 1x1 kernels), assigned
// vs accumulated outputs with junk-filled buffers, the depthwise kernel layout against
// direct depthwise loops, finite-difference gradients of the double reference, the
// "same" padding table and worked example of CNN.md section 1.5, and the argument checks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/kernels/conv.hpp"

namespace bk = bnorm::kernels;
using bk::Conv2dDesc;
using bk::ConvLayout;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

template <typename T = float>
std::vector<T> uniforms(std::int64_t n, std::uint32_t seed) {
  std::mt19937 engine(seed);
  std::vector<T> v(static_cast<std::size_t>(n));
  for (T& e : v) e = static_cast<T>((static_cast<double>(engine()) + 0.5) / 4294967296.0 * 2.0 - 1.0);
  return v;
}

// |got - want| <= atol + rtol * |want| elementwise, every value finite.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what,
                  double atol = 1e-5, double rtol = 1e-5) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << what << "[" << i << "] = " << got[i];
    ASSERT_NEAR(got[i], want[i], atol + rtol * std::fabs(want[i])) << what << "[" << i << "]";
  }
}

std::string label(const Conv2dDesc& d) {
  return "N" + std::to_string(d.N) + " " + std::to_string(d.H) + "x" + std::to_string(d.W) + " Cin" +
         std::to_string(d.Cin) + " Cout" + std::to_string(d.Cout) + " k" + std::to_string(d.kh) + "x" +
         std::to_string(d.kw) + " s" + std::to_string(d.stride_h) + "," + std::to_string(d.stride_w) + " d" +
         std::to_string(d.dilation_h) + "," + std::to_string(d.dilation_w) + " pad" +
         std::to_string(d.pad_top) + std::to_string(d.pad_left) + std::to_string(d.pad_bottom) +
         std::to_string(d.pad_right) + " g" + std::to_string(d.groups) +
         (d.layout == ConvLayout::nchw ? " nchw" : " nhwc");
}

// Sets the pads of `d` as Keras padding="same" does.
Conv2dDesc same(Conv2dDesc d) {
  const auto h = bk::same_padding(d.H, d.kh, d.stride_h, d.dilation_h);
  const auto w = bk::same_padding(d.W, d.kw, d.stride_w, d.dilation_w);
  d.pad_top = h.before;
  d.pad_bottom = h.after;
  d.pad_left = w.before;
  d.pad_right = w.after;
  return d;
}

// The shapes every fast-vs-reference test runs, each in both layouts.
std::vector<Conv2dDesc> shapes() {
  std::vector<Conv2dDesc> base = {
      {.N = 2, .H = 5, .W = 5, .Cin = 3, .Cout = 4, .kh = 3, .kw = 3},
      same({.N = 2, .H = 5, .W = 5, .Cin = 3, .Cout = 4, .kh = 3, .kw = 3}),
      same({.N = 2, .H = 6, .W = 6, .Cin = 3, .Cout = 5, .kh = 3, .kw = 3, .stride_h = 2, .stride_w = 2}),
      same({.N = 1, .H = 7, .W = 8, .Cin = 4, .Cout = 4, .kh = 4, .kw = 2, .stride_h = 2, .stride_w = 3}),
      {.N = 3, .H = 8, .W = 7, .Cin = 5, .Cout = 6, .kh = 3, .kw = 2, .stride_h = 2, .stride_w = 2},
      {.N = 2, .H = 9, .W = 9, .Cin = 2, .Cout = 3, .kh = 3, .kw = 3, .dilation_h = 2, .dilation_w = 3},
      same({.N = 2, .H = 5, .W = 5, .Cin = 2, .Cout = 3, .kh = 3, .kw = 3, .dilation_h = 2, .dilation_w = 2}),
      {.N = 4, .H = 4, .W = 6, .Cin = 8, .Cout = 16, .kh = 1, .kw = 1},  // pointwise
      {.N = 2, .H = 6, .W = 6, .Cin = 8, .Cout = 4, .kh = 1, .kw = 1, .stride_h = 2, .stride_w = 2},
      same({.N = 2, .H = 6, .W = 5, .Cin = 4, .Cout = 6, .kh = 3, .kw = 3, .groups = 2}),
      {.N = 2, .H = 5, .W = 5, .Cin = 6, .Cout = 9, .kh = 2, .kw = 3, .groups = 3},
      // depthwise: groups == Cin, Cout = Cin * dm
      same({.N = 2, .H = 7, .W = 7, .Cin = 4, .Cout = 4, .kh = 3, .kw = 3, .groups = 4}),
      same({.N = 2,
            .H = 8,
            .W = 8,
            .Cin = 3,
            .Cout = 6,
            .kh = 3,
            .kw = 3,
            .stride_h = 2,
            .stride_w = 2,
            .groups = 3}),
      same({.N = 1,
            .H = 6,
            .W = 6,
            .Cin = 16,
            .Cout = 16,
            .kh = 5,
            .kw = 5,
            .stride_h = 2,
            .stride_w = 2,
            .groups = 16}),
      // Conv1D: H == 1
      same({.N = 3, .H = 1, .W = 10, .Cin = 3, .Cout = 5, .kh = 1, .kw = 3}),
      {.N = 2,
       .H = 1,
       .W = 9,
       .Cin = 2,
       .Cout = 2,
       .kh = 1,
       .kw = 3,
       .dilation_w = 2,
       .pad_left = 4},  // causal
      // asymmetric explicit pads, pad larger than the kernel
      {.N = 1,
       .H = 4,
       .W = 5,
       .Cin = 2,
       .Cout = 3,
       .kh = 2,
       .kw = 2,
       .pad_top = 3,
       .pad_left = 0,
       .pad_bottom = 1,
       .pad_right = 2},
      // kernel as large as the padded input: a 1x1 output
      {.N = 2, .H = 3, .W = 3, .Cin = 2, .Cout = 2, .kh = 3, .kw = 3},
      // batch 0
      same({.N = 0, .H = 5, .W = 5, .Cin = 3, .Cout = 4, .kh = 3, .kw = 3}),
      // a realistic size (MobileNet-like block)
      same({.N = 2, .H = 16, .W = 16, .Cin = 32, .Cout = 32, .kh = 3, .kw = 3, .groups = 32}),
      same({.N = 2, .H = 16, .W = 16, .Cin = 16, .Cout = 24, .kh = 3, .kw = 3, .stride_h = 2, .stride_w = 2}),
  };
  std::vector<Conv2dDesc> all;
  for (Conv2dDesc d : base) {
    for (ConvLayout layout : {ConvLayout::nhwc, ConvLayout::nchw}) {
      d.layout = layout;
      all.push_back(d);
    }
  }
  return all;
}

}  // namespace

TEST(ConvKernels, ShapesAreValid) {
  for (const Conv2dDesc& d : shapes()) EXPECT_NO_THROW(bk::conv2d_check(d)) << label(d);
}

TEST(ConvKernels, FastMatchesReferenceForward) {
  for (const Conv2dDesc& d : shapes()) {
    SCOPED_TRACE(label(d));
    const auto x = uniforms(d.x_size(), 1), k = uniforms(d.kernel_size(), 2), b = uniforms(d.Cout, 3);
    for (bool with_bias : {true, false}) {
      std::vector<float> want(static_cast<std::size_t>(d.y_size())), got(want.size(), kNaN);
      bk::reference::conv2d_forward(d, x.data(), k.data(), with_bias ? b.data() : nullptr, want.data());
      bk::conv2d_forward(d, x.data(), k.data(), with_bias ? b.data() : nullptr, got.data());
      expect_close(got, want, with_bias ? "y" : "y (no bias)");
    }
  }
}

TEST(ConvKernels, FastMatchesReferenceBackwardData) {
  for (const Conv2dDesc& d : shapes()) {
    SCOPED_TRACE(label(d));
    const auto dy = uniforms(d.y_size(), 4), k = uniforms(d.kernel_size(), 5);
    std::vector<float> want(static_cast<std::size_t>(d.x_size()), kNaN), got(want.size(), kNaN);
    bk::reference::conv2d_backward_data(d, dy.data(), k.data(), want.data());
    bk::conv2d_backward_data(d, dy.data(), k.data(), got.data());
    expect_close(got, want, "dx");
  }
}

TEST(ConvKernels, FastMatchesReferenceBackwardWeightsAndAccumulates) {
  for (const Conv2dDesc& d : shapes()) {
    SCOPED_TRACE(label(d));
    const auto x = uniforms(d.x_size(), 6), dy = uniforms(d.y_size(), 7);
    const auto dk0 = uniforms(d.kernel_size(), 8), db0 = uniforms(d.Cout, 9);
    std::vector<float> dk_want = dk0, db_want = db0, dk_got = dk0, db_got = db0;
    bk::reference::conv2d_backward_weights(d, x.data(), dy.data(), dk_want.data(), db_want.data());
    bk::conv2d_backward_weights(d, x.data(), dy.data(), dk_got.data(), db_got.data());
    expect_close(dk_got, dk_want, "dkernel", 1e-4, 1e-5);
    expect_close(db_got, db_want, "dbias", 1e-4, 1e-5);
    if (d.N == 0) {
      EXPECT_EQ(dk_got, dk0);
      EXPECT_EQ(db_got, db0);
    }
    // Without dbias, and without dkernel: the other is unchanged by the nulls.
    std::vector<float> dk_only = dk0;
    bk::conv2d_backward_weights(d, x.data(), dy.data(), dk_only.data(), nullptr);
    expect_close(dk_only, dk_want, "dkernel (no dbias)", 1e-4, 1e-5);
    std::vector<float> db_only = db0;
    bk::conv2d_backward_weights(d, x.data(), dy.data(), nullptr, db_only.data());
    expect_close(db_only, db_want, "dbias (no dkernel)", 1e-4, 1e-5);
  }
}

TEST(ConvKernels, ForcedReferenceIsTheReference) {
  Conv2dDesc d = same({.N = 2, .H = 5, .W = 4, .Cin = 3, .Cout = 2, .kh = 3, .kw = 3});
  const auto x = uniforms(d.x_size(), 1), k = uniforms(d.kernel_size(), 2);
  std::vector<float> want(static_cast<std::size_t>(d.y_size())), got(want.size(), kNaN);
  bk::reference::conv2d_forward<float>(d, x.data(), k.data(), nullptr, want.data());
  bk::conv2d_forward(d, x.data(), k.data(), nullptr, got.data(), bk::ConvImpl::reference);
  EXPECT_EQ(got, want);
}

TEST(ConvKernels, ExplainNamesTheImplementation) {
  const Conv2dDesc d = same({.N = 2, .H = 8, .W = 8, .Cin = 4, .Cout = 8, .kh = 3, .kw = 3});
  for (bk::ConvOp op : {bk::ConvOp::forward, bk::ConvOp::backward_data, bk::ConvOp::backward_weights}) {
    const std::string why = bk::conv2d_explain(d, op);
    EXPECT_EQ(why.rfind("onednn (", 0), 0u) << why;
  }
  EXPECT_EQ(bk::conv2d_explain(Conv2dDesc{.N = 0, .H = 3, .W = 3}, bk::ConvOp::forward).rfind("none", 0), 0u);
}

// Keras DepthwiseConv2D arithmetic written out directly: kernel (kh, kw, Cin, dm), output
// channel c*dm + m reads input channel c only. The grouped kernels take the same buffer.
TEST(ConvKernels, DepthwiseKernelLayoutIsTheGroupedLayout) {
  const std::int64_t N = 2, H = 5, W = 6, C = 3, dm = 2, kh = 3, kw = 2;
  const auto shape = bk::depthwise_kernel_shape(kh, kw, C, dm);
  EXPECT_EQ(shape.cin_per_group, 1);
  EXPECT_EQ(shape.cout, C * dm);
  const Conv2dDesc d{.N = N, .H = H, .W = W, .Cin = C, .Cout = C * dm, .kh = kh, .kw = kw, .groups = C};
  const auto x = uniforms<double>(d.x_size(), 11), k = uniforms<double>(kh * kw * C * dm, 12);
  std::vector<double> direct(static_cast<std::size_t>(d.y_size()));
  const std::int64_t OH = d.out_h(), OW = d.out_w();
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t oh = 0; oh < OH; ++oh)
      for (std::int64_t ow = 0; ow < OW; ++ow)
        for (std::int64_t c = 0; c < C; ++c)
          for (std::int64_t m = 0; m < dm; ++m) {
            double s = 0;
            for (std::int64_t i = 0; i < kh; ++i)
              for (std::int64_t j = 0; j < kw; ++j)
                s += x[static_cast<std::size_t>(((n * H + oh + i) * W + ow + j) * C + c)] *
                     k[static_cast<std::size_t>(((i * kw + j) * C + c) * dm + m)];
            direct[static_cast<std::size_t>(((n * OH + oh) * OW + ow) * C * dm + c * dm + m)] = s;
          }
  std::vector<double> grouped(direct.size());
  bk::reference::conv2d_forward(d, x.data(), k.data(), static_cast<const double*>(nullptr), grouped.data());
  for (std::size_t i = 0; i < direct.size(); ++i) EXPECT_NEAR(grouped[i], direct[i], 1e-12) << i;
  // The fast path too.
  std::vector<float> xf(x.begin(), x.end()), kf(k.begin(), k.end()), yf(direct.size(), kNaN);
  bk::conv2d_forward(d, xf.data(), kf.data(), nullptr, yf.data());
  for (std::size_t i = 0; i < direct.size(); ++i) EXPECT_NEAR(yf[i], direct[i], 1e-5) << i;
}

// CNN.md section 1.3, measured in Keras.
TEST(ConvKernels, KerasMeasuredGroupsAndDepthwiseOrder) {
  {  // kernel (1,1,2,4), groups=2, kernel[0,0,0,:] = 1: input [1,10,100,1000] -> [1,1,100,100]
    const Conv2dDesc d{.N = 1, .H = 1, .W = 1, .Cin = 4, .Cout = 4, .groups = 2};
    const std::vector<float> x{1, 10, 100, 1000}, k{1, 1, 1, 1, 0, 0, 0, 0};
    std::vector<float> y(4, kNaN);
    bk::conv2d_forward(d, x.data(), k.data(), nullptr, y.data());
    EXPECT_EQ(y, (std::vector<float>{1, 1, 100, 100}));
  }
  {  // depthwise: channels [1, 2], dm 3, kernel[0,0,c,m] = [[1,10,100],[1000,1e4,1e5]]
    const Conv2dDesc d{.N = 1, .H = 1, .W = 1, .Cin = 2, .Cout = 6, .groups = 2};
    const std::vector<float> x{1, 2}, k{1, 10, 100, 1000, 1e4f, 1e5f};
    std::vector<float> y(6, kNaN);
    bk::conv2d_forward(d, x.data(), k.data(), nullptr, y.data());
    EXPECT_EQ(y, (std::vector<float>{1, 10, 100, 2000, 20000, 200000}));
  }
}

// CNN.md section 1.5: the "same" split table, every row.
TEST(ConvKernels, SamePaddingTable) {
  struct Row {
    std::int64_t n, k, s, d, out, total, before, after;
  };
  const Row rows[] = {{4, 2, 1, 1, 4, 1, 0, 1}, {4, 2, 2, 1, 2, 0, 0, 0}, {4, 3, 1, 2, 4, 4, 2, 2},
                      {4, 3, 2, 1, 2, 1, 0, 1}, {4, 4, 1, 1, 4, 3, 1, 2}, {4, 4, 2, 1, 2, 2, 1, 1},
                      {5, 2, 2, 1, 3, 1, 0, 1}, {5, 3, 2, 1, 3, 2, 1, 1}, {5, 4, 2, 1, 3, 3, 1, 2},
                      {6, 3, 2, 1, 3, 1, 0, 1}, {6, 4, 2, 1, 3, 2, 1, 1}, {7, 3, 2, 1, 4, 2, 1, 1},
                      {7, 4, 2, 1, 4, 3, 1, 2}};
  for (const Row& r : rows) {
    const auto p = bk::same_padding(r.n, r.k, r.s, r.d);
    EXPECT_EQ(p.out, r.out) << r.n << " " << r.k << " " << r.s << " " << r.d;
    EXPECT_EQ(p.before + p.after, r.total);
    EXPECT_EQ(p.before, r.before);
    EXPECT_EQ(p.after, r.after);
  }
  EXPECT_EQ(bk::same_padding(224, 7, 2, 1).out, 112);
  EXPECT_EQ(bk::valid_output_size(5, 3, 2, 1), 2);
  EXPECT_EQ(bk::valid_output_size(9, 3, 1, 2), 5);
  EXPECT_EQ(bk::valid_output_size(2, 3, 1, 1), 0);
}

// CNN.md section 1.5 worked example: 5x5 input 1..25, kernel [[1,10],[100,1000]].
TEST(ConvKernels, KerasWorkedExampleSamePadding) {
  std::vector<float> x(25);
  for (int i = 0; i < 25; ++i) x[static_cast<std::size_t>(i)] = static_cast<float>(i + 1);
  const std::vector<float> k{1, 10, 100, 1000};
  for (ConvLayout layout : {ConvLayout::nhwc, ConvLayout::nchw}) {  // one channel: same buffers
    const Conv2dDesc s2 =
        same({.N = 1, .H = 5, .W = 5, .kh = 2, .kw = 2, .stride_h = 2, .stride_w = 2, .layout = layout});
    EXPECT_EQ(s2.pad_top, 0);
    EXPECT_EQ(s2.pad_bottom, 1);
    std::vector<float> y(9, kNaN);
    bk::conv2d_forward(s2, x.data(), k.data(), nullptr, y.data());
    EXPECT_EQ(y, (std::vector<float>{7621, 9843, 1005, 18731, 20953, 2015, 241, 263, 25}));
    const Conv2dDesc s1 = same({.N = 1, .H = 5, .W = 5, .kh = 2, .kw = 2, .layout = layout});
    std::vector<float> y1(25, kNaN);
    bk::conv2d_forward(s1, x.data(), k.data(), nullptr, y1.data());
    EXPECT_EQ(std::vector<float>(y1.begin(), y1.begin() + 5),
              (std::vector<float>{7621, 8732, 9843, 10954, 1005}));
    EXPECT_EQ(std::vector<float>(y1.end() - 5, y1.end()), (std::vector<float>{241, 252, 263, 274, 25}));
  }
  // Centre-tap 3x3, stride 2, same: centres at rows/cols 1,3,5 on 6x6 and 0,2,4 on 5x5.
  const std::vector<float> centre{0, 0, 0, 0, 1, 0, 0, 0, 0};
  for (std::int64_t n : {6, 5}) {
    std::vector<float> xi(static_cast<std::size_t>(n * n));
    for (std::size_t i = 0; i < xi.size(); ++i) xi[i] = static_cast<float>(i + 1);
    const Conv2dDesc d = same({.N = 1, .H = n, .W = n, .kh = 3, .kw = 3, .stride_h = 2, .stride_w = 2});
    std::vector<float> y(9, kNaN);
    bk::conv2d_forward(d, xi.data(), centre.data(), nullptr, y.data());
    const std::vector<float> want = n == 6 ? std::vector<float>{8, 10, 12, 20, 22, 24, 32, 34, 36}
                                           : std::vector<float>{1, 3, 5, 11, 13, 15, 21, 23, 25};
    EXPECT_EQ(y, want) << n;
  }
  // Dilation 2, 3x3 ones, same on 5x5: pad 2 each side; centre output 117.
  const Conv2dDesc dil = same({.N = 1, .H = 5, .W = 5, .kh = 3, .kw = 3, .dilation_h = 2, .dilation_w = 2});
  EXPECT_EQ(dil.pad_top, 2);
  EXPECT_EQ(dil.pad_right, 2);
  const std::vector<float> ones(9, 1.0f);
  std::vector<float> y(25, kNaN);
  bk::conv2d_forward(dil, x.data(), ones.data(), nullptr, y.data());
  EXPECT_EQ(y[12], 117.0f);
}

// The double reference's gradients against central differences of its forward.
TEST(ConvKernels, ReferenceGradientsMatchFiniteDifferences) {
  const Conv2dDesc descs[] = {
      same({.N = 2,
            .H = 5,
            .W = 4,
            .Cin = 2,
            .Cout = 4,
            .kh = 3,
            .kw = 2,
            .stride_h = 2,
            .groups = 2,
            .layout = ConvLayout::nchw}),
      {.N = 1,
       .H = 6,
       .W = 6,
       .Cin = 3,
       .Cout = 2,
       .kh = 2,
       .kw = 3,
       .stride_w = 2,
       .dilation_h = 2,
       .pad_top = 1,
       .pad_right = 2},
  };
  for (const Conv2dDesc& d : descs) {
    SCOPED_TRACE(label(d));
    auto x = uniforms<double>(d.x_size(), 21), k = uniforms<double>(d.kernel_size(), 22);
    auto b = uniforms<double>(d.Cout, 23);
    const auto dy = uniforms<double>(d.y_size(), 24);
    auto loss = [&] {
      std::vector<double> y(static_cast<std::size_t>(d.y_size()));
      bk::reference::conv2d_forward(d, x.data(), k.data(), b.data(), y.data());
      double s = 0;
      for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * dy[i];
      return s;
    };
    std::vector<double> dx(x.size()), dk(k.size(), 0.0), db(b.size(), 0.0);
    bk::reference::conv2d_backward_data(d, dy.data(), k.data(), dx.data());
    bk::reference::conv2d_backward_weights(d, x.data(), dy.data(), dk.data(), db.data());
    const double h = 1e-6;
    auto check = [&](std::vector<double>& v, const std::vector<double>& g, const char* what) {
      for (std::size_t i = 0; i < v.size(); ++i) {
        const double keep = v[i];
        v[i] = keep + h;
        const double lp = loss();
        v[i] = keep - h;
        const double lm = loss();
        v[i] = keep;
        EXPECT_NEAR(g[i], (lp - lm) / (2 * h), 1e-7) << what << "[" << i << "]";
      }
    };
    check(x, dx, "dx");
    check(k, dk, "dkernel");
    check(b, db, "dbias");
  }
}

TEST(ConvKernels, CheckRejectsBadDescriptions) {
  const Conv2dDesc ok{.N = 1, .H = 5, .W = 5, .Cin = 4, .Cout = 6, .kh = 3, .kw = 3, .groups = 2};
  EXPECT_NO_THROW(bk::conv2d_check(ok));
  auto throws_argument = [](Conv2dDesc d, const std::string& argument) {
    try {
      bk::conv2d_check(d, "Conv2D 'c'");
      ADD_FAILURE() << "no error for " << argument;
    } catch (const bnorm::ShapeError& e) {
      ADD_FAILURE() << "ShapeError for " << argument << ": " << e.what();
    } catch (const bnorm::ArgumentError& e) {
      EXPECT_EQ(e.argument(), argument) << e.what();
      EXPECT_EQ(e.where(), "Conv2D 'c'");
    }
  };
  Conv2dDesc d = ok;
  d.groups = 3;
  throws_argument(d, "groups");  // Cin 4
  d = ok;
  d.Cout = 5;
  throws_argument(d, "groups");
  d = ok;
  d.stride_w = 0;
  throws_argument(d, "stride_w");
  d = ok;
  d.dilation_h = 0;
  throws_argument(d, "dilation_h");
  d = ok;
  d.pad_left = -1;
  throws_argument(d, "pad_left");
  d = ok;
  d.N = -1;
  throws_argument(d, "N");
  d = ok;
  d.kh = 6;
  EXPECT_THROW(bk::conv2d_check(d), bnorm::ShapeError);
  d.pad_bottom = 1;
  EXPECT_NO_THROW(bk::conv2d_check(d));  // 5 + 1 fits 6
  d = ok;
  d.dilation_w = 3;  // (3-1)*3 + 1 = 7 > 5
  try {
    bk::conv2d_check(d);
    ADD_FAILURE() << "no error";
  } catch (const bnorm::ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("padded input"), std::string::npos) << e.what();
  }
}
