// Tests of the pooling, padding, reshaping, activation and preprocessing layers
// (bnorm/nn/spatial.hpp) and of Dense / Activation with the new activations: the Keras-
// measured examples of ../shared/spec/CNN.md sections 2, 4 and 5, both data formats,
// finite-difference gradients through the Layer interface, and typed errors that name
// the argument and leave the layer unchanged.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/spatial.hpp"
#include "test_util.hpp"

using bnorm::Shape;
using bnorm::Tensor;
namespace nn = bnorm::nn;
using nn::DataFormat;

namespace {

Tensor iota(const Shape& s, float from = 0) {
  Tensor t(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = from + static_cast<float>(i);
  return t;
}

// Values 0.05 apart (shuffled, centred, never on 0 or an integer): a finite difference
// with h = 0.01 never crosses a max-pool tie or a ReLU kink.
Tensor spaced(const Shape& s, std::uint32_t seed) {
  Tensor t(s);
  std::vector<std::int64_t> order(static_cast<std::size_t>(t.numel()));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(seed));
  const double centre = static_cast<double>(t.numel()) / 2;
  for (std::int64_t i = 0; i < t.numel(); ++i)
    t[i] =
        static_cast<float>((static_cast<double>(order[static_cast<std::size_t>(i)]) - centre + 0.5) * 0.05);
  return t;
}

Tensor forward(nn::Layer& layer, const Tensor& x) {
  return layer.forward(x, false, nullptr, nullptr);
}

std::vector<float> values(const Tensor& t) {
  return t.vector();
}

// dx from backward against central differences of <forward(x), dy>, in float.
void expect_gradients(nn::Layer& layer, const Tensor& x, const std::string& what, float h = 1e-2f,
                      double tol = 2e-3) {
  SCOPED_TRACE(what);
  std::unique_ptr<nn::LayerContext> ctx;
  const Tensor y = layer.forward(x, true, &ctx, nullptr);
  const Tensor dy = bnorm::test::random_tensor(y.shape(), 77);
  nn::Gradients grads;
  const Tensor dx = layer.backward(*ctx, dy, grads);
  ASSERT_EQ(dx.shape(), x.shape());
  if (layer.weights().empty()) {
    EXPECT_TRUE(grads.empty());
  }
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    Tensor xp = x, xm = x;
    xp[i] += h;
    xm[i] -= h;
    const double fd =
        (bnorm::test::dot(forward(layer, xp), dy) - bnorm::test::dot(forward(layer, xm), dy)) / (2.0 * h);
    EXPECT_NEAR(dx[i], fd, tol * (1.0 + std::fabs(fd))) << "dx[" << i << "]";
  }
}

// Calls f, expects E, and checks the argument the error names.
template <typename E>
void expect_error(const std::function<void()>& f, const std::string& argument, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << what << ": no throw";
  } catch (const E& e) {
    EXPECT_EQ(e.argument(), argument) << what << ": " << e.what();
    EXPECT_FALSE(e.expected().empty()) << what;
    EXPECT_FALSE(e.received().empty()) << what;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": wrong exception " << e.what();
  }
}

Shape nchw(const Shape& nhwc) {
  return Shape{nhwc[0], nhwc[3], nhwc[1], nhwc[2]};
}

}  // namespace

TEST(SpatialLayers, KerasShapesAndClassNames) {
  nn::GlobalAveragePooling2D gap;
  EXPECT_EQ(gap.class_name(), "GlobalAveragePooling2D");
  EXPECT_EQ(gap.compute_output_shape(Shape{2, 5, 5, 3}), (Shape{2, 3}));
  EXPECT_EQ(nn::GlobalAveragePooling2D({.keepdims = true}).compute_output_shape(Shape{2, 5, 5, 3}),
            (Shape{2, 1, 1, 3}));
  EXPECT_EQ(nn::GlobalMaxPooling2D({.data_format = DataFormat::channels_first, .keepdims = true})
                .compute_output_shape(Shape{2, 3, 5, 5}),
            (Shape{2, 3, 1, 1}));
  EXPECT_EQ(nn::ZeroPadding2D({.padding = {{{1, 2}, {3, 0}}}}).compute_output_shape(Shape{1, 5, 5, 1}),
            (Shape{1, 8, 8, 1}));
  EXPECT_EQ(nn::ZeroPadding2D().compute_output_shape(Shape{-1, 4, -1, 2}), (Shape{-1, 6, -1, 2}));
  EXPECT_EQ(nn::Cropping2D({.cropping = {{{1, 0}, {0, 2}}}}).compute_output_shape(Shape{1, 5, 5, 1}),
            (Shape{1, 4, 3, 1}));
  EXPECT_EQ(nn::Reshape({.target_shape = {-1, 3}}).compute_output_shape(Shape{1, 2, 2, 3}), (Shape{1, 4, 3}));
  EXPECT_EQ(nn::Reshape({.target_shape = {-1, 3}}).compute_output_shape(Shape{-1, 2, -1, 3}),
            (Shape{-1, -1, 3}));
  EXPECT_EQ(nn::Permute({.dims = {3, 1, 2}}).compute_output_shape(Shape{1, 2, 2, 3}), (Shape{1, 3, 2, 2}));
  EXPECT_EQ(nn::UpSampling2D({.size = {2, 3}}).compute_output_shape(Shape{-1, 2, 2, 3}),
            (Shape{-1, 4, 6, 3}));
  EXPECT_EQ(nn::MaxPooling2D().compute_output_shape(Shape{-1, 5, 5, 3}), (Shape{-1, 2, 2, 3}));
  EXPECT_EQ(nn::MaxPooling2D({.padding = nn::Padding::same}).compute_output_shape(Shape{-1, 5, 5, 3}),
            (Shape{-1, 3, 3, 3}));
  EXPECT_EQ(nn::AveragePooling2D(
                {.pool_size = {3, 3}, .strides = nn::Size2D{2, 2}, .data_format = DataFormat::channels_first})
                .compute_output_shape(Shape{4, 3, 7, 9}),
            (Shape{4, 3, 3, 4}));
  nn::reset_unique_names();
  EXPECT_EQ(nn::ReLU().name(), "re_lu");
  EXPECT_EQ(nn::LeakyReLU().name(), "leaky_re_lu");
  EXPECT_EQ(nn::MaxPooling2D().name(), "max_pooling2d");
  EXPECT_EQ(nn::MaxPooling2D().name(), "max_pooling2d_1");
  EXPECT_EQ(nn::UpSampling2D().name(), "up_sampling2d");
  EXPECT_EQ(nn::Normalization().name(), "normalization");
  EXPECT_EQ(nn::Rescaling({.name = "stem"}).name(), "stem");
  EXPECT_EQ(nn::AveragePooling2D().strides(), (nn::Size2D{2, 2}));
}

TEST(SpatialLayers, KerasMeasuredValuesInBothFormats) {
  // x = 1..25 on 5x5 (CNN.md section 2.1); one channel, so NHWC and NCHW hold the same data.
  const Tensor x = iota(Shape{1, 5, 5, 1}, 1);
  for (const auto f : {DataFormat::channels_last, DataFormat::channels_first}) {
    const Tensor xf = f == DataFormat::channels_last ? x : x.reshaped(Shape{1, 1, 5, 5});
    nn::MaxPooling2D max({.padding = nn::Padding::same, .data_format = f});
    EXPECT_EQ(values(forward(max, xf)), (std::vector<float>{7, 9, 10, 17, 19, 20, 22, 24, 25}));
    nn::AveragePooling2D avg({.padding = nn::Padding::same, .data_format = f});
    EXPECT_EQ(values(forward(avg, xf)), (std::vector<float>{4, 6, 7.5f, 14, 16, 17.5f, 21.5f, 23.5f, 25}));
    nn::Cropping2D crop({.cropping = {{{1, 0}, {0, 2}}}, .data_format = f});
    EXPECT_EQ(values(forward(crop, xf)), (std::vector<float>{6, 7, 8, 11, 12, 13, 16, 17, 18, 21, 22, 23}));
  }
  // Permute((3, 1, 2)) on arange(12).reshape(1, 2, 2, 3): out[0, c, h, w] = x[0, h, w, c].
  nn::Permute permute({.dims = {3, 1, 2}});
  const Tensor p = forward(permute, iota(Shape{1, 2, 2, 3}));
  EXPECT_EQ(p.shape(), (Shape{1, 3, 2, 2}));
  EXPECT_EQ(values(p), (std::vector<float>{0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11}));
  // GlobalAveragePooling2D, channels_first keepdims.
  nn::GlobalAveragePooling2D gap({.data_format = DataFormat::channels_first, .keepdims = true});
  const Tensor g = forward(gap, iota(Shape{1, 3, 2, 2}));
  EXPECT_EQ(g.shape(), (Shape{1, 3, 1, 1}));
  EXPECT_EQ(values(g), (std::vector<float>{1.5f, 5.5f, 9.5f}));
  // UpSampling2D bilinear (CNN.md section 2.2).
  nn::UpSampling2D up({.interpolation = nn::Interpolation::bilinear});
  EXPECT_EQ(values(forward(up, Tensor(Shape{1, 2, 2, 1}, {1, 2, 3, 4}))),
            (std::vector<float>{1, 1.25f, 1.75f, 2, 1.5f, 1.75f, 2.25f, 2.5f, 2.5f, 2.75f, 3.25f, 3.5f, 3,
                                3.25f, 3.75f, 4}));
  EXPECT_EQ(nn::interpolation_from_name("bilinear"), nn::Interpolation::bilinear);
  EXPECT_EQ(nn::interpolation_name(nn::Interpolation::nearest), "nearest");
}

TEST(ActivationLayers, KerasMeasuredValues) {
  const Tensor x(Shape{1, 10}, {-4, -3, -1, -0.5f, 0, 0.5f, 1, 2.5f, 3, 7});
  nn::ReLU relu({.max_value = 2.0, .negative_slope = 0.1, .threshold = 1.0});
  const auto y = values(forward(relu, x));
  const std::vector<float> want = {-0.5f, -0.4f, -0.2f, -0.15f, -0.1f, -0.05f, 0, 2, 2, 2};
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(y[i], want[i], 1e-6) << i;
  nn::ReLU relu6({.max_value = 6.0});
  EXPECT_EQ(values(forward(relu6, x)), (std::vector<float>{0, 0, 0, 0, 0, 0.5f, 1, 2.5f, 3, 6}));
  nn::LeakyReLU leaky;  // slope 0.3 (the layer's default)
  EXPECT_FLOAT_EQ(forward(leaky, x)[0], -1.2f);
  EXPECT_EQ(leaky.options().negative_slope, 0.3);
  // Rescaling([1, 2, 3], offset=-1) on ones gives [0, 1, 2]; 1/255.
  nn::Rescaling rescale({.scale = {1, 2, 3}, .offset = {-1}});
  EXPECT_EQ(values(forward(rescale, Tensor(Shape{1, 1, 1, 3}, 1.0f))), (std::vector<float>{0, 1, 2}));
  nn::Rescaling by255({.scale = {1.0 / 255}});
  EXPECT_EQ(forward(by255, Tensor(Shape{1, 2}, {255, 0}))[0], 255.0f * static_cast<float>(1.0 / 255));
  // Per-channel scale under a channels_first global image_data_format runs along axis -3.
  nn::Rescaling first({.scale = {1, 10}, .image_data_format = DataFormat::channels_first});
  EXPECT_EQ(values(forward(first, Tensor(Shape{1, 2, 1, 2}, 1.0f))), (std::vector<float>{1, 1, 10, 10}));
  // Normalization: mean [1, 2], variance [0, 4] on [1.5, 4] -> [5000000, 1]; invert.
  nn::Normalization norm({.mean = std::vector<double>{1, 2}, .variance = std::vector<double>{0, 4}});
  EXPECT_EQ(values(forward(norm, Tensor(Shape{1, 2}, {1.5f, 4}))), (std::vector<float>{5000000.0f, 1.0f}));
  EXPECT_TRUE(norm.weights().empty());
  nn::Normalization inv(
      {.mean = std::vector<double>{1, 2}, .variance = std::vector<double>{4, 4}, .invert = true});
  EXPECT_EQ(values(forward(inv, Tensor(Shape{1, 2}, {1, 1}))), (std::vector<float>{3, 4}));
}

TEST(SpatialLayers, GradientsMatchFiniteDifferences) {
  using Factory = std::function<std::shared_ptr<nn::Layer>(DataFormat)>;
  const std::vector<std::pair<std::string, Factory>> layers = {
      {"ZeroPadding2D",
       [](DataFormat f) {
         return std::make_shared<nn::ZeroPadding2D>(
             nn::ZeroPadding2DOptions{.padding = {{{1, 2}, {0, 1}}}, .data_format = f});
       }},
      {"Cropping2D",
       [](DataFormat f) {
         return std::make_shared<nn::Cropping2D>(
             nn::Cropping2DOptions{.cropping = {{{1, 0}, {1, 2}}}, .data_format = f});
       }},
      {"MaxPooling2D valid",
       [](DataFormat f) {
         return std::make_shared<nn::MaxPooling2D>(nn::Pooling2DOptions{.data_format = f});
       }},
      {"MaxPooling2D 3/2 same",
       [](DataFormat f) {
         return std::make_shared<nn::MaxPooling2D>(nn::Pooling2DOptions{.pool_size = {3, 3},
                                                                        .strides = nn::Size2D{2, 2},
                                                                        .padding = nn::Padding::same,
                                                                        .data_format = f});
       }},
      {"AveragePooling2D same",
       [](DataFormat f) {
         return std::make_shared<nn::AveragePooling2D>(nn::Pooling2DOptions{.pool_size = {2, 3},
                                                                            .strides = nn::Size2D{1, 2},
                                                                            .padding = nn::Padding::same,
                                                                            .data_format = f});
       }},
      {"GlobalAveragePooling2D",
       [](DataFormat f) {
         return std::make_shared<nn::GlobalAveragePooling2D>(nn::GlobalPooling2DOptions{.data_format = f});
       }},
      {"GlobalMaxPooling2D keepdims",
       [](DataFormat f) {
         return std::make_shared<nn::GlobalMaxPooling2D>(
             nn::GlobalPooling2DOptions{.data_format = f, .keepdims = true});
       }},
      {"UpSampling2D nearest",
       [](DataFormat f) {
         return std::make_shared<nn::UpSampling2D>(nn::UpSampling2DOptions{.size = {2, 3}, .data_format = f});
       }},
      {"UpSampling2D bilinear",
       [](DataFormat f) {
         return std::make_shared<nn::UpSampling2D>(
             nn::UpSampling2DOptions{.data_format = f, .interpolation = nn::Interpolation::bilinear});
       }},
      {"Reshape",
       [](DataFormat) {
         return std::make_shared<nn::Reshape>(nn::ReshapeOptions{.target_shape = {-1, 6}});
       }},
      {"Permute",
       [](DataFormat) {
         return std::make_shared<nn::Permute>(nn::PermuteOptions{.dims = {2, 3, 1}});
       }},
      {"ReLU",
       [](DataFormat) {
         return std::make_shared<nn::ReLU>(
             nn::ReLUOptions{.max_value = 0.6, .negative_slope = 0.1, .threshold = 0.2});
       }},
      {"ReLU(6)", [](DataFormat) { return std::make_shared<nn::ReLU>(nn::ReLUOptions{.max_value = 6.0}); }},
      {"LeakyReLU", [](DataFormat) { return std::make_shared<nn::LeakyReLU>(); }},
      {"Rescaling",
       [](DataFormat) {
         return std::make_shared<nn::Rescaling>(
             nn::RescalingOptions{.scale = {0.5, -2, 3}, .offset = {1, 2, 3}});
       }},
      {"Normalization",
       [](DataFormat) {
         return std::make_shared<nn::Normalization>(
             nn::NormalizationOptions{.axis = {-1},
                                      .mean = std::vector<double>{0.1, -0.2, 0.3},
                                      .variance = std::vector<double>{0.25, 4, 9}});
       }},
      {"Normalization invert",
       [](DataFormat) {
         return std::make_shared<nn::Normalization>(
             nn::NormalizationOptions{.axis = {1, 3},
                                      .mean = std::vector<double>{0.5},
                                      .variance = std::vector<double>{2},
                                      .invert = true});
       }},
  };
  const Shape nhwc{2, 5, 4, 3};
  for (const auto& [label, make] : layers)
    for (const auto f : {DataFormat::channels_last, DataFormat::channels_first}) {
      auto layer = make(f);
      const Shape s = f == DataFormat::channels_last ? nhwc : nchw(nhwc);
      // The format-free layers see the same shape both times, which is harmless.
      const bool spatial = label.find("2D") != std::string::npos;
      expect_gradients(*layer, spaced(spatial ? s : nhwc, 5),
                       label + (f == DataFormat::channels_last ? " NHWC" : " NCHW"));
    }
}

TEST(ActivationLayers, NewActivationsThroughActivationAndDense) {
  const Tensor x = spaced(Shape{3, 8}, 11);
  for (const char* name :
       {"relu6", "silu", "swish", "gelu", "gelu_tanh", "elu", "selu", "softplus", "softsign", "hard_sigmoid",
        "hard_sigmoid_keras2", "hard_silu", "hard_swish", "leaky_relu", "exponential", "log_softmax"}) {
    nn::Activation layer(name);
    expect_gradients(layer, x, std::string("Activation ") + name);
  }
  nn::Activation keras2(bnorm::kernels::Activation::hard_sigmoid_keras2);
  EXPECT_FLOAT_EQ(forward(keras2, Tensor(Shape{1, 1}, {1.0f}))[0], 0.7f);
  nn::Activation keras3("hard_sigmoid");
  EXPECT_FLOAT_EQ(forward(keras3, Tensor(Shape{1, 1}, {1.0f}))[0], 4.0f / 6.0f);

  // Dense keeps the pre-activation for the activations whose gradient reads x.
  for (const char* name : {"silu", "gelu", "relu6", "hard_sigmoid_keras2", "tanh"}) {
    SCOPED_TRACE(name);
    nn::Dense dense(4, {.activation = name});
    const Tensor xd = bnorm::test::random_tensor(Shape{5, 3}, 3);
    dense.build(xd.shape());
    dense.kernel()->value = bnorm::test::random_tensor(Shape{3, 4}, 4);
    dense.bias()->value = bnorm::test::random_tensor(Shape{4}, 5, 0.5f);
    expect_gradients(dense, xd, std::string("Dense ") + name, 1e-2f, 3e-3);
    std::unique_ptr<nn::LayerContext> ctx;
    const Tensor y = dense.forward(xd, true, &ctx, nullptr);
    const Tensor dy = bnorm::test::random_tensor(y.shape(), 6);
    nn::Gradients grads;
    dense.backward(*ctx, dy, grads);
    Tensor& w = dense.kernel()->value;
    const float h = 1e-2f;
    for (std::int64_t i = 0; i < w.numel(); ++i) {
      const float keep = w[i];
      w[i] = keep + h;
      const double lp = bnorm::test::dot(forward(dense, xd), dy);
      w[i] = keep - h;
      const double lm = bnorm::test::dot(forward(dense, xd), dy);
      w[i] = keep;
      const double fd = (lp - lm) / (2.0 * h);
      EXPECT_NEAR(grads.at(dense.kernel())[i], fd, 3e-3 * (1.0 + std::fabs(fd))) << "dkernel[" << i << "]";
    }
  }
}

TEST(Normalization, AdaptedWeightsInKerasOrder) {
  nn::Normalization norm({.axis = {3}});
  const Tensor data = bnorm::test::random_tensor(Shape{2, 6, 6, 3}, 8, 2.0f, 1.0f);
  norm.adapt(data);
  const auto w = norm.weights();
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0]->name, "mean");
  EXPECT_EQ(w[1]->name, "variance");
  EXPECT_EQ(w[2]->name, "count");
  EXPECT_EQ(w[0]->value.shape(), (Shape{3}));
  EXPECT_EQ(w[2]->value.shape(), Shape{});
  for (const auto* v : w) EXPECT_FALSE(v->trainable);
  EXPECT_EQ(w[2]->value[0], 72.0f);  // tf.keras's count for a (2, 6, 6, 3) array
  for (std::int64_t c = 0; c < 3; ++c) {
    double sum = 0, sq = 0;
    for (std::int64_t i = c; i < data.numel(); i += 3) sum += data[i];
    const double mean = sum / 72;
    for (std::int64_t i = c; i < data.numel(); i += 3) sq += (data[i] - mean) * (data[i] - mean);
    EXPECT_NEAR(w[0]->value[c], mean, 1e-6);
    EXPECT_NEAR(w[1]->value[c], sq / 72, 1e-6);  // biased
  }
  // The adapted layer standardizes its data.
  const Tensor y = forward(norm, data);
  double m = 0;
  for (std::int64_t i = 0; i < y.numel(); i += 3) m += y[i];
  EXPECT_NEAR(m / 72, 0.0, 1e-5);
  // Unadapted: mean 0, variance 1 (EfficientNet with weights=None): the identity.
  nn::Normalization fresh({.axis = {3}});
  EXPECT_EQ(values(forward(fresh, data)), values(data));
  EXPECT_EQ(fresh.get_weights()[1].vector(), (std::vector<float>{1, 1, 1}));
  // A failed adapt changes nothing.
  const auto before = norm.get_weights();
  EXPECT_THROW(norm.adapt(Tensor(Shape{2, 6, 6, 4})), bnorm::ShapeError);
  for (std::size_t i = 0; i < before.size(); ++i)
    EXPECT_EQ(norm.get_weights()[i].vector(), before[i].vector());
  nn::Normalization unbuilt({.axis = {0}});
  EXPECT_THROW(unbuilt.adapt(data), bnorm::ArgumentError);
  EXPECT_FALSE(unbuilt.built());
  nn::Normalization given({.mean = std::vector<double>{0}, .variance = std::vector<double>{1}});
  EXPECT_THROW(given.adapt(data), bnorm::StateError);
}

TEST(SpatialLayers, BadSettingsAndInputsAreTypedErrors) {
  using bnorm::ArgumentError;
  using bnorm::ShapeError;
  expect_error<ArgumentError>([] { nn::MaxPooling2D({.pool_size = {0, 2}}); }, "pool_size", "pool_size 0");
  expect_error<ArgumentError>(
      [] {
        nn::AveragePooling2D({.strides = nn::Size2D{1, 0}});
      },
      "strides", "stride 0");
  expect_error<ArgumentError>([] { nn::MaxPooling2D({.padding = nn::Padding::causal}); }, "padding",
                              "causal");
  expect_error<ArgumentError>(
      [] {
        nn::ZeroPadding2D({.padding = {{{1, -1}, {0, 0}}}});
      },
      "padding", "negative padding");
  expect_error<ArgumentError>(
      [] {
        nn::Cropping2D({.cropping = {{{0, 0}, {-2, 0}}}});
      },
      "cropping", "negative crop");
  expect_error<ArgumentError>([] { nn::UpSampling2D({.size = {0, 2}}); }, "size", "size 0");
  expect_error<ArgumentError>([] { nn::Reshape({.target_shape = {-1, -1}}); }, "target_shape", "two -1");
  expect_error<ArgumentError>([] { nn::Reshape({.target_shape = {0, 3}}); }, "target_shape", "a 0");
  expect_error<ArgumentError>([] { nn::Permute({.dims = {0, 1}}); }, "dims", "0-based dims");
  expect_error<ArgumentError>([] { nn::Permute({.dims = {1, 1}}); }, "dims", "repeated dims");
  expect_error<ArgumentError>([] { nn::ReLU({.max_value = -1.0}); }, "max_value", "negative max_value");
  expect_error<ArgumentError>([] { nn::ReLU({.negative_slope = -0.1}); }, "negative_slope", "negative slope");
  expect_error<ArgumentError>([] { nn::ReLU({.threshold = NAN}); }, "threshold", "NaN threshold");
  expect_error<ArgumentError>([] { nn::LeakyReLU({.negative_slope = -1}); }, "negative_slope",
                              "negative slope");
  expect_error<ArgumentError>([] { nn::Rescaling({.scale = {}}); }, "scale", "empty scale");
  expect_error<ArgumentError>([] { nn::Normalization({.mean = std::vector<double>{1}}); }, "variance",
                              "mean only");
  expect_error<ArgumentError>([] { nn::Activation("mish"); }, "activation", "unknown activation");
  expect_error<ArgumentError>([] { nn::Dense(2, {.activation = "hard_sigmoid_keras3"}); }, "activation",
                              "Dense");

  // Inputs that do not fit.
  nn::MaxPooling2D pool({.pool_size = {3, 3}});
  expect_error<ShapeError>(
      [&] {
        forward(pool, Tensor(Shape{1, 2, 5, 1}));
      },
      "input", "window larger than the input");
  expect_error<ShapeError>(
      [&] {
        pool.build(Shape{-1, 2, 5, 1});
      },
      "input", "build with a window larger than the input");
  EXPECT_EQ(nn::MaxPooling2D({.pool_size = {3, 3}, .padding = nn::Padding::same})
                .compute_output_shape(Shape{1, 2, 5, 1}),
            (Shape{1, 1, 2, 1}));
  expect_error<ShapeError>([&] { forward(pool, Tensor(Shape{1, 5, 5})); }, "input", "rank 3");
  nn::Cropping2D crop({.cropping = {{{2, 3}, {0, 0}}}});
  expect_error<ShapeError>([&] { forward(crop, Tensor(Shape{1, 5, 5, 1})); }, "input", "crop everything");
  nn::Reshape reshape({.target_shape = {4, 4}});
  expect_error<ShapeError>([&] { forward(reshape, Tensor(Shape{2, 3, 5})); }, "input", "reshape count");
  nn::Permute permute({.dims = {2, 1}});
  expect_error<ShapeError>([&] { forward(permute, Tensor(Shape{2, 3, 5, 1})); }, "input", "permute rank");
  nn::Rescaling rescale({.scale = {1, 2}});
  expect_error<ShapeError>([&] { forward(rescale, Tensor(Shape{2, 3})); }, "input", "scale length");
  nn::Normalization norm(
      {.axis = {-1}, .mean = std::vector<double>{1, 2, 3}, .variance = std::vector<double>{1, 1, 1}});
  expect_error<ArgumentError>([&] { forward(norm, Tensor(Shape{2, 2})); }, "mean", "mean length");
  EXPECT_FALSE(norm.built());
  forward(norm, Tensor(Shape{2, 3}));
  expect_error<ShapeError>([&] { forward(norm, Tensor(Shape{2, 4})); }, "input", "after build");

  // Backward with another layer's context or a wrong dy.
  nn::MaxPooling2D a;
  nn::Activation other("relu");  // another context type
  std::unique_ptr<nn::LayerContext> ctx;
  nn::Gradients grads;
  other.forward(Tensor(Shape{1, 2}), true, &ctx, nullptr);
  EXPECT_THROW(a.backward(*ctx, Tensor(Shape{1, 2}), grads), bnorm::StateError);
  a.forward(Tensor(Shape{1, 4, 4, 1}), true, &ctx, nullptr);
  expect_error<ShapeError>([&] { a.backward(*ctx, Tensor(Shape{1, 3, 3, 1}), grads); }, "dy", "wrong dy");
}
