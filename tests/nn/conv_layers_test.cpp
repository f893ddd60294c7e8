// Tests of the convolution layers (bnorm/nn/conv.hpp): outputs against the reference
// kernels, backward (float, oneDNN) against finite differences of the reference forward
// in double, Keras's measured numbers (CNN.md sections 1.3 and 1.5), output shapes and
// "same" splits, weight names/shapes/order, channels_first as the transpose of
// channels_last, accumulation of gradients, empty batches, and errors that leave the
// layer unchanged.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/kernels/activation.hpp"
#include "bnorm/kernels/conv.hpp"
#include "bnorm/nn/conv.hpp"
#include "test_util.hpp"

using bnorm::Shape;
using bnorm::Tensor;
using bnorm::TensorD;
using bnorm::test::random_tensor;
namespace nn = bnorm::nn;
namespace bk = bnorm::kernels;

namespace {

Tensor forward(nn::Layer& layer, const Tensor& x, std::unique_ptr<nn::LayerContext>* ctx = nullptr) {
  return layer.forward(x, true, ctx, nullptr);
}

void randomize_weights(nn::Layer& layer, std::uint32_t seed) {
  for (nn::Variable* v : layer.weights()) v->value = random_tensor(v->value.shape(), seed++, 0.5f);
}

std::vector<std::string> names(nn::Layer& layer) {
  std::vector<std::string> n;
  for (nn::Variable* v : layer.weights()) n.push_back(v->name);
  return n;
}

std::vector<Shape> shapes(nn::Layer& layer) {
  std::vector<Shape> s;
  for (nn::Variable* v : layer.weights()) s.push_back(v->value.shape());
  return s;
}

// The layer's forward computed in double with the reference kernels, from its own
// description and weights (a SeparableConv2D chains its two steps).
TensorD reference_forward(nn::ConvLayerBase& layer, const TensorD& x, const std::vector<TensorD>& w) {
  const bk::Conv2dDesc d = layer.describe(x.shape());
  const Shape out_shape = layer.compute_output_shape(x.shape());
  TensorD z(out_shape);
  const bool separable = layer.class_name() == "SeparableConv2D";
  const bool has_bias = layer.bias() != nullptr;
  const double* bias = has_bias ? w.back().data() : nullptr;
  if (separable) {
    bk::Conv2dDesc p = d;
    p.H = d.out_h();
    p.W = d.out_w();
    p.Cin = d.Cout;
    p.Cout = w[1].dim(3);
    p.kh = p.kw = p.stride_h = p.stride_w = p.dilation_h = p.dilation_w = 1;
    p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = 0;
    p.groups = 1;
    std::vector<double> mid(static_cast<std::size_t>(d.y_size()));
    bk::reference::conv2d_forward<double>(d, x.data(), w[0].data(), nullptr, mid.data());
    bk::reference::conv2d_forward<double>(p, mid.data(), w[1].data(), bias, z.data());
  } else {
    bk::reference::conv2d_forward<double>(d, x.data(), w[0].data(), bias, z.data());
  }
  const std::int64_t cols = out_shape[out_shape.rank() - 1];
  TensorD y(out_shape);
  bk::reference::activation_forward<double>(layer.activation(), z.data(), z.numel() / cols, cols, y.data());
  return y;
}

// Backward of the layer (float, the fast kernels) against central differences of
// <reference_forward(x, w), dy> in double, for dx and every weight.
void check_gradients(nn::ConvLayerBase& layer, const Shape& x_shape, std::uint32_t seed) {
  SCOPED_TRACE(layer.name());
  const Tensor x = random_tensor(x_shape, seed);
  std::unique_ptr<nn::LayerContext> ctx;
  const Tensor y = forward(layer, x, &ctx);
  randomize_weights(layer, seed + 10);
  const Tensor y2 = forward(layer, x, &ctx);
  const Tensor dy = random_tensor(y2.shape(), seed + 1);
  nn::Gradients grads;
  const Tensor dx = layer.backward(*ctx, dy, grads);

  TensorD xd = x.cast<double>();
  std::vector<TensorD> wd;
  for (nn::Variable* v : layer.weights()) wd.push_back(v->value.cast<double>());
  const TensorD dyd = dy.cast<double>();
  // Layer output vs the double reference.
  const TensorD yref = reference_forward(layer, xd, wd);
  for (std::int64_t i = 0; i < y2.numel(); ++i)
    ASSERT_NEAR(y2[i], yref[i], 1e-5 * (1 + std::fabs(yref[i]))) << "y " << i;
  auto loss = [&] {
    const TensorD yy = reference_forward(layer, xd, wd);
    double s = 0;
    for (std::int64_t i = 0; i < yy.numel(); ++i) s += yy[i] * dyd[i];
    return s;
  };
  const double h = 1e-6;
  auto fd = [&](double& v) {
    const double keep = v;
    v = keep + h;
    const double lp = loss();
    v = keep - h;
    const double lm = loss();
    v = keep;
    return (lp - lm) / (2 * h);
  };
  for (std::int64_t i = 0; i < xd.numel(); ++i) {
    const double want = fd(xd[i]);
    EXPECT_NEAR(dx[i], want, 1e-4 * (1 + std::fabs(want))) << "dx[" << i << "]";
  }
  const auto vars = layer.weights();
  for (std::size_t k = 0; k < vars.size(); ++k) {
    const Tensor& g = grads.at(vars[k]);
    ASSERT_EQ(g.shape(), vars[k]->value.shape());
    for (std::int64_t i = 0; i < g.numel(); ++i) {
      const double want = fd(wd[k][i]);
      EXPECT_NEAR(g[i], want, 1e-4 * (1 + std::fabs(want))) << vars[k]->name << "[" << i << "]";
    }
  }
  // backward_variables gives the same variable gradients; a second backward accumulates.
  nn::Gradients only;
  layer.backward_variables(*ctx, dy, only);
  layer.backward(*ctx, dy, grads);
  for (nn::Variable* v : vars) {
    for (std::int64_t i = 0; i < only.at(v).numel(); ++i) {
      EXPECT_FLOAT_EQ(grads.at(v)[i], 2 * only.at(v)[i]) << v->name << "[" << i << "]";
    }
  }
  (void)y;
}

}  // namespace

TEST(ConvLayers, GradientsMatchFiniteDifferencesOfTheDoubleReference) {
  {
    nn::Conv2D c(4, {3, 3}, {.padding = nn::Padding::same, .activation = "tanh", .name = "g_conv"});
    check_gradients(c, Shape{2, 5, 6, 3}, 1);
  }
  {
    nn::Conv2D c(
        4, {3, 2},
        {.strides = {2, 1}, .data_format = nn::DataFormat::channels_first, .groups = 2, .name = "g_grouped"});
    check_gradients(c, Shape{2, 4, 7, 5}, 2);
  }
  {
    nn::Conv2D c(3, {3, 3},
                 {.padding = nn::Padding::same,
                  .dilation_rate = {2, 2},
                  .activation = "relu",
                  .use_bias = false,
                  .name = "g_dilated"});
    check_gradients(c, Shape{1, 6, 5, 2}, 3);
  }
  {
    nn::DepthwiseConv2D c(
        {3, 3},
        {.depth_multiplier = 2, .strides = {2, 2}, .padding = nn::Padding::same, .name = "g_depthwise"});
    check_gradients(c, Shape{2, 6, 6, 3}, 4);
  }
  {
    nn::DepthwiseConv2D c({3, 3}, {.strides = {2, 2},
                                   .padding = nn::Padding::same,
                                   .data_format = nn::DataFormat::channels_first,
                                   .dilation_rate = {2, 2},
                                   .activation = "sigmoid",
                                   .name = "g_depthwise_dilated"});
    check_gradients(c, Shape{1, 2, 7, 7}, 5);
  }
  {
    nn::SeparableConv2D c(5, {3, 3},
                          {.depth_multiplier = 2, .padding = nn::Padding::same, .name = "g_separable"});
    check_gradients(c, Shape{2, 5, 5, 3}, 6);
  }
  {
    nn::SeparableConv2D c(2, {2, 3},
                          {.strides = {1, 2},
                           .data_format = nn::DataFormat::channels_first,
                           .use_bias = false,
                           .name = "g_separable_nb"});
    check_gradients(c, Shape{1, 3, 5, 6}, 7);
  }
  {
    nn::Conv1D c(3, 3, {.padding = nn::Padding::causal, .dilation_rate = 2, .name = "g_causal"});
    check_gradients(c, Shape{2, 9, 2}, 8);
  }
  {
    nn::Conv1D c(4, 2,
                 {.strides = 2,
                  .padding = nn::Padding::same,
                  .data_format = nn::DataFormat::channels_first,
                  .groups = 2,
                  .activation = "sigmoid",
                  .name = "g_conv1d"});
    check_gradients(c, Shape{2, 4, 7}, 9);
  }
}

// CNN.md section 1.5 worked example through the layer: 5x5 input 1..25, kernel
// [[1, 10], [100, 1000]], stride 2, same.
TEST(ConvLayers, KerasWorkedExampleSame) {
  Tensor x(Shape{1, 5, 5, 1});
  for (int i = 0; i < 25; ++i) x[i] = static_cast<float>(i + 1);
  nn::Conv2D c(1, {2, 2}, {.strides = {2, 2}, .padding = nn::Padding::same, .use_bias = false});
  c.build(x.shape());
  c.set_weights({Tensor(Shape{2, 2, 1, 1}, {1, 10, 100, 1000})});
  const Tensor y = forward(c, x);
  EXPECT_EQ(y.shape(), (Shape{1, 3, 3, 1}));
  EXPECT_EQ(y.vector(), (std::vector<float>{7621, 9843, 1005, 18731, 20953, 2015, 241, 263, 25}));
  const auto d = c.describe(x.shape());
  EXPECT_EQ(d.pad_top, 0);
  EXPECT_EQ(d.pad_left, 0);
  EXPECT_EQ(d.pad_bottom, 1);
  EXPECT_EQ(d.pad_right, 1);
}

// CNN.md section 1.3: Conv1D same / causal / valid / causal with dilation 2.
TEST(ConvLayers, Conv1DPaddingsAsKeras) {
  const Tensor x(Shape{1, 5, 1}, {1, 2, 3, 4, 5});
  struct Case {
    nn::Padding padding;
    std::int64_t dilation;
    std::vector<float> want;
  };
  const Case cases[] = {{nn::Padding::same, 1, {21, 32, 43, 54, 5}},
                        {nn::Padding::causal, 1, {10, 21, 32, 43, 54}},
                        {nn::Padding::valid, 1, {21, 32, 43, 54}},
                        {nn::Padding::causal, 2, {10, 20, 31, 42, 53}}};
  for (const Case& k : cases) {
    nn::Conv1D c(1, 2, {.padding = k.padding, .dilation_rate = k.dilation, .use_bias = false});
    c.build(x.shape());
    c.set_weights({Tensor(Shape{2, 1, 1}, {1, 10})});
    const Tensor y = forward(c, x);
    EXPECT_EQ(y.vector(), k.want) << nn::padding_name(k.padding) << " dilation " << k.dilation;
    EXPECT_EQ(c.compute_output_shape(Shape{-1, 5, 1}),
              (Shape{-1, static_cast<std::int64_t>(k.want.size()), 1}));
  }
}

// CNN.md section 1.3: depthwise output order c*dm + m, and groups.
TEST(ConvLayers, KerasMeasuredDepthwiseAndGroups) {
  nn::DepthwiseConv2D dw({1, 1}, {.depth_multiplier = 3, .use_bias = false});
  const Tensor x(Shape{1, 1, 1, 2}, {1, 2});
  dw.build(x.shape());
  dw.set_weights({Tensor(Shape{1, 1, 2, 3}, {1, 10, 100, 1000, 1e4f, 1e5f})});
  EXPECT_EQ(forward(dw, x).vector(), (std::vector<float>{1, 10, 100, 2000, 20000, 200000}));

  nn::Conv2D g(4, {1, 1}, {.groups = 2, .use_bias = false});
  const Tensor xg(Shape{1, 1, 1, 4}, {1, 10, 100, 1000});
  g.build(xg.shape());
  g.set_weights({Tensor(Shape{1, 1, 2, 4}, {1, 1, 1, 1, 0, 0, 0, 0})});
  EXPECT_EQ(forward(g, xg).vector(), (std::vector<float>{1, 1, 100, 100}));
}

TEST(ConvLayers, SeparableIsDepthwiseThenPointwise) {
  const Tensor x = random_tensor(Shape{2, 6, 6, 3}, 30);
  nn::SeparableConv2D sep(4, {3, 3},
                          {.depth_multiplier = 2, .strides = {2, 2}, .padding = nn::Padding::same});
  forward(sep, x);
  randomize_weights(sep, 31);
  nn::DepthwiseConv2D dw(
      {3, 3}, {.depth_multiplier = 2, .strides = {2, 2}, .padding = nn::Padding::same, .use_bias = false});
  nn::Conv2D pw(4, {1, 1});
  const auto w = sep.get_weights();
  dw.build(x.shape());
  dw.set_weights({w[0]});
  pw.build(Shape{-1, 3, 3, 6});
  pw.set_weights({w[1], w[2]});
  const Tensor want = forward(pw, forward(dw, x));
  const Tensor got = forward(sep, x);
  ASSERT_EQ(got.shape(), want.shape());
  for (std::int64_t i = 0; i < got.numel(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << i;
}

TEST(ConvLayers, ChannelsFirstIsTheTransposeOfChannelsLast) {
  const Tensor x = random_tensor(Shape{2, 7, 6, 4}, 40);
  const Tensor x_first = bnorm::permute(x, {0, 3, 1, 2});
  auto pair = [&](auto make) {
    auto last = make(nn::DataFormat::channels_last);
    auto first = make(nn::DataFormat::channels_first);
    forward(*last, x);
    randomize_weights(*last, 41);
    first->build(x_first.shape());
    first->set_weights(last->get_weights());
    const Tensor want = bnorm::permute(forward(*last, x), {0, 3, 1, 2});
    const Tensor got = forward(*first, x_first);
    ASSERT_EQ(got.shape(), want.shape()) << last->class_name();
    for (std::int64_t i = 0; i < got.numel(); ++i)
      EXPECT_NEAR(got[i], want[i], 1e-5) << last->class_name() << " " << i;
  };
  pair([](nn::DataFormat f) {
    return std::make_shared<nn::Conv2D>(
        5, std::array<std::int64_t, 2>{3, 3},
        nn::Conv2DOptions{
            .strides = {2, 2}, .padding = nn::Padding::same, .data_format = f, .activation = "relu"});
  });
  pair([](nn::DataFormat f) {
    return std::make_shared<nn::DepthwiseConv2D>(
        std::array<std::int64_t, 2>{3, 3},
        nn::DepthwiseConv2DOptions{.depth_multiplier = 2, .padding = nn::Padding::same, .data_format = f});
  });
  pair([](nn::DataFormat f) {
    return std::make_shared<nn::SeparableConv2D>(3, std::array<std::int64_t, 2>{2, 2},
                                                 nn::SeparableConv2DOptions{.data_format = f});
  });
}

TEST(ConvLayers, WeightNamesShapesAndOrderAsKeras3) {
  nn::Conv2D c(4, {3, 3}, {.padding = nn::Padding::same});
  c.build(Shape{-1, 6, 6, 3});
  EXPECT_EQ(names(c), (std::vector<std::string>{"kernel", "bias"}));
  EXPECT_EQ(shapes(c), (std::vector<Shape>{Shape{3, 3, 3, 4}, Shape{4}}));
  EXPECT_EQ(c.compute_output_shape(Shape{-1, 6, 6, 3}), (Shape{-1, 6, 6, 4}));

  nn::Conv2D nb(6, {1, 1}, {.groups = 2, .use_bias = false});
  nb.build(Shape{-1, 5, 5, 4});
  EXPECT_EQ(names(nb), (std::vector<std::string>{"kernel"}));
  EXPECT_EQ(shapes(nb), (std::vector<Shape>{Shape{1, 1, 2, 6}}));

  nn::DepthwiseConv2D dw({3, 3}, {.depth_multiplier = 2});
  dw.build(Shape{-1, 6, 6, 4});
  EXPECT_EQ(names(dw), (std::vector<std::string>{"kernel", "bias"}));
  EXPECT_EQ(shapes(dw), (std::vector<Shape>{Shape{3, 3, 4, 2}, Shape{8}}));
  EXPECT_EQ(dw.compute_output_shape(Shape{-1, 6, 6, 4}), (Shape{-1, 4, 4, 8}));

  nn::SeparableConv2D sep(5, {3, 3}, {.depth_multiplier = 2, .data_format = nn::DataFormat::channels_first});
  sep.build(Shape{-1, 8, 6, 6});
  EXPECT_EQ(names(sep), (std::vector<std::string>{"depthwise_kernel", "pointwise_kernel", "bias"}));
  EXPECT_EQ(shapes(sep), (std::vector<Shape>{Shape{3, 3, 8, 2}, Shape{1, 1, 16, 5}, Shape{5}}));
  EXPECT_EQ(sep.compute_output_shape(Shape{-1, 8, 6, 6}), (Shape{-1, 5, 4, 4}));

  nn::Conv1D c1(4, 3, {.groups = 2});
  c1.build(Shape{-1, 10, 6});
  EXPECT_EQ(shapes(c1), (std::vector<Shape>{Shape{3, 3, 4}, Shape{4}}));
  EXPECT_EQ(c1.compute_output_shape(Shape{-1, 10, 6}), (Shape{-1, 8, 4}));

  EXPECT_EQ(nn::Conv2D(1, {1, 1}).class_name(), "Conv2D");
  EXPECT_EQ(nn::Conv2D(1, {1, 1}).name().rfind("conv2d", 0), 0u);
  EXPECT_EQ(nn::DepthwiseConv2D({1, 1}).name().rfind("depthwise_conv2d", 0), 0u);
  EXPECT_EQ(nn::SeparableConv2D(1, {1, 1}).name().rfind("separable_conv2d", 0), 0u);
  EXPECT_EQ(nn::Conv1D(1, 1).name().rfind("conv1d", 0), 0u);
}

// CNN.md section 1.5 table, read back through compute_output_shape and describe().
TEST(ConvLayers, SameSplitsPerAxis) {
  nn::Conv2D c(1, {4, 3}, {.strides = {2, 2}, .padding = nn::Padding::same});
  const Shape in{1, 7, 6, 1};
  EXPECT_EQ(c.compute_output_shape(in), (Shape{1, 4, 3, 1}));
  const auto d = c.describe(in);
  EXPECT_EQ(d.pad_top, 1);  // n 7, k 4, s 2: total 3
  EXPECT_EQ(d.pad_bottom, 2);
  EXPECT_EQ(d.pad_left, 0);  // n 6, k 3, s 2: total 1
  EXPECT_EQ(d.pad_right, 1);
  EXPECT_EQ(d.out_h(), 4);
  EXPECT_EQ(d.out_w(), 3);
}

TEST(ConvLayers, GlorotUniformUsesKerasConvolutionFans) {
  nn::Conv2D c(8, {3, 3}, {.kernel_initializer = nn::Initializer::glorot_uniform(7)});
  c.build(Shape{-1, 5, 5, 4});
  const double limit = std::sqrt(6.0 / (9 * 4 + 9 * 8));
  float hi = 0;
  for (float v : c.kernel()->value.vector()) hi = std::max(hi, std::fabs(v));
  EXPECT_LE(hi, limit);
  EXPECT_GT(hi, 0.9 * limit);
}

TEST(ConvLayers, EmptyBatch) {
  nn::Conv2D c(3, {3, 3}, {.padding = nn::Padding::same});
  const Tensor x(Shape{0, 5, 5, 2});
  std::unique_ptr<nn::LayerContext> ctx;
  const Tensor y = forward(c, x, &ctx);
  EXPECT_EQ(y.shape(), (Shape{0, 5, 5, 3}));
  nn::Gradients grads;
  const Tensor dx = c.backward(*ctx, y, grads);
  EXPECT_EQ(dx.shape(), x.shape());
  for (float v : grads.at(c.kernel()).vector()) EXPECT_EQ(v, 0.0f);
}

TEST(ConvLayers, RegularizerLosses) {
  nn::Conv2D c(2, {1, 1}, {.kernel_regularizer = nn::Regularizer::l2(0.1f)});
  c.build(Shape{-1, 2, 2, 2});
  c.set_weights({Tensor(Shape{1, 1, 2, 2}, {1, 2, 3, 4}), Tensor(Shape{2})});
  const auto losses = c.losses();
  ASSERT_EQ(losses.size(), 1u);
  EXPECT_NEAR(losses[0], 0.1 * 30, 1e-5);
}

TEST(ConvLayers, ConstructorErrorsNameTheArgument) {
  auto argument_of = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const bnorm::ShapeError& e) {
      return std::string("ShapeError ") + e.argument();
    } catch (const bnorm::ArgumentError& e) {
      return e.argument();
    }
    return "no error";
  };
  EXPECT_EQ(argument_of([] { nn::Conv2D(0, {3, 3}); }), "filters");
  EXPECT_EQ(argument_of([] { nn::Conv2D(4, {3, 0}); }), "kernel_size");
  EXPECT_EQ(argument_of([] { nn::Conv2D(4, {3, 3}, {.strides = {0, 1}}); }), "strides");
  EXPECT_EQ(argument_of([] { nn::Conv2D(4, {3, 3}, {.groups = 3}); }), "groups");
  EXPECT_EQ(argument_of([] {
              nn::Conv2D(4, {3, 3}, {.strides = {2, 1}, .dilation_rate = {1, 2}});
            }),
            "strides");
  EXPECT_EQ(argument_of([] { nn::Conv1D(4, 3, {.strides = 2, .dilation_rate = 2}); }), "strides");
  EXPECT_EQ(argument_of([] { nn::Conv2D(4, {3, 3}, {.padding = nn::Padding::causal}); }), "padding");
  EXPECT_EQ(argument_of([] { nn::DepthwiseConv2D({3, 3}, {.depth_multiplier = 0}); }), "depth_multiplier");
  EXPECT_EQ(argument_of([] { nn::Conv2D(4, {3, 3}, {.activation = "nope"}); }), "activation");
  // Keras 3 accepts strides with dilation on the depthwise layers.
  EXPECT_EQ(argument_of([] {
              nn::DepthwiseConv2D({3, 3}, {.strides = {2, 2}, .dilation_rate = {2, 2}});
            }),
            "no error");
  EXPECT_EQ(argument_of([] {
              nn::SeparableConv2D(2, {3, 3}, {.strides = {2, 2}, .dilation_rate = {2, 2}});
            }),
            "no error");
}

TEST(ConvLayers, FailedCallsLeaveTheLayerUnchanged) {
  nn::Conv2D c(4, {3, 3}, {.groups = 2});
  // Before build: channels not divisible by groups, wrong rank, kernel larger than the input.
  EXPECT_THROW(forward(c, Tensor(Shape{1, 5, 5, 3})), bnorm::ShapeError);
  EXPECT_FALSE(c.built());
  EXPECT_THROW(forward(c, Tensor(Shape{5, 5, 4})), bnorm::ShapeError);
  EXPECT_FALSE(c.built());
  try {
    forward(c, Tensor(Shape{1, 2, 5, 4}));
    ADD_FAILURE() << "no error";
  } catch (const bnorm::ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("padded input"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(c.built());
  EXPECT_TRUE(c.weights().empty());
  // After build: another channel count, channels_first data given to a channels_last layer.
  const Tensor x = random_tensor(Shape{2, 5, 5, 4}, 50);
  const Tensor y = forward(c, x);
  const auto before = c.get_weights();
  EXPECT_THROW(forward(c, Tensor(Shape{2, 5, 5, 6})), bnorm::ShapeError);
  EXPECT_THROW(forward(c, Tensor(Shape{2, 4, 5, 5})), bnorm::ShapeError);
  EXPECT_THROW(forward(c, Tensor(Shape{2, 2, 2, 4})), bnorm::ShapeError);  // valid 3x3 on 2x2
  const auto after = c.get_weights();
  ASSERT_EQ(after.size(), before.size());
  for (std::size_t i = 0; i < after.size(); ++i) EXPECT_EQ(after[i].vector(), before[i].vector());
  EXPECT_EQ(forward(c, x).vector(), y.vector());
  // backward with a dy of the wrong shape.
  std::unique_ptr<nn::LayerContext> ctx;
  forward(c, x, &ctx);
  nn::Gradients grads;
  EXPECT_THROW(c.backward(*ctx, Tensor(Shape{2, 3, 3, 3}), grads), bnorm::ShapeError);
  EXPECT_TRUE(grads.empty());
}
