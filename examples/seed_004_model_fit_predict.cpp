// seed_004_model_fit_predict: fit() runs batch normalization in training mode (the moving
// statistics move), predict() in inference mode (they do not); and the model-level form of
// TF1's UPDATE_OPS: collected updates that change nothing until applied.
//
// Mirrors article 004 ("Why does tf.layers.batch_normalization freeze during TensorFlow
// session execution?"); the layer-only twin is seed_004_training_flag_and_update_ops.cpp.
//   Example 3:  model = tf.keras.Sequential([
//                   tf.keras.layers.BatchNormalization(input_shape=(10,)),
//                   tf.keras.layers.Dense(units=5)])
//               model.compile(optimizer='adam', loss='mse')
//               model.fit(x_train, y_train, epochs=10)
//               predictions = model.predict(x_test)
//   Example 2:  update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
//               sess.run([optimizer, update_ops], feed_dict={..., training_phase: True})
// The article is right here (SEMANTICS.md 1.7, 1.15): fit sets training=True for the layer,
// predict uses the moving statistics, and TF1 statistics move only when UPDATE_OPS run.
// C++ forms: BatchNormalization(input_shape=(10,)) becomes InputLayer({10}) then
// BatchNormalization() (BatchNormalizationOptions has no input_shape); the UPDATE_OPS
// collection is an nn::UpdateCollection passed to model.call(x, true, &tape, &updates),
// applied after the optimizer step, or discarded (e.g. when the step's loss is not finite).
// x_train / y_train / x_test, undefined in the article, come from a fixed generator.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/updates.hpp"
#include "example_checks.hpp"

namespace nn = bnorm::nn;
using bnorm::Shape;
using bnorm::Tensor;
using example::check;
using example::normal;
using example::max_abs_diff;
std::string str(const Tensor& t) {
  return example::str(t, 4);
}  // the first 4 channels

namespace {


std::unique_ptr<nn::Sequential> make_model() {
  return std::make_unique<nn::Sequential>(
      std::vector<nn::LayerPtr>{std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{10}),
                                std::make_shared<nn::BatchNormalization>(), std::make_shared<nn::Dense>(5)});
}

nn::BatchNormalization& bn_of(nn::Model& model) {
  return dynamic_cast<nn::BatchNormalization&>(*model.layers()[0]);
}

Tensor batch(const Tensor& t, std::int64_t b, std::int64_t size) {  // rows [b * size, (b + 1) * size)
  const std::int64_t w = t.numel() / t.dim(0);
  return Tensor(Shape{size, w}, {t.vector().begin() + b * size * w, t.vector().begin() + (b + 1) * size * w});
}

}  // namespace

int main() try {
  // Channel c of x has mean c - 4 and standard deviation 2.
  Tensor x_train = normal(Shape{200, 10}, 1, 0.0f, 2.0f), x_test = normal(Shape{20, 10}, 3, 0.0f, 2.0f);
  for (std::int64_t i = 0; i < x_train.numel(); ++i) x_train[i] += static_cast<float>(i % 10 - 4);
  for (std::int64_t i = 0; i < x_test.numel(); ++i) x_test[i] += static_cast<float>(i % 10 - 4);
  const Tensor y_train = normal(Shape{200, 5}, 2);

  std::printf("Example 3: Sequential([BatchNormalization(input_shape=(10,)), Dense(units=5)])\n");
  auto p1 = make_model();
  nn::Sequential& model = *p1;
  model.compile("adam", "mse");
  nn::FitOptions fit;
  fit.epochs = 10;
  fit.verbose = 0;
  model.fit(x_train, y_train, fit);
  nn::BatchNormalization& bn = bn_of(model);
  const Tensor mm = bn.moving_mean()->value, mv = bn.moving_variance()->value;
  Tensor data_mean(Shape{10});
  for (std::int64_t i = 0; i < x_train.numel(); ++i) data_mean[i % 10] += x_train[i] / 200.0f;
  std::printf("  after fit:     moving_mean %s  (data mean %s)\n", str(mm).c_str(), str(data_mean).c_str());
  bool toward_data = true;  // 70 steps at momentum 0.99: about half way (1 - 0.99^70 = 0.505)
  for (std::int64_t c = 0; c < 10; ++c)
    toward_data =
        toward_data && std::fabs(mm[c] - 0.505f * data_mean[c]) < 0.1f + 0.1f * std::fabs(data_mean[c]);
  check(toward_data, "fit() trained in training mode: moving_mean went half way to the data mean");

  const Tensor predictions = model.predict(x_test);
  std::printf("  after predict: moving_mean %s\n", str(bn.moving_mean()->value).c_str());
  check(
      bn.moving_mean()->value.vector() == mm.vector() && bn.moving_variance()->value.vector() == mv.vector(),
      "predict() left the moving statistics bit-for-bit unchanged");
  Tensor normalized(x_test.shape());
  for (std::int64_t i = 0; i < x_test.numel(); ++i) {
    const std::int64_t c = i % 10;
    normalized[i] = static_cast<float>(
        bn.gamma()->value[c] * (x_test[i] - mm[c]) / std::sqrt(double{mv[c]} + 1e-3) + bn.beta()->value[c]);
  }
  check(max_abs_diff(predictions, model.layers()[1]->forward(normalized, false, nullptr, nullptr)) < 1e-4,
        "predict() normalized with the moving statistics (inference mode)");

  std::printf("Example 2 at model level: UPDATE_OPS as an UpdateCollection\n");
  auto p2 = make_model(), p3 = make_model();
  nn::Sequential &collected = *p2, &direct = *p3;  // direct: Keras 2 / 3, the update runs inside the call
  nn::Adam optimizer;
  const nn::MeanSquaredError mse;
  bool unchanged_until_apply = true;
  for (std::int64_t step = 0; step < 5; ++step) {
    const Tensor xb = batch(x_train, step, 32), yb = batch(y_train, step, 32);
    nn::UpdateCollection updates;
    nn::GradientTape tape;
    const Tensor before = bn_of(collected).moving_mean()->value;
    const Tensor pred = collected.call(xb, true, &tape, &updates);
    const nn::LossValue loss = mse.compute(yb, pred);
    optimizer.apply_gradients(
        nn::zip(tape.gradient(loss.grad, collected.trainable_weights()), collected.trainable_weights()));
    unchanged_until_apply = unchanged_until_apply && updates.pending() == 1 &&
                            bn_of(collected).moving_mean()->value.vector() == before.vector();
    if (std::isfinite(loss.value))
      updates.apply();  // sess.run([optimizer, update_ops])
    else
      updates.discard();
    direct(xb, true);
    std::printf("  step %lld loss %.4f moving_mean %s\n", static_cast<long long>(step), double{loss.value},
                str(bn_of(collected).moving_mean()->value).c_str());
  }
  check(unchanged_until_apply,
        "after the forward pass and the optimizer step: 1 pending update, statistics unchanged");
  check(max_abs_diff(bn_of(collected).moving_mean()->value, Tensor::zeros(Shape{10})) > 0.1,
        "updates.apply() moved them");
  check(bn_of(collected).moving_mean()->value.vector() == bn_of(direct).moving_mean()->value.vector() &&
            bn_of(collected).moving_variance()->value.vector() ==
                bn_of(direct).moving_variance()->value.vector(),
        "collected + applied == model(x, training=True), bit for bit");

  // A step whose update is discarded (as for a non-finite loss; here a normal step).
  const Tensor mm_before = bn_of(collected).moving_mean()->value,
               mv_before = bn_of(collected).moving_variance()->value;
  nn::UpdateCollection updates;
  const Tensor xb = batch(x_train, 5, 32);
  collected.call(xb, true, nullptr, &updates);
  const nn::StatisticsUpdate* pending = updates.find(bn_of(collected));
  double batch_mean0 = 0.0;  // what the step normalized channel 0 with: its batch mean
  for (std::int64_t n = 0; n < 32; ++n) batch_mean0 += xb[n * 10] / 32.0;
  check(pending != nullptr && pending->count == 32 && std::fabs(pending->batch_mean[0] - batch_mean0) < 1e-5,
        "the pending update holds this batch's statistics (training mode)");
  updates.discard();
  check(updates.pending() == 0 && bn_of(collected).moving_mean()->value.vector() == mm_before.vector() &&
            bn_of(collected).moving_variance()->value.vector() == mv_before.vector(),
        "updates.discard(): the step leaves the statistics as they were");

  return example::verdict();
} catch (const bnorm::Error& e) {
  std::fprintf(stderr, "bnorm error: %s\n", e.what());
  return 2;
}
