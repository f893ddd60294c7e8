// inspect_batch_norm: the facts it reports (convention, momentum, statistics summaries,
// update counts) and each warning, on layers put in the state the warning is about;
// reading changes nothing.
#include "bnorm/nn/inspect.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "bnorm/nn/layers.hpp"
#include "test_util.hpp"

using bnorm::Shape;
using bnorm::Tensor;
using bnorm::test::random_tensor;
namespace nn = bnorm::nn;
using Kind = nn::BatchNormWarningKind;

namespace {

std::shared_ptr<nn::BatchNormalization> built_bn(nn::BatchNormalizationOptions o = {}, std::int64_t channels = 4) {
  auto bn = std::make_shared<nn::BatchNormalization>(std::move(o));
  bn->build(Shape{-1, channels});
  return bn;
}

bool has(const nn::BatchNormInspection& r, Kind kind) {
  return std::any_of(r.warnings.begin(), r.warnings.end(), [&](const auto& w) { return w.kind == kind; });
}

std::string kinds(const nn::BatchNormInspection& r) {
  std::string s;
  for (const auto& w : r.warnings) s += nn::to_string(w.kind) + ": " + w.message + "\n";
  return s;
}

void train_steps(nn::BatchNormalization& bn, int steps) {
  for (int i = 0; i < steps; ++i) bn(random_tensor(Shape{8, bn.moving_mean()->value.numel()}, 10 + static_cast<std::uint32_t>(i), 2.0f, 3.0f), true);
}

}  // namespace

TEST(InspectBatchNorm, FreshTrainableLayerIsAtInitialValuesAndNeverUpdated) {
  nn::reset_unique_names();
  const auto bn = built_bn({.momentum = 0.9, .epsilon = 1e-5, .center = false, .name = "bn"});
  const auto r = nn::inspect_batch_norm(*bn);
  EXPECT_EQ(r.name, "bn");
  EXPECT_EQ(r.class_name, "BatchNormalization");
  EXPECT_EQ(r.convention, nn::MomentumConvention::keras);
  EXPECT_EQ(r.axis, std::vector<int>{-1});
  EXPECT_EQ(r.channels, 4);
  EXPECT_EQ(r.momentum, 0.9);
  EXPECT_EQ(r.retention, 0.9);
  EXPECT_EQ(r.epsilon, 1e-5);
  EXPECT_FALSE(r.center);
  EXPECT_TRUE(r.scale);
  EXPECT_TRUE(r.gamma.has_value());
  EXPECT_FALSE(r.beta.has_value());
  EXPECT_TRUE(r.built && r.trainable);
  EXPECT_EQ(r.at_initial_values, true);
  EXPECT_EQ(r.updates, 0);  // known only because the statistics never moved
  EXPECT_EQ(r.update_count, nn::UpdateCount::initial);
  EXPECT_EQ(r.initial_weight, 1.0);
  EXPECT_EQ(r.moving_mean.min, 0.0);
  EXPECT_EQ(r.moving_mean.max, 0.0);
  EXPECT_EQ(r.moving_variance.mean, 1.0);
  EXPECT_TRUE(has(r, Kind::initial_statistics)) << kinds(r);
  EXPECT_TRUE(has(r, Kind::never_updated)) << kinds(r);
  EXPECT_FALSE(has(r, Kind::short_memory)) << kinds(r);  // the two above say it already
  EXPECT_EQ(r.warnings.size(), 2u) << kinds(r);
  EXPECT_NE(r.warnings[1].message.find("does not count its updates"), std::string::npos);
}

TEST(InspectBatchNorm, FrozenLayerAtInitialValuesIsNotCalledNeverUpdated) {
  const auto bn = built_bn({.trainable = false, .name = "frozen"});
  const auto r = nn::inspect_batch_norm(*bn);
  EXPECT_FALSE(r.trainable);
  EXPECT_TRUE(has(r, Kind::initial_statistics));
  EXPECT_FALSE(has(r, Kind::never_updated));
}

TEST(InspectBatchNorm, TrainedKerasLayerHasNoCountButAnEstimateFromTrainingSteps) {
  const auto bn = built_bn({.momentum = 0.99, .name = "bn"});
  train_steps(*bn, 3);
  const std::vector<float> before = bn->moving_mean()->value.vector();
  auto r = nn::inspect_batch_norm(*bn);
  EXPECT_EQ(bn->moving_mean()->value.vector(), before);  // reading changes nothing
  EXPECT_EQ(r.at_initial_values, false);
  EXPECT_FALSE(r.updates.has_value());
  EXPECT_EQ(r.update_count, nn::UpdateCount::unknown);
  EXPECT_TRUE(r.warnings.empty()) << kinds(r);
  // With the optimizer's step count: 0.99^3 = 0.97 of the initial value is left.
  r = nn::inspect_batch_norm(*bn, {.training_steps = 3});
  EXPECT_EQ(r.updates, 3);
  EXPECT_EQ(r.update_count, nn::UpdateCount::estimated);
  EXPECT_NEAR(*r.initial_weight, std::pow(0.99, 3), 1e-12);
  ASSERT_TRUE(has(r, Kind::short_memory)) << kinds(r);
  EXPECT_NE(r.warnings[0].message.find("3 updates (estimated"), std::string::npos) << kinds(r);
  EXPECT_NE(r.warnings[0].message.find("459 updates"), std::string::npos) << kinds(r);  // ceil(ln .01 / ln .99)
  // Enough steps: nothing to say.
  EXPECT_TRUE(nn::inspect_batch_norm(*bn, {.training_steps = 500}).warnings.empty());
}

TEST(InspectBatchNorm, TorchLayerCountsItsUpdates) {
  auto m = nn::BatchNorm1d(3);  // PyTorch momentum 0.1 = Keras 0.9
  auto r = nn::inspect_batch_norm(m, "bn1");
  EXPECT_EQ(r.convention, nn::MomentumConvention::pytorch);
  EXPECT_EQ(r.updates, 0);
  EXPECT_EQ(r.update_count, nn::UpdateCount::counted);
  EXPECT_TRUE(has(r, Kind::never_updated));
  EXPECT_NE(kinds(r).find("update counter is 0"), std::string::npos);
  for (int i = 0; i < 5; ++i) m(random_tensor(Shape{6, 3}, 40 + static_cast<std::uint32_t>(i), 1.0f, 2.0f));
  r = nn::inspect_batch_norm(m, "bn1");
  EXPECT_EQ(r.updates, 5);
  EXPECT_NEAR(*r.retention, 0.9, 1e-15);
  EXPECT_NEAR(*r.initial_weight, std::pow(0.9, 5), 1e-12);
  EXPECT_TRUE(has(r, Kind::short_memory)) << kinds(r);
  EXPECT_FALSE(has(r, Kind::initial_statistics));
  EXPECT_FALSE(has(r, Kind::never_updated));
  for (int i = 0; i < 50; ++i) m(random_tensor(Shape{6, 3}, 90 + static_cast<std::uint32_t>(i), 1.0f, 2.0f));
  EXPECT_TRUE(nn::inspect_batch_norm(m, "bn1").warnings.empty()) << kinds(nn::inspect_batch_norm(m, "bn1"));
  // Cumulative average (momentum None): one update replaces the initial value.
  auto cumulative = nn::BatchNorm1d(3, {.momentum = std::nullopt});
  cumulative(random_tensor(Shape{6, 3}, 7, 1.0f, 2.0f));
  r = nn::inspect_batch_norm(cumulative, "cum");
  EXPECT_FALSE(r.momentum.has_value());
  EXPECT_EQ(r.initial_weight, 0.0);
  EXPECT_TRUE(r.warnings.empty()) << kinds(r);
}

TEST(InspectBatchNorm, NonFiniteAndNegativeStatisticsAreReported) {
  const auto bn = built_bn({.name = "bad"});
  bn->moving_mean()->value[1] = std::numeric_limits<float>::quiet_NaN();
  bn->moving_variance()->value[2] = -0.5f;
  bn->gamma()->value[0] = std::numeric_limits<float>::infinity();
  const auto r = nn::inspect_batch_norm(*bn);
  EXPECT_EQ(r.moving_mean.non_finite, 1);
  EXPECT_EQ(r.moving_mean.count, 4);
  EXPECT_EQ(r.moving_mean.max, 0.0);  // over the finite ones
  EXPECT_EQ(r.moving_variance.min, -0.5);
  ASSERT_TRUE(has(r, Kind::non_finite)) << kinds(r);
  EXPECT_NE(kinds(r).find("moving_mean 1, gamma 1"), std::string::npos) << kinds(r);
  EXPECT_TRUE(has(r, Kind::negative_variance)) << kinds(r);
  EXPECT_FALSE(has(r, Kind::initial_statistics));
}

TEST(InspectBatchNorm, NonDefaultInitializersDefineTheInitialValues) {
  const auto bn = built_bn({.moving_variance_initializer = nn::Initializer::constant(2.0f), .name = "c"});
  auto r = nn::inspect_batch_norm(*bn);
  EXPECT_EQ(r.at_initial_values, true);
  EXPECT_NE(kinds(r).find("mean 0, variance 2"), std::string::npos) << kinds(r);
  const auto random = built_bn({.moving_mean_initializer = nn::Initializer::random_normal(0, 1, 3), .name = "r"});
  r = nn::inspect_batch_norm(*random);
  EXPECT_FALSE(r.at_initial_values.has_value());
  EXPECT_TRUE(r.warnings.empty()) << kinds(r);
}

TEST(InspectBatchNorm, ModelListsItsBatchNormLayersInOrderAndUnbuiltOnes) {
  nn::reset_unique_names();
  nn::Sequential model({std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{5}),
                        std::make_shared<nn::Dense>(4),
                        std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.name = "first"}),
                        std::make_shared<nn::Dense>(3),
                        std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.trainable = false, .name = "second"})});
  const auto report = nn::inspect_batch_norm(model);
  ASSERT_EQ(report.size(), 2u);
  EXPECT_EQ(report[0].name, "first");
  EXPECT_EQ(report[0].channels, 4);
  EXPECT_EQ(report[1].name, "second");
  EXPECT_EQ(report[1].channels, 3);
  EXPECT_FALSE(report[1].trainable);
  // Without an input shape nothing is built: reported, with no statistics.
  nn::Sequential lazy({std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.name = "lazy"})});
  const auto unbuilt = nn::inspect_batch_norm(lazy);
  ASSERT_EQ(unbuilt.size(), 1u);
  EXPECT_FALSE(unbuilt[0].built);
  EXPECT_TRUE(unbuilt[0].warnings.empty());
}

// The smallest n with momentum^n <= threshold: n = ceil(ln threshold / ln momentum).
TEST(InspectBatchNorm, UpdatesToForget) {
  EXPECT_EQ(nn::updates_to_forget(0.99, 0.01), 459);  // ln 0.01 / ln 0.99 = 458.2
  EXPECT_EQ(nn::updates_to_forget(0.9, 0.01), 44);    // ln 0.01 / ln 0.9 = 43.7
  EXPECT_EQ(nn::updates_to_forget(0.5, 0.25), 2);  // exactly 0.25 after 2
  EXPECT_EQ(nn::updates_to_forget(0.0, 0.01), 1);
  EXPECT_FALSE(nn::updates_to_forget(1.0, 0.01).has_value());
}
