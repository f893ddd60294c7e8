// Models: functional and Sequential construction, modes, fit/evaluate/predict, frozen
// batch normalization inside fit, collected updates, the gradient tape, errors.
#include "bnorm/nn/model.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/updates.hpp"
#include "test_util.hpp"

using bnorm::Shape;
using bnorm::Tensor;
using bnorm::test::random_tensor;
namespace nn = bnorm::nn;

namespace {

nn::Sequential small_model(bool frozen_bn = false) {
  nn::reset_unique_names();
  return nn::Sequential({std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{10}),
                         std::make_shared<nn::Dense>(16, nn::DenseOptions{.kernel_initializer = nn::Initializer::glorot_uniform(1)}),
                         std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.trainable = !frozen_bn, .name = "bn"}),
                         std::make_shared<nn::Activation>("relu"),
                         std::make_shared<nn::Dense>(1, nn::DenseOptions{.kernel_initializer = nn::Initializer::glorot_uniform(2)})});
}

}  // namespace

TEST(Model, SequentialBuildsFromInputLayerWithKerasNamesAndSummary) {
  auto model = small_model();
  EXPECT_EQ(model.layers().size(), 4u);
  EXPECT_EQ(model.layers()[0]->name(), "dense");
  EXPECT_EQ(model.layers()[3]->name(), "dense_1");
  EXPECT_EQ(model.weights().size(), 8u);          // kernel, bias, gamma, beta, mean, var, kernel, bias
  EXPECT_EQ(model.trainable_weights().size(), 6u);
  EXPECT_EQ(model.non_trainable_weights().size(), 2u);
  const std::string s = model.summary();
  EXPECT_NE(s.find("bn (BatchNormalization)"), std::string::npos) << s;
  EXPECT_NE(s.find("(None, 16)"), std::string::npos) << s;
  EXPECT_NE(s.find("Total params: 257"), std::string::npos) << s;  // 176 + 64 + 17
  EXPECT_NE(s.find("Non-trainable params: 32"), std::string::npos) << s;
}

TEST(Model, FunctionalModelLikeArticle001) {
  nn::reset_unique_names();
  auto bn = std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.epsilon = 1e-9, .trainable = false});
  auto z = nn::Input({5});
  const auto input = z;
  z = (*bn)(z);
  nn::Model model(input, z);
  const Tensor x = random_tensor(Shape{3, 5}, 1, 5.0f, 0.3f);
  const Tensor first = model.predict(x);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(model.predict(x).vector(), first.vector());
  EXPECT_EQ(first.vector(), x.vector());  // moving statistics 0 / 1, epsilon 1e-9
  EXPECT_EQ(model.get_layer<nn::BatchNormalization>("batch_normalization")->name(), "batch_normalization");
  EXPECT_THROW(model.get_layer("nope"), bnorm::ArgumentError);
  EXPECT_THROW(model.predict(Tensor(Shape{3, 4})), bnorm::ShapeError);
}

TEST(Model, FitLowersTheLossAndUpdatesMovingStatistics) {
  auto model = small_model();
  model.compile("adam", "mse");
  const Tensor x = random_tensor(Shape{64, 10}, 3, 2.0f, 1.0f);
  Tensor y(Shape{64, 1});
  for (std::int64_t i = 0; i < 64; ++i) y[i] = x.at({i, 0}) - 2.0f * x.at({i, 3});
  auto history = model.fit(x, y, {.batch_size = 16, .epochs = 30, .verbose = 0});
  ASSERT_EQ(history->history["loss"].size(), 30u);
  EXPECT_LT(history->history["loss"].back(), 0.5 * history->history["loss"].front());
  auto bn = model.get_layer<nn::BatchNormalization>("bn");
  EXPECT_NE(bn->moving_mean()->value.vector(), std::vector<float>(16, 0.0f));
  const auto logs = model.evaluate(x, y);
  EXPECT_TRUE(std::isfinite(logs.at("loss")));
}

TEST(Model, FrozenBatchNormStaysFrozenInsideFit) {
  auto model = small_model(/*frozen_bn=*/true);
  model.compile("sgd", "mse");
  auto bn = model.get_layer<nn::BatchNormalization>("bn");
  const auto before = bn->get_weights();
  const Tensor x = random_tensor(Shape{32, 10}, 4);
  const Tensor y = random_tensor(Shape{32, 1}, 5);
  model.fit(x, y, {.batch_size = 8, .epochs = 2, .verbose = 0});
  const auto after = bn->get_weights();
  for (std::size_t i = 0; i < before.size(); ++i) EXPECT_EQ(after[i].vector(), before[i].vector()) << i;
}

TEST(Model, FailedTrainingStepChangesNothing) {
  auto model = small_model();
  model.compile("adam", "mse");
  const auto before = model.get_weights();
  EXPECT_THROW(model.train_on_batch(random_tensor(Shape{8, 10}, 6), Tensor(Shape{8, 3})), bnorm::ShapeError);
  const auto after = model.get_weights();
  for (std::size_t i = 0; i < before.size(); ++i) EXPECT_EQ(after[i].vector(), before[i].vector()) << i;
  EXPECT_EQ(model.optimizer()->iterations(), 0);
}

TEST(Model, UncompiledFitIsAStateError) {
  auto model = small_model();
  EXPECT_THROW(model.fit(Tensor(Shape{4, 10}), Tensor(Shape{4, 1})), bnorm::StateError);
}

TEST(Model, BareCallIsInferenceTrainingCallUpdates) {
  auto model = small_model();
  auto bn = model.get_layer<nn::BatchNormalization>("bn");
  const Tensor x = random_tensor(Shape{8, 10}, 7, 3.0f, 2.0f);
  const Tensor a = model(x);
  EXPECT_EQ(bn->moving_mean()->value.vector(), std::vector<float>(16, 0.0f));
  model(x, true);
  EXPECT_NE(bn->moving_mean()->value.vector(), std::vector<float>(16, 0.0f));
  EXPECT_NE(model(x).vector(), a.vector());
}

TEST(Model, TapeGradientsMatchFiniteDifferences) {
  auto model = small_model();
  const Tensor x = random_tensor(Shape{6, 10}, 8);
  const Tensor dy = random_tensor(Shape{6, 1}, 9);
  nn::GradientTape tape;
  nn::UpdateCollection discard_updates;
  model.call(x, true, &tape, &discard_updates);
  auto vars = model.trainable_weights();
  const auto grads = tape.gradient(dy, vars);
  discard_updates.discard();
  auto loss = [&] {
    nn::UpdateCollection u;
    const double l = bnorm::test::dot(model.call(x, true, nullptr, &u), dy);
    u.discard();
    return l;
  };
  const float h = 1e-2f;
  for (std::size_t v = 0; v < vars.size(); ++v) {
    for (std::int64_t i = 0; i < vars[v]->value.numel(); i += 5) {
      const float keep = vars[v]->value[i];
      vars[v]->value[i] = keep + h;
      const double lp = loss();
      vars[v]->value[i] = keep - h;
      const double lm = loss();
      vars[v]->value[i] = keep;
      const double fd = (lp - lm) / (2.0 * h);
      EXPECT_NEAR(grads[v][i], fd, 5e-3 * (1.0 + std::fabs(fd))) << vars[v]->name << "[" << i << "]";
    }
  }
}

TEST(Model, CollectedUpdatesOfMicroBatchesEqualOneCallOnTheWholeBatch) {
  auto a = small_model();
  auto b = small_model();
  b.set_weights(a.get_weights());
  const Tensor x = random_tensor(Shape{12, 10}, 10, 2.0f, 1.0f);
  a(x, true);  // one call on the whole batch
  nn::UpdateCollection updates;
  const auto all = x.vector();
  for (int part = 0; part < 3; ++part) {
    Tensor xb(Shape{4, 10}, std::vector<float>(all.begin() + part * 40, all.begin() + (part + 1) * 40));
    b.call(xb, true, nullptr, &updates);
  }
  EXPECT_EQ(updates.pending(), 1u);
  auto bn_b = b.get_layer<nn::BatchNormalization>("bn");
  EXPECT_EQ(bn_b->moving_mean()->value.vector(), std::vector<float>(16, 0.0f));  // not applied yet
  updates.apply();
  auto bn_a = a.get_layer<nn::BatchNormalization>("bn");
  for (std::int64_t c = 0; c < 16; ++c) {
    EXPECT_NEAR(bn_b->moving_mean()->value[c], bn_a->moving_mean()->value[c], 1e-6);
    EXPECT_NEAR(bn_b->moving_variance()->value[c], bn_a->moving_variance()->value[c], 1e-6);
  }
}

TEST(Model, EarlyStoppingStopsAndHistoryRecordsValidation) {
  auto model = small_model();
  model.compile(std::make_shared<nn::SGD>(nn::SGDOptions{.learning_rate = 0.0}), std::shared_ptr<nn::Loss>(nn::make_loss("mse")));
  const Tensor x = random_tensor(Shape{40, 10}, 11);
  const Tensor y = random_tensor(Shape{40, 1}, 12);
  auto stop = std::make_shared<nn::EarlyStopping>(nn::EarlyStoppingOptions{.monitor = "val_loss", .patience = 1});
  auto history = model.fit(x, y, {.batch_size = 8, .epochs = 20, .verbose = 0, .validation_split = 0.25, .callbacks = {stop}});
  EXPECT_LT(history->epoch.size(), 20u);  // learning rate 0: val_loss never improves after epoch 1
  EXPECT_EQ(history->history.count("val_loss"), 1u);
}

// A training step needs no input gradient: GradientTape::variable_gradients gives
// gradient()'s variable gradients bit for bit, without the first Dense layer's dx (and
// past a frozen first Dense, starting at the next layer with trainable weights), and
// leaves input_gradient() empty.
TEST(Model, VariableGradientsAreGradientsWithoutTheInputGradient) {
  for (const bool freeze_first : {false, true}) {
    SCOPED_TRACE(freeze_first ? "first Dense frozen" : "all trainable");
    auto model = small_model();
    if (freeze_first)
      for (const auto& layer : model.layers())
        if (layer->class_name() == "Dense") {
          layer->set_trainable(false);
          break;
        }
    const Tensor x = random_tensor(Shape{6, 10}, 18);
    const Tensor dy = random_tensor(Shape{6, 1}, 19);
    nn::GradientTape full, weights_only;
    nn::UpdateCollection u1, u2;
    model.call(x, true, &full, &u1);
    model.call(x, true, &weights_only, &u2);
    u1.discard();
    u2.discard();
    const nn::Gradients want = full.gradient(dy);
    const nn::Gradients got = weights_only.variable_gradients(dy);
    EXPECT_EQ(full.input_gradient().shape(), x.shape());
    EXPECT_EQ(weights_only.input_gradient().numel(), 0);
    std::size_t compared = 0;
    for (const nn::Variable* v : model.trainable_weights()) {
      ASSERT_TRUE(want.count(v) == 1 && got.count(v) == 1) << v->name;
      const Tensor& a = want.at(v);
      const Tensor& b = got.at(v);
      ASSERT_EQ(a.shape(), b.shape()) << v->name;
      for (std::int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a[i], b[i]) << v->name << "[" << i << "]";
      ++compared;
    }
    EXPECT_EQ(compared, freeze_first ? 4u : 6u);  // kernels, biases, gamma, beta
  }
  nn::GradientTape empty;
  EXPECT_THROW(empty.variable_gradients(Tensor(Shape{1, 1})), bnorm::StateError);
}

