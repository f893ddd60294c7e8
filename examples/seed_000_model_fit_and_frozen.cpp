// seed_000_model_fit_and_frozen: in a Keras model, fit() moves a trainable batch
// normalization layer's moving statistics; a layer with trainable=False keeps them exactly,
// under predict() AND under fit().
//
// Mirrors article 000 ("Why doesn't tf.keras.layers.BatchNormalization with trainable=False
// update its moving mean and variance?"), Examples 1 and 2 (Example 3 is
// seed_000_frozen_layer_no_decay.cpp):
//   Example 1:  model = tf.keras.Sequential([
//                   tf.keras.layers.BatchNormalization(name='bn_layer'), tf.keras.layers.Dense(10)])
//               model.compile(optimizer=tf.keras.optimizers.Adam(), loss='mse')
//               x_train = tf.random.normal((100, 10)); y_train = tf.random.normal((100, 10))
//               model.fit(x_train, y_train, epochs=10)
//               bn_layer = model.get_layer('bn_layer'); print(bn_layer.moving_mean.numpy())
//   Example 2:  tf.keras.layers.BatchNormalization(name='bn_layer', trainable=False), Dense(10)
//               model.load_weights("my_model_weights.h5")
//               predictions = model.predict(x_test)      # "No change expected"
// Both examples behave as the article says. Its explanation does not (SEMANTICS.md
// section 7, item 1): the moving statistics are not "dependent on gradient updates" (they
// are assigned in the forward pass of a training call: below, one model(x, training=True)
// with no optimizer moves them), and a frozen layer's statistics do not "decay towards
// zero": in TF2 Keras 2 and Keras 3 it runs in inference mode even inside fit() and assigns
// nothing. Differences: tf.random.normal is replaced by a fixed generator; bnorm cannot load
// Keras .h5 files yet (a later issue), so Example 2 sets "pretrained" BN weights with
// set_weights instead of load_weights.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/model.hpp"
#include "example_checks.hpp"

namespace nn = bnorm::nn;
using bnorm::Shape;
using bnorm::Tensor;
using example::check;
using example::normal;
using example::max_abs_diff;
using example::str;

namespace {


nn::BatchNormalizationOptions bn_options(bool trainable) {
  nn::BatchNormalizationOptions o;
  o.name = "bn_layer";
  o.trainable = trainable;
  return o;
}

}  // namespace

int main() try {
  std::printf("Example 1: Sequential([BatchNormalization(name='bn_layer'), Dense(10)]), fit 10 epochs\n");
  nn::Sequential model(
      {std::make_shared<nn::BatchNormalization>(bn_options(true)), std::make_shared<nn::Dense>(10)});
  model.compile(std::make_shared<nn::Adam>(), std::shared_ptr<nn::Loss>(nn::make_loss("mse")));
  const Tensor x_train = normal(Shape{100, 10}, 1), y_train = normal(Shape{100, 10}, 2);
  nn::FitOptions fit;
  fit.epochs = 10;
  fit.verbose = 0;
  model.fit(x_train, y_train, fit);
  auto bn_layer = model.get_layer<nn::BatchNormalization>("bn_layer");
  const Tensor mean1 = bn_layer->moving_mean()->value, var1 = bn_layer->moving_variance()->value;
  std::printf("  Moving mean:     %s\n  Moving variance: %s\n", str(mean1, 5).c_str(), str(var1, 5).c_str());
  check(max_abs_diff(mean1, Tensor::zeros(Shape{10})) > 0 && max_abs_diff(var1, Tensor::ones(Shape{10})) > 0,
        "fit() moved the moving statistics away from their initial 0 / 1");
  model.predict(x_train);
  check(bn_layer->moving_mean()->value.vector() == mean1.vector(),
        "predict() after fit leaves them unchanged");
  model(x_train, true);  // a forward pass in training mode: no loss, no gradient, no optimizer
  check(bn_layer->moving_mean()->value.vector() != mean1.vector(),
        "one model(x, training=True) call, with no gradient step, moves them (forward-pass update)");

  std::printf("Example 2: BatchNormalization(name='bn_layer', trainable=False), Dense(10)\n");
  nn::Sequential frozen(
      {std::make_shared<nn::BatchNormalization>(bn_options(false)), std::make_shared<nn::Dense>(10)});
  frozen.build(Shape{-1, 10});
  // Stand-in for model.load_weights("my_model_weights.h5"): known "pretrained" BN weights.
  auto bn = frozen.get_layer<nn::BatchNormalization>("bn_layer");
  Tensor gamma(Shape{10}), beta(Shape{10}), mm(Shape{10}), mv(Shape{10});
  for (std::int64_t c = 0; c < 10; ++c) {
    const auto f = static_cast<float>(c);
    gamma[c] = 1.0f + 0.1f * f, beta[c] = -0.2f * f, mm[c] = 0.5f * f - 2.0f, mv[c] = 0.25f + 0.5f * f;
  }
  bn->set_weights({gamma, beta, mm, mv});
  const auto dense = frozen.get_layer<nn::Dense>(frozen.layers()[1]->name());
  check(frozen.trainable_weights().size() == 2 && frozen.non_trainable_weights().size() == 4,
        "trainable_weights: Dense kernel and bias only; BN's 4 weights are non-trainable");

  const Tensor x_test = normal(Shape{10, 10}, 3);
  const Tensor predictions = frozen.predict(x_test);
  std::printf("  after predict: moving mean %s\n", str(bn->moving_mean()->value, 5).c_str());
  check(bn->moving_mean()->value.vector() == mm.vector() &&
            bn->moving_variance()->value.vector() == mv.vector(),
        "predict(): moving statistics bit-for-bit the loaded values");
  // predictions = Dense(gamma * (x - moving_mean) / sqrt(moving_variance + 1e-3) + beta)
  Tensor normalized(x_test.shape());
  for (std::int64_t i = 0; i < x_test.numel(); ++i) {
    const std::int64_t c = i % 10;
    normalized[i] =
        static_cast<float>(gamma[c] * (x_test[i] - mm[c]) / std::sqrt(double{mv[c]} + 1e-3) + beta[c]);
  }
  const Tensor expected = dense->forward(normalized, false, nullptr, nullptr);
  check(max_abs_diff(predictions, expected) < 1e-4, "predict() normalized with the loaded moving statistics");

  // The TF2 fine-tuning rule: fit() does not move a frozen layer's statistics either.
  frozen.compile("adam", "mse");
  const Tensor kernel0 = dense->kernel()->value;
  nn::FitOptions few;
  few.batch_size = 16;
  few.epochs = 3;
  few.verbose = 0;
  frozen.fit(x_train, y_train, few);
  std::printf("  after fit:     moving mean %s\n", str(bn->moving_mean()->value, 5).c_str());
  check(bn->moving_mean()->value.vector() == mm.vector() &&
            bn->moving_variance()->value.vector() == mv.vector(),
        "fit() (21 training steps): moving statistics still bit-for-bit unchanged, no decay to zero");
  check(bn->gamma()->value.vector() == gamma.vector() && bn->beta()->value.vector() == beta.vector(),
        "gamma and beta unchanged too");
  check(max_abs_diff(dense->kernel()->value, kernel0) > 0, "while the Dense kernel did train");
  check(max_abs_diff(frozen.predict(x_test), dense->forward(normalized, false, nullptr, nullptr)) < 1e-4,
        "after fit, the frozen BN still normalizes with the loaded statistics");

  return example::verdict();
} catch (const bnorm::Error& e) {
  std::fprintf(stderr, "bnorm error: %s\n", e.what());
  return 2;
}
