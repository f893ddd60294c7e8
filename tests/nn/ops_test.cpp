// tf.nn.moments / tf.nn.batch_normalization counterparts: shapes, errors, accuracy.
#include "bnorm/nn/ops.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "bnorm/core/error.hpp"
#include "test_util.hpp"

using bnorm::Shape;
using bnorm::Tensor;
namespace nn = bnorm::nn;

TEST(Moments, ShapesWithAndWithoutKeepdims) {
  const Tensor x = bnorm::test::random_tensor(Shape{2, 3, 4, 5}, 1);
  EXPECT_EQ(nn::moments(x, {0, 1, 2}).mean.shape(), (Shape{5}));
  EXPECT_EQ(nn::moments(x, {0, 1, 2}, true).variance.shape(), (Shape{1, 1, 1, 5}));
  EXPECT_EQ(nn::moments(x, {0, 2}).mean.shape(), (Shape{3, 5}));
  EXPECT_EQ(nn::moments(x, {-1}).mean.shape(), (Shape{2, 3, 4}));
}

TEST(Moments, NonContiguousAxesAgreeWithDirectSums) {
  const Tensor x = bnorm::test::random_tensor(Shape{4, 3, 5}, 2, 2.0f, 1.0f);
  const auto m = nn::moments(x, {0, 2});  // per middle index
  for (int j = 0; j < 3; ++j) {
    double s = 0, s2 = 0;
    for (int i = 0; i < 4; ++i)
      for (int k = 0; k < 5; ++k) s += x.at({i, j, k});
    const double mean = s / 20;
    for (int i = 0; i < 4; ++i)
      for (int k = 0; k < 5; ++k) s2 += (x.at({i, j, k}) - mean) * (x.at({i, j, k}) - mean);
    EXPECT_NEAR(m.mean[j], mean, 1e-6);
    EXPECT_NEAR(m.variance[j], s2 / 20, 1e-5);
  }
}

TEST(Moments, AccurateWithAnOffsetOfTenThousandSpreads) {
  // x = 1e4 + small values: a one-pass E[x^2] - E[x]^2 in float would lose everything.
  const Tensor x = bnorm::test::random_tensor(Shape{20000, 2}, 3, 1.0f, 1e4f);
  const auto m = nn::moments(x, {0});
  for (int c = 0; c < 2; ++c) {
    double s = 0, s2 = 0;
    for (int i = 0; i < 20000; ++i) s += x.at({i, c});
    const double mean = s / 20000;
    for (int i = 0; i < 20000; ++i) s2 += (x.at({i, c}) - mean) * (x.at({i, c}) - mean);
    const double var = s2 / 20000;
    EXPECT_LT(std::fabs(m.mean[c] - mean), 0.01 * std::sqrt(var));
    EXPECT_LT(std::fabs(m.variance[c] - var) / var, 1e-4);
  }
}

TEST(Moments, BadAxesAreNamed) {
  const Tensor x(Shape{2, 3});
  try {
    nn::moments(x, {0, 2});
    ADD_FAILURE();
  } catch (const bnorm::ArgumentError& e) {
    EXPECT_EQ(e.argument(), "axes");
    EXPECT_EQ(e.received(), "2");
  }
  EXPECT_THROW(nn::moments(x, {1, -1}), bnorm::ArgumentError);
}

TEST(BatchNormalizationOp, BroadcastsKeepdimsAndVectorArguments) {
  const Tensor x = bnorm::test::random_tensor(Shape{2, 3, 4}, 4);
  const auto m = nn::moments(x, {0, 1}, true);  // (1, 1, 4)
  const Tensor a = nn::batch_normalization(x, m.mean, m.variance, std::nullopt, std::nullopt, 1e-3f);
  const Tensor b = nn::batch_normalization(x, m.mean.reshaped(Shape{4}), m.variance.reshaped(Shape{4}),
                                           std::nullopt, std::nullopt, 1e-3f);
  EXPECT_EQ(a.vector(), b.vector());
  // Scalars broadcast everywhere.
  const Tensor s = nn::batch_normalization(x, Tensor(Shape{}, 1.0f), Tensor(Shape{}, 4.0f),
                                           Tensor(Shape{1}, 2.0f), std::nullopt, 0.0f);
  for (std::int64_t i = 0; i < x.numel(); ++i) EXPECT_NEAR(s[i], (x[i] - 1.0f) / 2.0f + 2.0f, 1e-6);
}

TEST(BatchNormalizationOp, RejectsArgumentsThatDoNotBroadcast) {
  const Tensor x(Shape{2, 3});
  try {
    nn::batch_normalization(x, Tensor(Shape{4}), Tensor(Shape{3}), std::nullopt, std::nullopt, 1e-3f);
    ADD_FAILURE();
  } catch (const bnorm::ShapeError& e) {
    EXPECT_EQ(e.argument(), "mean");
    EXPECT_EQ(e.received(), "(4,)");
  }
  EXPECT_THROW(nn::batch_normalization(x, Tensor(Shape{3}), Tensor(Shape{3}), std::nullopt, std::nullopt, -1.0f),
               bnorm::ArgumentError);
}
