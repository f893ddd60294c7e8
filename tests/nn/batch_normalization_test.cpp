// Keras-convention layer: defaults, bad input (typed errors, state kept), modes,
// collected updates, gradients by finite differences, weights API.
#include "bnorm/nn/batch_normalization.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/ops.hpp"
#include "test_util.hpp"

using bnorm::Shape;
using bnorm::Tensor;
using bnorm::test::random_tensor;
namespace nn = bnorm::nn;

namespace {

std::vector<std::vector<float>> state(const nn::BatchNormalization& bn) {
  std::vector<std::vector<float>> s;
  for (const auto& w : bn.get_weights()) s.push_back(w.vector());
  return s;
}

// Calls f, which must throw E naming `argument`; checks the layer's weights are unchanged.
template <typename E, typename F>
void expect_error_keeps_state(nn::BatchNormalization& bn, const std::string& argument, F&& f) {
  const auto before = bn.built() ? state(bn) : std::vector<std::vector<float>>{};
  try {
    f();
    ADD_FAILURE() << "expected an exception naming " << argument;
  } catch (const E& e) {
    EXPECT_EQ(e.argument(), argument) << e.what();
    EXPECT_FALSE(e.expected().empty());
    EXPECT_FALSE(e.received().empty());
    EXPECT_NE(std::string(e.what()).find(bn.name()), std::string::npos) << e.what();
  }
  if (bn.built()) {
    EXPECT_EQ(state(bn), before) << "a failed call changed the layer";
  }
}

nn::BatchNormalization trained_layer(const Shape& shape, nn::BatchNormalizationOptions o = {}) {
  nn::BatchNormalization bn(o);
  bn.call(random_tensor(shape, 1, 2.0f, 0.5f), true);
  bn.call(random_tensor(shape, 2, 1.0f, -0.5f), true);
  return bn;
}

}  // namespace

TEST(BatchNormalization, KerasDefaultsAndAutomaticNames) {
  nn::reset_unique_names();
  nn::BatchNormalization a, b;
  EXPECT_EQ(a.name(), "batch_normalization");
  EXPECT_EQ(b.name(), "batch_normalization_1");
  EXPECT_DOUBLE_EQ(a.options().momentum, 0.99);
  EXPECT_DOUBLE_EQ(a.options().epsilon, 1e-3);
  EXPECT_EQ(a.options().axis, std::vector<int>{-1});
  EXPECT_FALSE(a.built());
  a.call(Tensor(Shape{4, 3}, 1.0f));
  ASSERT_TRUE(a.built());
  ASSERT_EQ(a.weights().size(), 4u);
  EXPECT_EQ(a.weights()[0]->name, "gamma");
  EXPECT_EQ(a.weights()[3]->name, "moving_variance");
  EXPECT_EQ(a.trainable_weights().size(), 2u);
  EXPECT_EQ(a.non_trainable_weights().size(), 2u);
}

TEST(BatchNormalization, RejectsBadOptionsByName) {
  for (double m : {-0.1, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    try {
      nn::BatchNormalization bn({.momentum = m, .name = "bn"});
      ADD_FAILURE() << "momentum " << m << " accepted";
    } catch (const bnorm::ArgumentError& e) {
      EXPECT_EQ(e.argument(), "momentum");
      EXPECT_NE(std::string(e.what()).find("[0, 1]"), std::string::npos) << e.what();
    }
  }
  for (double eps : {0.0, -1e-3, std::numeric_limits<double>::infinity()}) {
    EXPECT_THROW(nn::BatchNormalization({.epsilon = eps}), bnorm::ArgumentError) << eps;
  }
  EXPECT_THROW(nn::BatchNormalization({.axis = {}}), bnorm::ArgumentError);
  EXPECT_THROW(nn::BatchNormalization({.fused = nn::Fused::yes}), bnorm::ArgumentError);  // keras3
  EXPECT_THROW(nn::BatchNormalization({.axis = {2}, .version = nn::KerasVersion::keras2, .fused = nn::Fused::yes}),
               bnorm::ArgumentError);
}

TEST(BatchNormalization, AxisErrorsAtBuildNameTheAxis) {
  nn::BatchNormalization out_of_range({.axis = {3}, .name = "bn"});
  expect_error_keeps_state<bnorm::ArgumentError>(out_of_range, "axis", [&] { out_of_range.call(Tensor(Shape{2, 3})); });
  EXPECT_FALSE(out_of_range.built());
  nn::BatchNormalization repeated({.axis = {1, -2}, .name = "bn2"});  // -2 is axis 1 at rank 3
  expect_error_keeps_state<bnorm::ArgumentError>(repeated, "axis", [&] { repeated.build(Shape{2, 3, 4}); });
  nn::BatchNormalization fused_rank3({.version = nn::KerasVersion::keras2, .fused = nn::Fused::yes, .name = "bn3"});
  expect_error_keeps_state<bnorm::ArgumentError>(fused_rank3, "fused", [&] { fused_rank3.build(Shape{2, 3, 4}); });
}

TEST(BatchNormalization, WrongChannelsOrRankAfterBuildKeepState) {
  auto bn = trained_layer(Shape{8, 3}, {.name = "bn"});
  expect_error_keeps_state<bnorm::ShapeError>(bn, "input axis 1", [&] { bn.call(Tensor(Shape{8, 4}), true); });
  expect_error_keeps_state<bnorm::ShapeError>(bn, "input rank", [&] { bn.call(Tensor(Shape{8, 2, 3}), true); });
}

TEST(BatchNormalization, NonFiniteBatchStatisticsRaiseAndKeepState) {
  auto bn = trained_layer(Shape{8, 3}, {.name = "bn"});
  Tensor x = random_tensor(Shape{8, 3}, 5);
  x.at({2, 1}) = std::numeric_limits<float>::quiet_NaN();
  try {
    bn.call(x, true);
    ADD_FAILURE() << "NaN batch accepted";
  } catch (const bnorm::NumericalError& e) {
    EXPECT_NE(std::string(e.what()).find("channel 1"), std::string::npos) << e.what();
  }
  x.at({2, 1}) = std::numeric_limits<float>::infinity();
  const auto before = state(bn);
  EXPECT_THROW(bn.call(x, true), bnorm::NumericalError);
  EXPECT_EQ(state(bn), before);
  for (float v : bn.moving_mean()->value.values()) EXPECT_TRUE(std::isfinite(v));

  // Keras's own behaviour on request: NaN reaches the statistics of channel 1 only.
  auto keras_like = trained_layer(Shape{8, 3}, {.nan_policy = nn::NanPolicy::propagate, .name = "bn2"});
  x.at({2, 1}) = std::numeric_limits<float>::quiet_NaN();
  keras_like.call(x, true);
  EXPECT_TRUE(std::isnan(keras_like.moving_mean()->value[1]));
  EXPECT_FALSE(std::isnan(keras_like.moving_mean()->value[0]));
}

TEST(BatchNormalization, EmptyBatchInTrainingChangesNothing) {
  auto bn = trained_layer(Shape{8, 3}, {.name = "bn"});
  const auto before = state(bn);
  Tensor y = bn.call(Tensor(Shape{0, 3}), true);
  EXPECT_EQ(y.shape(), (Shape{0, 3}));
  EXPECT_EQ(state(bn), before);
}

TEST(BatchNormalization, UnsetTrainingIsInferenceAndFrozenLayerNeverUpdates) {
  auto bn = trained_layer(Shape{8, 3}, {.name = "bn"});
  const Tensor x = random_tensor(Shape{8, 3}, 9, 3.0f, 1.0f);
  const auto before = state(bn);
  const Tensor y0 = bn.call(x);
  const Tensor y1 = bn.call(x, false);
  EXPECT_EQ(y0.vector(), y1.vector());
  EXPECT_EQ(state(bn), before);

  bn.set_trainable(false);
  EXPECT_TRUE(bn.trainable_weights().empty());
  EXPECT_EQ(bn.non_trainable_weights().size(), 4u);
  const Tensor y2 = bn.call(x, true);  // frozen: inference even with training = true
  EXPECT_EQ(y2.vector(), y0.vector());
  EXPECT_EQ(state(bn), before);

  bn.set_trainable(true);
  bn.call(x, true);
  EXPECT_NE(state(bn), before);
}

TEST(BatchNormalization, CollectedUpdatesApplyOnlyWhenAsked) {
  nn::BatchNormalization bn({.momentum = 0.9, .name = "bn"});
  const Tensor x = random_tensor(Shape{16, 4}, 3, 2.0f, 5.0f);
  nn::StatisticsUpdate update;
  bn.forward_collect(x, update);
  EXPECT_EQ(bn.moving_mean()->value.vector(), std::vector<float>(4, 0.0f));
  EXPECT_EQ(update.count, 16);
  // Applying it equals a plain training call on a twin layer.
  nn::BatchNormalization twin({.momentum = 0.9, .name = "twin"});
  twin.call(x, true);
  bn.apply_update(update);
  EXPECT_EQ(state(bn), state(twin));
  // A malformed update is refused whole.
  nn::StatisticsUpdate bad{Tensor(Shape{3}), Tensor(Shape{3}), 16};
  expect_error_keeps_state<bnorm::ShapeError>(bn, "update", [&] { bn.apply_update(bad); });
}

TEST(BatchNormalization, SetWeightsValidatesEverythingFirst) {
  auto bn = trained_layer(Shape{8, 3}, {.name = "bn"});
  std::vector<Tensor> w = bn.get_weights();
  w[3] = Tensor(Shape{4}, 2.0f);
  w[0] = Tensor(Shape{3}, 7.0f);
  expect_error_keeps_state<bnorm::ShapeError>(bn, "moving_variance", [&] { bn.set_weights(w); });
  w.pop_back();
  expect_error_keeps_state<bnorm::ShapeError>(bn, "weights", [&] { bn.set_weights(w); });
}

TEST(BatchNormalization, MultiAxisMatchesMomentsOverTheOtherAxes) {
  // Keras 2 multi-axis: channels are axes 1 and 3 of (N, H, W, C).
  nn::BatchNormalization bn({.axis = {1, 3}, .version = nn::KerasVersion::keras2, .name = "bn"});
  const Tensor x = random_tensor(Shape{3, 4, 5, 2}, 11, 2.0f, 1.0f);
  const Tensor y = bn.call(x, true);
  EXPECT_EQ(bn.gamma()->value.shape(), (Shape{1, 4, 1, 2}));
  const auto m = nn::moments(x, {0, 2}, true);
  const Tensor want = nn::batch_normalization(x, m.mean, m.variance, std::nullopt, std::nullopt, 1e-3f);
  for (std::int64_t i = 0; i < y.numel(); ++i) EXPECT_NEAR(y[i], want[i], 1e-5) << i;
  for (std::int64_t c = 0; c < 8; ++c) EXPECT_NEAR(bn.moving_mean()->value[c], 0.01f * m.mean[c], 1e-6);
}

TEST(BatchNormalization, BackwardRejectsWrongDy) {
  nn::BatchNormalization bn({.name = "bn"});
  nn::BatchNormContext ctx;
  bn.forward(Tensor(Shape{4, 3}, 1.0f), true, &ctx);
  EXPECT_THROW(bn.backward(ctx, Tensor(Shape{4, 2})), bnorm::ShapeError);
}

TEST(BatchNormalization, RegularizersAndConstraints) {
  nn::BatchNormalization bn({.gamma_regularizer = nn::Regularizer::l2(0.5f),
                             .gamma_constraint = nn::Constraint::non_neg(), .name = "bn"});
  bn.build(Shape{1, 2});
  bn.gamma()->value = Tensor(Shape{2}, std::vector<float>{3.0f, -4.0f});
  ASSERT_EQ(bn.losses().size(), 1u);
  EXPECT_FLOAT_EQ(bn.losses()[0], 0.5f * 25.0f);
  bn.apply_constraints();
  EXPECT_EQ(bn.gamma()->value.vector(), (std::vector<float>{3.0f, 0.0f}));
  bn.set_trainable(false);  // Keras 3 counts regularizers of trainable weights only
  EXPECT_TRUE(bn.losses().empty());
}

TEST(BatchNormalization, ConfigRoundTrip) {
  nn::BatchNormalization bn({.axis = {1}, .momentum = 0.9, .epsilon = 1e-5, .center = false,
                             .gamma_initializer = nn::Initializer::constant(2.0f), .name = "bn"});
  const nn::BatchNormalization copy = nn::BatchNormalization::from_config(bn.get_config());
  EXPECT_EQ(copy.get_config(), bn.get_config());
  EXPECT_EQ(copy.name(), "bn");
}

TEST(Initializer, SeededRandomIsDeterministicAndInRange) {
  Tensor a(Shape{1000}), b(Shape{1000}), c(Shape{1000});
  nn::Initializer::random_uniform(-0.05f, 0.05f, 7).fill(a);
  nn::Initializer::random_uniform(-0.05f, 0.05f, 7).fill(b);
  nn::Initializer::random_uniform(-0.05f, 0.05f, 8).fill(c);
  EXPECT_EQ(a.vector(), b.vector());
  EXPECT_NE(a.vector(), c.vector());
  for (float v : a.values()) EXPECT_TRUE(v >= -0.05f && v < 0.05f);
  Tensor n(Shape{20000});
  nn::Initializer::random_normal(1.0f, 2.0f, 3).fill(n);
  double s = 0, s2 = 0;
  for (float v : n.values()) s += v;
  const double mean = s / 20000;
  for (float v : n.values()) s2 += (v - mean) * (v - mean);
  EXPECT_NEAR(mean, 1.0, 0.05);
  EXPECT_NEAR(std::sqrt(s2 / 20000), 2.0, 0.05);
  EXPECT_THROW(nn::Initializer::from_name("glorot"), bnorm::ArgumentError);
}

TEST(Constraint, NormsArePerColumnLikeKerasAxisZero) {
  // w = [[3, 0], [4, 1]]: column norms 5 and 1. MaxNorm(2) rescales column 0 to norm 2
  // (factor 2 / (5 + 1e-7)) and leaves column 1 (norm 1 <= 2) as it is (factor 1 / (1 + 1e-7)).
  Tensor w(Shape{2, 2}, std::vector<float>{3, 0, 4, 1});
  nn::Constraint::max_norm(2.0f).apply(w);
  EXPECT_NEAR(w.at({0, 0}), 1.2f, 1e-6);
  EXPECT_NEAR(w.at({1, 0}), 1.6f, 1e-6);
  EXPECT_NEAR(w.at({1, 1}), 1.0f, 1e-6);
  Tensor u(Shape{2, 2}, std::vector<float>{3, 0, 4, 2});
  nn::Constraint::unit_norm().apply(u);
  EXPECT_NEAR(u.at({0, 0}), 0.6f, 1e-6);
  EXPECT_NEAR(u.at({1, 1}), 1.0f, 1e-6);
}
