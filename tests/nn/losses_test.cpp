// Unit tests of bnorm/nn/losses.hpp and bnorm/nn/metrics.hpp: shapes and errors, values
// by hand, finite-difference gradients, metric state. (Keras agreement is in
// training_golden_test.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/losses.hpp"
#include "bnorm/nn/metrics.hpp"

using bnorm::ArgumentError;
using bnorm::Shape;
using bnorm::ShapeError;
using bnorm::Tensor;
namespace nn = bnorm::nn;

namespace {

Tensor T(Shape s, std::vector<float> v) {
  return Tensor(std::move(s), std::move(v));
}

Tensor uniform(Shape s, float lo, float hi, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  Tensor t(std::move(s));
  for (float& v : t.values()) v = d(gen);
  return t;
}

// Central differences of loss.value in double around y_pred (float inputs, h = 1e-3).
void expect_gradient_matches_finite_differences(const nn::Loss& loss, const Tensor& y_true,
                                                const Tensor& y_pred, double tol = 2e-3) {
  const nn::LossValue lv = loss.compute(y_true, y_pred);
  ASSERT_EQ(lv.grad.shape(), y_pred.shape());
  for (std::int64_t i = 0; i < y_pred.numel(); ++i) {
    const float h = 1e-3f;
    Tensor plus = y_pred, minus = y_pred;
    plus[i] += h;
    minus[i] -= h;
    const double fd = (static_cast<double>(loss.value(y_true, plus)) - loss.value(y_true, minus)) /
                      (static_cast<double>(plus[i]) - minus[i]);
    EXPECT_NEAR(lv.grad[i], fd, tol * std::max(1.0, std::fabs(fd))) << loss.name() << " element " << i;
  }
}

// ---------------------------------------------------------------- losses: shapes

TEST(Losses, ShapeMismatchThrowsShapeErrorNamingYTrue) {
  nn::MeanSquaredError mse;
  try {
    mse.compute(Tensor(Shape{4, 3}), Tensor(Shape{4, 2}));
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_EQ(e.argument(), "y_true");
    EXPECT_EQ(e.received(), "(4, 3)");
    EXPECT_NE(std::string(e.what()).find("mean_squared_error"), std::string::npos);
  }
  for (const char* name : {"mae", "binary_crossentropy", "categorical_crossentropy"}) {
    EXPECT_THROW(nn::make_loss(name)->compute(Tensor(Shape{2, 3}), Tensor(Shape{3, 2})), ShapeError) << name;
    EXPECT_THROW(nn::make_loss(name)->compute(Tensor(Shape{4, 1}), Tensor(Shape{1, 4})), ShapeError) << name;
  }
  try {
    mse.compute(Tensor(Shape{}), Tensor(Shape{}));
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_EQ(e.argument(), "y_pred");
  }
  EXPECT_THROW(mse.compute(Tensor(Shape{0, 3}), Tensor(Shape{0, 3})), ShapeError);
}

TEST(Losses, TrailingOneMayDifferAsInKeras) {
  nn::MeanSquaredError mse;
  const Tensor t = T({4}, {1, 2, 3, 4}), p = T({4, 1}, {1.5f, 2, 2, 5});
  const auto a = mse.compute(t, p);
  const auto b = mse.compute(t.reshaped(Shape{4, 1}), p);
  const auto c = mse.compute(p, t);  // y_true (4,1), y_pred (4,)
  EXPECT_FLOAT_EQ(a.value, (0.25f + 0 + 1 + 1) / 4);
  EXPECT_EQ(a.value, b.value);
  EXPECT_FLOAT_EQ(c.value, a.value);
  EXPECT_EQ(a.grad.shape(), Shape({4, 1}));
  EXPECT_EQ(c.grad.shape(), Shape({4}));
}

// ---------------------------------------------------------------- losses: values

TEST(Losses, MeanSquaredAndAbsoluteByHand) {
  const Tensor t = T({2, 2}, {0, 1, 2, 3}), p = T({2, 2}, {1, 1, 0, 4});
  const auto mse = nn::MeanSquaredError().compute(t, p);
  EXPECT_FLOAT_EQ(mse.value, ((1 + 0) / 2.0f + (4 + 1) / 2.0f) / 2);
  EXPECT_EQ(mse.grad.vector(), (std::vector<float>{0.5f, 0.0f, -1.0f, 0.5f}));  // 2 (p - t) / 4
  const auto mae = nn::MeanAbsoluteError().compute(t, p);
  EXPECT_FLOAT_EQ(mae.value, ((1 + 0) / 2.0f + (2 + 1) / 2.0f) / 2);
  EXPECT_EQ(mae.grad.vector(),
            (std::vector<float>{0.25f, 0.0f, -0.25f, 0.25f}));  // sign(p - t) / 4, 0 at p = t
}

TEST(Losses, BinaryCrossentropyClipsProbabilities) {
  nn::BinaryCrossentropy bce;
  const auto lv = bce.compute(T({1, 2}, {1, 0}), T({1, 2}, {0, 1}));
  // Both elements hit the clip: -log(1e-7) and -log(1 - float32(1 - 1e-7)) = -log(2^-23).
  const double want =
      (-std::log(1e-7) - std::log(1.0 - static_cast<double>(static_cast<float>(1.0 - 1e-7)))) / 2;
  EXPECT_NEAR(lv.value, want, 1e-5);
  EXPECT_EQ(lv.grad.vector(), (std::vector<float>{0.0f, 0.0f}));
  const auto mid = bce.compute(T({1}, {1}), T({1}, {0.5f}));
  EXPECT_FLOAT_EQ(mid.value, std::log(2.0f));
  EXPECT_FLOAT_EQ(mid.grad[0], -2.0f);
}

TEST(Losses, FromLogitsAgreesWithProbabilities) {
  const Tensor logits = uniform(Shape{3, 4}, -3, 3, 1);
  Tensor probs(logits.shape()), soft(logits.shape());
  for (std::int64_t i = 0; i < logits.numel(); ++i) probs[i] = 1.0f / (1.0f + std::exp(-logits[i]));
  for (std::int64_t r = 0; r < 3; ++r) {
    float s = 0;
    for (int j = 0; j < 4; ++j) s += std::exp(logits[r * 4 + j]);
    for (int j = 0; j < 4; ++j) soft[r * 4 + j] = std::exp(logits[r * 4 + j]) / s;
  }
  const Tensor bits = T({3, 4}, {1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 1});
  EXPECT_NEAR(nn::BinaryCrossentropy(true).value(bits, logits), nn::BinaryCrossentropy().value(bits, probs),
              1e-5);
  const Tensor onehot = T({3, 4}, {0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1});
  EXPECT_NEAR(nn::CategoricalCrossentropy(true).value(onehot, logits),
              nn::CategoricalCrossentropy().value(onehot, soft), 1e-5);
  const Tensor labels = T({3}, {2, 0, 3});
  EXPECT_NEAR(nn::SparseCategoricalCrossentropy(true).value(labels, logits),
              nn::SparseCategoricalCrossentropy().value(labels, soft), 1e-5);
  EXPECT_NEAR(nn::SparseCategoricalCrossentropy().value(labels, soft),
              nn::CategoricalCrossentropy().value(onehot, soft), 1e-6);
}

TEST(Losses, GradientsMatchFiniteDifferences) {
  const Tensor t_real = uniform(Shape{3, 4}, -1, 1, 2);
  const Tensor p_real = uniform(Shape{3, 4}, -1, 1, 3);
  expect_gradient_matches_finite_differences(nn::MeanSquaredError(), t_real, p_real);
  const Tensor t_bits = T({3, 4}, {1, 0, 0, 1, 0, 1, 1, 0, 0.25f, 0.5f, 1, 1});
  const Tensor p_prob = uniform(Shape{3, 4}, 0.1f, 0.9f, 4);
  expect_gradient_matches_finite_differences(nn::BinaryCrossentropy(), t_bits, p_prob);
  expect_gradient_matches_finite_differences(nn::BinaryCrossentropy(true), t_bits, p_real);
  const Tensor t_soft = T({3, 4}, {0, 0, 1, 0, 0.5f, 0.5f, 0, 0, 0.1f, 0.2f, 0.3f, 0.4f});
  expect_gradient_matches_finite_differences(nn::CategoricalCrossentropy(), t_soft,
                                             p_prob);  // rows not normalized
  expect_gradient_matches_finite_differences(nn::CategoricalCrossentropy(true), t_soft, p_real);
  const Tensor labels = T({3, 1}, {2, 0, 3});
  expect_gradient_matches_finite_differences(nn::SparseCategoricalCrossentropy(), labels, p_prob);
  expect_gradient_matches_finite_differences(nn::SparseCategoricalCrossentropy(true), labels, p_real);
}

TEST(Losses, SparseLabelsAreValidated) {
  nn::SparseCategoricalCrossentropy scce;
  const Tensor p = uniform(Shape{2, 3}, 0.1f, 0.9f, 5);
  EXPECT_NO_THROW(scce.compute(T({2}, {0, 2}), p));
  EXPECT_NO_THROW(scce.compute(T({2, 1}, {0, 2}), p));
  for (float bad : {3.0f, -1.0f, 1.5f, std::nanf("")}) {
    try {
      scce.compute(T({2}, {0, bad}), p);
      ADD_FAILURE() << "label " << bad << " accepted";
    } catch (const ShapeError&) {
      ADD_FAILURE() << "label " << bad << ": ShapeError, expected ArgumentError";
    } catch (const ArgumentError& e) {
      EXPECT_EQ(e.argument(), "y_true");
    }
  }
  EXPECT_THROW(scce.compute(T({2, 3}, {0, 1, 0, 0, 0, 1}), p), ShapeError);  // one-hot: use categorical
  EXPECT_THROW(scce.compute(T({3}, {0, 1, 2}), p), ShapeError);
}

TEST(Losses, MakeLossNamesAndErrors) {
  EXPECT_EQ(nn::make_loss("mse")->name(), "mse");
  EXPECT_EQ(nn::make_loss("mean_squared_error")->name(), "mean_squared_error");
  EXPECT_EQ(nn::make_loss("MeanSquaredError")->name(), "mean_squared_error");
  EXPECT_EQ(nn::make_loss("mae")->name(), "mae");
  EXPECT_NE(dynamic_cast<nn::BinaryCrossentropy*>(nn::make_loss("binary_crossentropy").get()), nullptr);
  EXPECT_NE(dynamic_cast<nn::BinaryCrossentropy*>(nn::make_loss("bce").get()), nullptr);
  EXPECT_NE(dynamic_cast<nn::CategoricalCrossentropy*>(nn::make_loss("categorical_crossentropy").get()),
            nullptr);
  auto sparse = nn::make_loss("sparse_categorical_crossentropy");
  ASSERT_NE(dynamic_cast<nn::SparseCategoricalCrossentropy*>(sparse.get()), nullptr);
  EXPECT_FALSE(dynamic_cast<nn::SparseCategoricalCrossentropy*>(sparse.get())->from_logits());
  EXPECT_THROW(nn::make_loss("hinge"), ArgumentError);
  EXPECT_THROW(nn::make_loss("crossentropy"), ArgumentError);
}

TEST(Losses, CustomElementwiseLossIsSumOverNumel) {
  auto loss = nn::Loss::custom(
      "sq", [](float t, float p) { return (t - p) * (t - p); },
      [](float t, float p) { return -2.0f * (t - p); });
  EXPECT_EQ(loss->name(), "sq");
  const Tensor t = T({2, 2}, {0, 1, 2, 3}), p = T({2, 2}, {1, 1, 0, 4});
  const auto lv = loss->compute(t, p);
  EXPECT_FLOAT_EQ(lv.value, (1 + 0 + 4 + 1) / 4.0f);
  EXPECT_EQ(lv.grad.vector(), (std::vector<float>{0.5f, 0.0f, -1.0f, 0.5f}));
  EXPECT_FLOAT_EQ(lv.value, nn::MeanSquaredError().value(t, p));
  EXPECT_THROW(loss->compute(Tensor(Shape{2, 2}), Tensor(Shape{2, 3})), ShapeError);
  EXPECT_THROW(nn::Loss::custom("x", nullptr, [](float, float) { return 0.0f; }), ArgumentError);
}

TEST(Losses, FromFunctionChecksTheGradientShape) {
  auto good = nn::Loss::from_function("good", [](const Tensor&, const Tensor& p) {
    return nn::LossValue{1.5f, Tensor(p.shape(), 2.0f)};
  });
  const auto lv = good->compute(Tensor(Shape{2}), Tensor(Shape{2}));
  EXPECT_EQ(lv.value, 1.5f);
  EXPECT_EQ(lv.grad.vector(), (std::vector<float>{2.0f, 2.0f}));
  auto bad = nn::Loss::from_function("bad", [](const Tensor&, const Tensor&) {
    return nn::LossValue{1.0f, Tensor(Shape{3})};
  });
  EXPECT_THROW(bad->compute(Tensor(Shape{2}), Tensor(Shape{2})), ShapeError);
  EXPECT_THROW(nn::Loss::from_function("none", nullptr), ArgumentError);
}

// ---------------------------------------------------------------- metrics

TEST(Metrics, BinaryAccuracyStrictThresholdAndState) {
  nn::BinaryAccuracy acc;
  EXPECT_EQ(acc.name(), "binary_accuracy");
  EXPECT_EQ(acc.result(), 0.0f);                                                   // divide_no_nan
  acc.update_state(T({4, 1}, {1, 0, 1, 0}), T({4, 1}, {0.9f, 0.5f, 0.5f, 0.1f}));  // 0.5 -> predicted 0
  EXPECT_EQ(acc.result(), 0.75f);
  acc.update_state(T({4}, {1, 1, 1, 1}), T({4, 1}, {1, 1, 1, 1}));  // (B,) with (B,1)
  EXPECT_EQ(acc.result(), 7.0f / 8.0f);
  EXPECT_EQ(acc.count(), 8.0f);
  const float total = acc.total();
  EXPECT_THROW(acc.update_state(T({3, 1}, {1, 1, 1}), T({4, 1}, {1, 1, 1, 1})), ShapeError);
  EXPECT_EQ(acc.total(), total);
  EXPECT_EQ(acc.count(), 8.0f);
  acc.reset_state();
  EXPECT_EQ(acc.result(), 0.0f);
  EXPECT_EQ(acc.count(), 0.0f);
  nn::BinaryAccuracy strict(0.7f);
  strict.update_state(T({2}, {1, 0}), T({2}, {0.7f, 0.7f}));
  EXPECT_EQ(strict.result(), 0.5f);
}

TEST(Metrics, MultiLabelIsAPerSampleMean) {
  nn::BinaryAccuracy acc;
  acc.update_state(T({2, 2}, {1, 1, 0, 0}), T({2, 2}, {1, 0, 0, 0}));  // samples 0.5 and 1
  EXPECT_EQ(acc.result(), 0.75f);
  EXPECT_EQ(acc.count(), 2.0f);
}

TEST(Metrics, CategoricalAndSparse) {
  nn::CategoricalAccuracy cat;
  // Ties take the first index; -0.0 counts below +0.0 (Keras's TensorFlow argmax).
  cat.update_state(T({3, 3}, {0, 1, 0, 1, 0, 0, 0, 1, 0}),
                   T({3, 3}, {0.2f, 0.4f, 0.4f, 0.5f, 0.5f, 0, -0.0f, 0.0f, -1}));
  EXPECT_FLOAT_EQ(cat.result(), 1.0f);
  EXPECT_THROW(cat.update_state(T({3}, {0, 1, 2}), Tensor(Shape{3, 3})), ShapeError);
  nn::SparseCategoricalAccuracy sp;
  sp.update_state(T({3}, {1, 0, 2}), T({3, 3}, {0.2f, 0.4f, 0.4f, 0.5f, 0.5f, 0, 0, 1, 0}));
  EXPECT_FLOAT_EQ(sp.result(), 2.0f / 3.0f);
  sp.update_state(T({1, 1}, {2}), T({1, 3}, {0, 0, 1}));
  EXPECT_FLOAT_EQ(sp.result(), 3.0f / 4.0f);
  EXPECT_THROW(sp.update_state(T({3, 3}, {0, 1, 0, 1, 0, 0, 0, 1, 0}), Tensor(Shape{3, 3})), ShapeError);
}

TEST(Metrics, MeanWeightedByBatchSize) {
  nn::Mean loss("loss");
  EXPECT_EQ(loss.class_name(), "Mean");
  loss.update_state(1.0f, 32.0f);
  loss.update_state(4.0f, 8.0f);
  EXPECT_FLOAT_EQ(loss.result(), (32.0f + 32.0f) / 40.0f);
  EXPECT_THROW(loss.update_state(1.0f, -1.0f), ArgumentError);
  EXPECT_EQ(loss.count(), 40.0f);
  loss.reset_state();
  loss.update_state(0.25f);
  EXPECT_EQ(loss.result(), 0.25f);
}

TEST(Metrics, MakeMetricResolvesAccuracyLikeKeras3) {
  auto cls = [](const std::unique_ptr<nn::MeanMetricWrapper>& m) { return m->class_name(); };
  EXPECT_EQ(cls(nn::make_metric("accuracy", Shape{8, 1}, Shape{8, 1})), "BinaryAccuracy");
  EXPECT_EQ(cls(nn::make_metric("accuracy", Shape{8}, Shape{8, 1})), "BinaryAccuracy");
  EXPECT_EQ(cls(nn::make_metric("accuracy", Shape{8}, Shape{8, 3})), "SparseCategoricalAccuracy");
  EXPECT_EQ(cls(nn::make_metric("acc", Shape{8, 1}, Shape{8, 3})), "SparseCategoricalAccuracy");
  EXPECT_EQ(cls(nn::make_metric("accuracy", Shape{8, 3}, Shape{8, 3})), "CategoricalAccuracy");
  EXPECT_EQ(nn::make_metric("acc", Shape{8, 3}, Shape{8, 3})->name(), "acc");
  EXPECT_EQ(cls(nn::make_metric("binary_accuracy", Shape{8, 3}, Shape{8, 3})), "BinaryAccuracy");
  EXPECT_EQ(nn::make_metric("binary_accuracy", Shape{8, 3}, Shape{8, 3})->name(), "binary_accuracy");
  // From the loss when y_true's shape is not known.
  EXPECT_EQ(cls(nn::make_metric("accuracy", std::string("binary_crossentropy"), Shape{8, 1})),
            "BinaryAccuracy");
  EXPECT_EQ(cls(nn::make_metric("accuracy", std::string("binary_crossentropy"), Shape{8, 3})),
            "CategoricalAccuracy");
  EXPECT_EQ(cls(nn::make_metric("accuracy", std::string("sparse_categorical_crossentropy"), Shape{8, 3})),
            "SparseCategoricalAccuracy");
  EXPECT_EQ(cls(nn::make_metric("accuracy", std::string("categorical_crossentropy"), Shape{8, 3})),
            "CategoricalAccuracy");
  EXPECT_THROW(nn::make_metric("auc", Shape{8, 1}, Shape{8, 1}), ArgumentError);
  EXPECT_THROW(nn::make_metric("accuracy", Shape{}, Shape{8, 1}), ShapeError);
}

}  // namespace
