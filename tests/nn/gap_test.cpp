// The training/inference gap (bnorm/nn/gap.hpp): shifts and variance ratios against
// their closed-form values on data with known population statistics, the dead, collapsed
// and stale flags, the output gap, and a model left exactly as it was.
#include "bnorm/nn/gap.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
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

// --- GapMonitor: the gap recorded during fit -----------------------------------------

namespace {

nn::Sequential monitored_model(double momentum = 0.99) {
  nn::reset_unique_names();
  return nn::Sequential({std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{6}),
                         std::make_shared<nn::Dense>(
                             8, nn::DenseOptions{.kernel_initializer = nn::Initializer::glorot_uniform(1)}),
                         std::make_shared<nn::BatchNormalization>(
                             nn::BatchNormalizationOptions{.momentum = momentum, .name = "bn"}),
                         std::make_shared<nn::Activation>("relu"),
                         std::make_shared<nn::Dense>(
                             1, nn::DenseOptions{.kernel_initializer = nn::Initializer::glorot_uniform(2)})});
}

Tensor monitor_data(std::int64_t rows, std::uint32_t seed) {
  Tensor x(Shape{rows, 6});
  std::uint32_t s = seed;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    s = s * 1664525u + 1013904223u;
    x[i] = 2.0f + static_cast<float>(s >> 8) / static_cast<float>(1u << 24);
  }
  return x;
}

Tensor monitor_targets(const Tensor& x) {
  Tensor y(Shape{x.dim(0), 1});
  for (std::int64_t i = 0; i < x.dim(0); ++i) y[i] = x.at({i, 0}) - 0.5f * x.at({i, 3});
  return y;
}

// Before the monitor: from epoch index 1 on, moves the moving means far from the data.
class CorruptMovingMean : public nn::Callback {
 public:
  explicit CorruptMovingMean(std::shared_ptr<nn::BatchNormalization> bn) : bn_(std::move(bn)) {}
  void on_epoch_end(nn::Model&, int epoch, const nn::Logs&) override {
    if (epoch < 1) return;
    Tensor& m = bn_->moving_mean()->value;
    for (std::int64_t c = 0; c < m.numel(); ++c)
      m[c] -= 10.0f * static_cast<float>(epoch);  // (below: relu keeps the outputs varied)
  }

 private:
  std::shared_ptr<nn::BatchNormalization> bn_;
};

}  // namespace

TEST(GapMonitor, RecordsEveryEpochAsMeasureGapMeasures) {
  auto model = monitored_model();
  model.compile("sgd", "mse");
  const Tensor x = monitor_data(64, 1), y = monitor_targets(x), held = monitor_data(40, 2);
  std::vector<std::string> lines;
  auto monitor = std::make_shared<nn::GapMonitor>(
      held, nn::GapMonitorOptions{.gap = {.batch_size = 16},
                                  .sink = [&](const std::string& l) { lines.push_back(l); }});
  model.fit(x, y, {.batch_size = 16, .epochs = 3, .verbose = 0, .callbacks = {monitor}});
  ASSERT_EQ(monitor->history().size(), 3u);
  for (int e = 0; e < 3; ++e) {
    const auto& r = monitor->history()[static_cast<std::size_t>(e)];
    EXPECT_EQ(r.epoch, e + 1);
    ASSERT_EQ(r.layers.size(), 1u);
    EXPECT_EQ(r.layers[0].name, "bn");
    EXPECT_TRUE(std::isfinite(r.output_gap));
    EXPECT_GE(r.layers[0].max_abs_shift, r.layers[0].mean_abs_shift);
    EXPECT_LE(r.layers[0].ratio_min, r.layers[0].ratio_max);
  }
  // The last record is the gap of the trained model.
  const nn::GapReport g = nn::measure_gap(model, held, {.batch_size = 16});
  const auto& last = monitor->history().back();
  EXPECT_EQ(last.output_gap, g.outputs.relative_difference);
  EXPECT_EQ(last.mean_abs_difference, g.outputs.mean_abs_difference);
  EXPECT_EQ(last.layers[0].mean_abs_shift, g.layers[0].mean_abs_shift);
  EXPECT_EQ(last.layers[0].max_abs_shift, g.layers[0].max_abs_shift);
  EXPECT_EQ(last.layers[0].stale_count, g.layers[0].stale_count);
  EXPECT_EQ(lines, monitor->warnings());
}

TEST(GapMonitor, LeavesFitsResultsBitwiseUnchanged) {
  const Tensor x = monitor_data(96, 3), y = monitor_targets(x), held = monitor_data(50, 4);
  auto plain = monitored_model();
  plain.compile("adam", "mse");
  const auto h0 = plain.fit(x, y, {.batch_size = 16, .epochs = 3, .verbose = 0, .shuffle = true, .seed = 7});
  auto monitored = monitored_model();
  monitored.compile("adam", "mse");
  auto monitor = std::make_shared<nn::GapMonitor>(
      held, nn::GapMonitorOptions{.gap = {.batch_size = 8}, .sink = [](const std::string&) {}});
  const auto h1 = monitored.fit(
      x, y,
      {.batch_size = 16, .epochs = 3, .verbose = 0, .shuffle = true, .seed = 7, .callbacks = {monitor}});
  EXPECT_EQ(monitor->history().size(), 3u);
  EXPECT_EQ(h0->history, h1->history);
  const auto a = plain.get_weights(), b = monitored.get_weights();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].vector(), b[i].vector()) << i;
  EXPECT_EQ(plain.optimizer()->iterations(), monitored.optimizer()->iterations());
}

TEST(GapMonitor, WarnsWhenTheGapGrowsAndWhenALayerIsStale) {
  // Momentum 0: the moving statistics are the last batch's, close to the population's
  // until CorruptMovingMean moves them after the second epoch.
  auto model = monitored_model(0.0);
  model.compile("sgd", "mse");
  const Tensor x = monitor_data(64, 5), y = monitor_targets(x);
  std::vector<std::string> lines;
  auto monitor = std::make_shared<nn::GapMonitor>(
      x, nn::GapMonitorOptions{.sink = [&](const std::string& l) { lines.push_back(l); }});
  auto corrupt = std::make_shared<CorruptMovingMean>(model.get_layer<nn::BatchNormalization>("bn"));
  model.fit(x, y, {.batch_size = 16, .epochs = 2, .verbose = 0, .callbacks = {corrupt, monitor}});
  const auto& h = monitor->history();
  ASSERT_EQ(h.size(), 2u);
  EXPECT_LT(h[0].layers[0].max_abs_shift, 0.5);
  EXPECT_GT(h[1].output_gap, 1.5 * h[0].output_gap);
  EXPECT_GT(h[1].output_gap, 0.05);
  EXPECT_GT(h[1].layers[0].max_abs_shift, 0.5);
  EXPECT_EQ(lines, monitor->warnings());
  bool grew = false, stale = false;
  for (const auto& l : lines) {
    EXPECT_EQ(l.find('\n'), std::string::npos) << l;
    EXPECT_EQ(l.rfind("epoch 2: ", 0), 0u) << l;  // nothing to say about the first epoch
    if (l.rfind("epoch 2: the train/inference gap grew from ", 0) == 0) grew = true;
    if (l.rfind("epoch 2: layer 'bn' has a moving mean ", 0) == 0) stale = true;
  }
  EXPECT_TRUE(grew) << ::testing::PrintToString(lines);
  EXPECT_TRUE(stale) << ::testing::PrintToString(lines);
}

TEST(GapMonitor, RefusesBadOptions) {
  const Tensor x = monitor_data(4, 6);
  EXPECT_THROW(nn::GapMonitor(Tensor(Shape{0, 6})), bnorm::ArgumentError);
  EXPECT_THROW(nn::GapMonitor(x, {.growth_factor = 0.5}), bnorm::ArgumentError);
  EXPECT_THROW(nn::GapMonitor(x, {.gap_floor = -1.0}), bnorm::ArgumentError);
}
