// PyTorch-convention module: errors that keep state, cumulative momentum, lazy modules.
#include "bnorm/nn/torch_batch_norm.hpp"

#include <gtest/gtest.h>

#include <limits>

#include "bnorm/core/error.hpp"
#include "test_util.hpp"

using bnorm::Shape;
using bnorm::Tensor;
using bnorm::test::random_tensor;
namespace nn = bnorm::nn;

namespace {
struct Snapshot {
  std::vector<float> rm, rv, w, b;
  std::int64_t counter;
  bool operator==(const Snapshot&) const = default;
};
Snapshot snap(const nn::TorchBatchNorm& m) {
  auto v = [](const Tensor* t) { return t ? t->vector() : std::vector<float>{}; };
  return {v(m.running_mean()), v(m.running_var()), v(m.weight()), v(m.bias()), m.num_batches_tracked()};
}
}  // namespace

TEST(TorchBatchNorm, DefaultsArePyTorchs) {
  auto m = nn::BatchNorm1d(3);
  EXPECT_TRUE(m.is_training());
  EXPECT_DOUBLE_EQ(m.eps(), 1e-5);
  EXPECT_DOUBLE_EQ(*m.momentum(), 0.1);
  EXPECT_EQ(m.running_var()->vector(), std::vector<float>(3, 1.0f));
  EXPECT_EQ(m.num_batches_tracked(), 0);
}

TEST(TorchBatchNorm, RankErrorsUsePyTorchsWording) {
  auto m1 = nn::BatchNorm1d(3);
  try {
    m1(Tensor(Shape{2, 3, 4, 5}));
    ADD_FAILURE();
  } catch (const bnorm::ShapeError& e) {
    EXPECT_EQ(e.expected(), "2D or 3D input");
    EXPECT_NE(e.received().find("4D input"), std::string::npos);
  }
  auto m2 = nn::BatchNorm2d(3);
  EXPECT_THROW(m2(Tensor(Shape{2, 3, 4})), bnorm::ShapeError);
  auto m3 = nn::BatchNorm3d(3);
  EXPECT_THROW(m3(Tensor(Shape{2, 3, 4, 4})), bnorm::ShapeError);
  EXPECT_THROW(m2(Tensor(Shape{2, 4, 4, 4})), bnorm::ShapeError);  // wrong channel count
}

TEST(TorchBatchNorm, OneValuePerChannelInTrainingFailsWithoutCountingTheBatch) {
  auto m = nn::BatchNorm1d(10);
  m(random_tensor(Shape{4, 10}, 1));
  const Snapshot before = snap(m);
  try {
    m(Tensor(Shape{1, 10, 1}));
    ADD_FAILURE();
  } catch (const bnorm::ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("more than 1 value per channel"), std::string::npos);
    EXPECT_NE(e.received().find("(1, 10, 1)"), std::string::npos);
  }
  // PyTorch increments num_batches_tracked before this check; bnorm keeps the counter.
  EXPECT_EQ(snap(m), before);
  m(random_tensor(Shape{1, 10, 2}, 2));  // two values per channel are enough
  m.eval();
  m(random_tensor(Shape{1, 10}, 3));     // eval accepts a batch of one
}

TEST(TorchBatchNorm, EpsilonIsValidatedWhereBatchStatisticsAreUsed) {
  auto m = nn::BatchNorm1d(2, {.eps = 0.0});
  EXPECT_THROW(m(random_tensor(Shape{4, 2}, 1)), bnorm::ArgumentError);
  m.eval();
  EXPECT_NO_THROW(m(random_tensor(Shape{4, 2}, 1)));
  auto neg = nn::BatchNorm1d(2, {.eps = -1e-5});
  neg.eval();
  EXPECT_THROW(neg(random_tensor(Shape{4, 2}, 1)), bnorm::ArgumentError);
}

TEST(TorchBatchNorm, MomentumOutsideUnitIntervalIsRejected) {
  EXPECT_THROW(nn::BatchNorm1d(2, {.momentum = 1.5}), bnorm::ArgumentError);
  auto m = nn::BatchNorm1d(2);
  EXPECT_THROW(m.set_momentum(-0.1), bnorm::ArgumentError);
  EXPECT_DOUBLE_EQ(*m.momentum(), 0.1);
}

TEST(TorchBatchNorm, CumulativeAverageWhenMomentumIsUnset) {
  // SEMANTICS 6.2 P5: batches [1,3], [2,6], [0,9]: running mean = mean of means = 3.5,
  // running var = mean of unbiased variances (2, 8, 40.5) = 16.8333.
  auto m = nn::BatchNorm1d(1, {.momentum = std::nullopt});
  for (auto pair : {std::pair{1.0f, 3.0f}, {2.0f, 6.0f}, {0.0f, 9.0f}}) {
    m(Tensor(Shape{2, 1}, std::vector<float>{pair.first, pair.second}));
  }
  EXPECT_NEAR((*m.running_mean())[0], 3.5, 1e-6);
  EXPECT_NEAR((*m.running_var())[0], 50.5 / 3.0, 1e-5);
  EXPECT_EQ(m.num_batches_tracked(), 3);
}

TEST(TorchBatchNorm, NonFiniteInputRaisesAndKeepsState) {
  auto m = nn::BatchNorm2d(2);
  m(random_tensor(Shape{2, 2, 3, 3}, 1));
  const Snapshot before = snap(m);
  Tensor x = random_tensor(Shape{2, 2, 3, 3}, 2);
  x[5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(m(x), bnorm::NumericalError);
  EXPECT_EQ(snap(m), before);
}

TEST(TorchBatchNorm, LazyModuleStaysLazyWhenItsFirstCallFails) {
  auto m = nn::LazyBatchNorm2d();
  EXPECT_FALSE(m.initialized());
  EXPECT_THROW(m(Tensor(Shape{1, 5, 1, 1})), bnorm::ShapeError);
  EXPECT_FALSE(m.initialized());
  m(random_tensor(Shape{2, 5, 3, 3}, 4));
  EXPECT_EQ(m.num_features(), 5);
  EXPECT_EQ(m.num_batches_tracked(), 1);
}

TEST(TorchBatchNorm, TrackingTurnedOffLaterStopsUpdatesButKeepsBuffers) {
  auto m = nn::BatchNorm1d(4);
  m.set_track_running_stats(false);
  const Snapshot before = snap(m);
  m(random_tensor(Shape{32, 4}, 7));
  EXPECT_EQ(snap(m), before);
  EXPECT_TRUE(m.has_running_stats());
}
