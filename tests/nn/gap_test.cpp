// The training/inference gap (bnorm/nn/gap.hpp): shifts and variance ratios against
// their closed-form values on data with known population statistics, the dead, collapsed
// and stale flags, the output gap, and a model left exactly as it was.
#include "bnorm/nn/gap.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/model.hpp"

using bnorm::Shape;
using bnorm::Tensor;
namespace nn = bnorm::nn;

namespace {

// Input (3) -> BN (epsilon 1e-3) -> Dense 2 (softmax), moving statistics set by hand.
struct Known {
  std::shared_ptr<nn::BatchNormalization> bn;
  std::unique_ptr<nn::Model> model;
};

Known known_model() {
  Known k;
  auto input = nn::Input({3});
  k.bn =
      std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.epsilon = 1e-3, .name = "bn"});
  auto z = (*k.bn)(input);
  z = (*std::make_shared<nn::Dense>(
      2, nn::DenseOptions{.activation = "softmax",
                          .kernel_initializer = nn::Initializer::glorot_uniform(3)}))(z);
  k.model = std::make_unique<nn::Model>(input, z, "known");
  k.bn->moving_mean()->value = Tensor(Shape{3}, {0.0f, 5.0f, 3.0f});
  k.bn->moving_variance()->value = Tensor(Shape{3}, {1.0f, 1.0f, 5.0f});
  k.bn->gamma()->value = Tensor(Shape{3}, {1.0f, 1.0f, 0.0f});
  return k;
}

// Column 0: 1, 3, 1, 3 (mean 2, variance 1); column 1: constant 5 (dead); column 2: 0, 2,
// 4, 6 (mean 3, variance 5).
Tensor known_data() {
  return Tensor(Shape{4, 3}, {1, 5, 0, 3, 5, 2, 1, 5, 4, 3, 5, 6});
}

}  // namespace

TEST(Gap, ShiftsAndRatiosAreTheClosedFormValues) {
  for (std::int64_t batch : {1, 3, 4, 100}) {
    Known k = known_model();
    const nn::GapReport g = nn::measure_gap(*k.model, known_data(), {.batch_size = batch});
    ASSERT_EQ(g.layers.size(), 1u);
    const nn::LayerGap& l = g.layers[0];
    EXPECT_EQ(l.name, "bn");
    EXPECT_EQ(l.index, 0u);
    EXPECT_EQ(l.channels, 3);
    EXPECT_EQ(l.moments.count, 4);
    const double eps = 1e-3;
    EXPECT_NEAR(l.population_mean[0], 2.0, 1e-6);
    EXPECT_NEAR(l.population_variance[0], 1.0, 1e-6);
    EXPECT_NEAR(l.population_variance[2], 5.0, 1e-6);
    EXPECT_NEAR(l.shift[0], 2.0 / std::sqrt(1.0 + eps), 1e-6);
    EXPECT_NEAR(l.shift[1], 0.0, 1e-6);
    EXPECT_NEAR(l.shift[2], 0.0, 1e-6);
    EXPECT_NEAR(l.variance_ratio[0], 1.0, 1e-6);
    EXPECT_NEAR(l.variance_ratio[1], eps / (1.0 + eps), 1e-6);
    EXPECT_NEAR(l.variance_ratio[2], 1.0, 1e-6);
    EXPECT_EQ(l.stale, (std::vector<bool>{true, true, false}));  // shift 2; ratio 1e-3
    EXPECT_EQ(l.dead, (std::vector<bool>{false, true, false}));
    EXPECT_EQ(l.collapsed, (std::vector<bool>{false, false, true}));
    EXPECT_EQ(l.stale_count, 2);
    EXPECT_EQ(l.dead_count, 1);
    EXPECT_EQ(l.collapsed_count, 1);
    EXPECT_NEAR(l.max_abs_shift, 2.0 / std::sqrt(1.0 + eps), 1e-6);
    EXPECT_NEAR(l.mean_abs_shift, 2.0 / std::sqrt(1.0 + eps) / 3.0, 1e-6);
    EXPECT_NEAR(l.ratio_min, eps / (1.0 + eps), 1e-6);
    EXPECT_NEAR(l.ratio_max, 1.0, 1e-6);
    EXPECT_EQ(g.samples, 4);
    EXPECT_EQ(g.outputs.rows, 4);
    EXPECT_EQ(g.outputs.values, 8);
    ASSERT_TRUE(g.outputs.argmax_agreement.has_value());
    EXPECT_GE(*g.outputs.argmax_agreement, 0.0);
    EXPECT_LE(*g.outputs.argmax_agreement, 1.0);
    EXPECT_GT(g.outputs.max_abs_difference, 0.0);  // channel 0 is off by 2 standard deviations
  }
}

TEST(Gap, ThresholdsAreOptions) {
  Known k = known_model();
  const nn::GapReport g = nn::measure_gap(
      *k.model, known_data(),
      {.shift_threshold = 3.0, .ratio_low = 1e-4, .dead_variance = 0.0, .collapsed_gamma = 0.0});
  EXPECT_EQ(g.layers[0].stale_count, 0);
  EXPECT_EQ(g.layers[0].dead_count, 1);  // variance exactly 0 <= 0
  EXPECT_EQ(g.layers[0].collapsed_count, 0);
}

TEST(Gap, LeavesTheModelUnchanged) {
  Known k = known_model();
  const std::vector<Tensor> before = k.model->get_weights();
  const Tensor x = known_data();
  const Tensor y_before = k.model->predict(x);
  nn::measure_gap(*k.model, x, {.batch_size = 3});
  const std::vector<Tensor> after = k.model->get_weights();
  ASSERT_EQ(before.size(), after.size());
  for (std::size_t i = 0; i < before.size(); ++i) EXPECT_EQ(before[i].vector(), after[i].vector()) << i;
  EXPECT_EQ(y_before.vector(), k.model->predict(x).vector());
}

TEST(Gap, MovingStatisticsOfThePopulationGiveNoGap) {
  // Moving statistics equal to the population's (biased variance): shifts 0, ratios 1;
  // one batch of everything in training mode then normalizes exactly as inference.
  Known k = known_model();
  k.bn->moving_mean()->value = Tensor(Shape{3}, {2.0f, 5.0f, 3.0f});
  k.bn->moving_variance()->value = Tensor(Shape{3}, {1.0f, 0.0f, 5.0f});
  const nn::GapReport g = nn::measure_gap(*k.model, known_data(), {.batch_size = 4});
  EXPECT_NEAR(g.layers[0].max_abs_shift, 0.0, 1e-6);
  EXPECT_NEAR(g.layers[0].ratio_min, 1.0, 1e-6);
  EXPECT_NEAR(g.layers[0].ratio_max, 1.0, 1e-6);
  EXPECT_EQ(g.layers[0].stale_count, 0);
  EXPECT_LT(g.outputs.max_abs_difference, 1e-5);
  EXPECT_EQ(*g.outputs.argmax_agreement, 1.0);
}

TEST(Gap, UnconvergedFromTheUpdateCount) {
  Known k = known_model();
  // momentum 0.99 (default), 10 estimated updates: 0.99^10 of the initial value remains.
  auto g = nn::measure_gap(*k.model, known_data(), {.training_steps = 10});
  EXPECT_TRUE(g.layers[0].unconverged);
  EXPECT_NE(g.layers[0].unconverged_reason.find("momentum^updates"), std::string::npos);
  g = nn::measure_gap(*k.model, known_data(), {.training_steps = 100000});
  EXPECT_FALSE(g.layers[0].unconverged);
  EXPECT_TRUE(g.layers[0].unconverged_reason.empty());
}

TEST(Gap, Refusals) {
  Known k = known_model();
  EXPECT_THROW(nn::measure_gap(*k.model, known_data(), {.batch_size = 0}), bnorm::ArgumentError);
  EXPECT_THROW(nn::measure_gap(*k.model, Tensor(Shape{0, 3}), {}), bnorm::ArgumentError);
  EXPECT_THROW(nn::measure_gap(*k.model, Tensor(Shape{4, 5}), {}), bnorm::ShapeError);
  nn::Sequential unbuilt(
      {std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.name = "lazy"})});
  EXPECT_THROW(nn::measure_gap(unbuilt, known_data(), {}), bnorm::StateError);
}
