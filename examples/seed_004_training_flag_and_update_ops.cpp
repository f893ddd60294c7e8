// seed_004_training_flag_and_update_ops: moving statistics change only in training mode,
// and only when the collected update is applied (TF1's UPDATE_OPS).
//
// Mirrors article 004 ("Why does tf.layers.batch_normalization freeze during TensorFlow
// session execution?"), at the level of the layer alone:
//   Example 1:  training_phase = tf.constant(False)
//               bn_layer = tf.layers.batch_normalization(input_tensor, training=training_phase)
//               # ... training loop ... will not update bn_layer's statistics
//   Example 2:  bn_layer = tf.layers.batch_normalization(input_tensor, training=training_phase)
//               update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
//               sess.run([optimizer, update_ops], feed_dict={..., training_phase: True})
// C++ twin of the graph: BatchNormalization::forward_collect(x, update) is the training
// forward that builds the update op without running it; apply_update(update) runs it.
// The article is right about the statistics (SEMANTICS.md 1.15, section 7 item 14):
// with training False they stay 0 / 1, and in TF1 graphs they move only when UPDATE_OPS
// run. One overstatement: training=False does not "freeze the layer's parameters".
// gamma and beta still receive (inference-mode) gradients and an optimizer still trains
// them (SEMANTICS 1.8 V1 behaviour, 4.2); only the statistics stay frozen. Shown below.
// (TF1 tf.layers uses the Keras 2 update form; trainable=False would not change its mode,
// which bnorm, following TF2, does not model. Neither matters here.)
#include <cmath>
#include <cstdio>
#include <string>

#include "bnorm/core/error.hpp"
#include "example_checks.hpp"
#include "bnorm/nn/batch_normalization.hpp"

namespace nn = bnorm::nn;
using example::check;
using example::max_abs_diff;
using bnorm::Shape;
using bnorm::Tensor;
std::string str(const Tensor& t) { return example::str(t, 4); }  // the first 4 channels

namespace {



// batch_data for step `step`, shape (16, 10): channel c has mean about c / 2.
Tensor batch_data(int step) {
  Tensor x(Shape{16, 10});
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const auto c = static_cast<double>(i % 10), k = static_cast<double>(i / 10 + 16 * step);
    x[i] = static_cast<float>(0.5 * c + std::sin(1.3 * k + c));
  }
  return x;
}

bool at_initial_values(const nn::BatchNormalization& bn) {
  return bn.moving_mean()->value.vector() == Tensor::zeros(Shape{10}).vector() &&
         bn.moving_variance()->value.vector() == Tensor::ones(Shape{10}).vector();
}

}  // namespace

int main() try {
  const nn::BatchNormalizationOptions tf_layers{.version = nn::KerasVersion::keras2};

  std::printf("Example 1: training_phase = tf.constant(False), 5 training steps\n");
  nn::BatchNormalization bn_layer(tf_layers);
  bool uses_initial = true, gets_gradients = true;
  for (int step = 0; step < 5; ++step) {
    const Tensor input_tensor = batch_data(step);
    nn::BatchNormContext ctx;
    const Tensor y = bn_layer.forward(input_tensor, /*training=*/false, &ctx);
    for (std::int64_t i = 0; i < y.numel(); ++i)  // y = x / sqrt(1 + eps): moving stats 0 / 1
      uses_initial = uses_initial && std::fabs(y[i] - input_tensor[i] / std::sqrt(1.0 + 1e-3)) < 1e-5;
    // The optimizer's view: gradients of the loss sum(y) reach gamma and beta anyway.
    const nn::BatchNormGradients g = bn_layer.backward(ctx, Tensor::ones(y.shape()));
    gets_gradients = gets_gradients && (*g.dbeta)[0] == 16.0f && (*g.dgamma)[1] != 0.0f;
  }
  std::printf("  moving_mean     %s\n  moving_variance %s\n", str(bn_layer.moving_mean()->value).c_str(),
              str(bn_layer.moving_variance()->value).c_str());
  check(at_initial_values(bn_layer), "statistics never changed: still 0 / 1");
  check(uses_initial, "every step normalized with the initial 0 / 1 instead of the batch");
  check(gets_gradients,
        "gamma and beta still get gradients: training=False freezes statistics, not parameters");

  std::printf("Example 2a: training_phase True, but update_ops not run\n");
  nn::BatchNormalization forgot(tf_layers);
  bool batch_normalized = true;
  for (int step = 0; step < 5; ++step) {
    nn::StatisticsUpdate update;  // the update op, built but never run
    const Tensor y = forgot.forward_collect(batch_data(step), update);
    double mean0 = 0.0;
    for (std::int64_t n = 0; n < 16; ++n) mean0 += y[n * 10 + 5] / 16.0;
    batch_normalized = batch_normalized && std::fabs(mean0) < 1e-5;
  }
  std::printf("  moving_mean     %s\n  moving_variance %s\n", str(forgot.moving_mean()->value).c_str(),
              str(forgot.moving_variance()->value).c_str());
  check(batch_normalized, "the forward pass used batch statistics (training mode)");
  check(at_initial_values(forgot), "statistics never changed: still 0 / 1 (update ops not run)");

  std::printf("Example 2b: sess.run([optimizer, update_ops]) with training_phase True\n");
  nn::BatchNormalization updated(tf_layers);
  nn::BatchNormalization tf2(tf_layers);  // TF2 / Keras: the update runs inside the call
  for (int step = 0; step < 5; ++step) {
    nn::StatisticsUpdate update;
    updated.forward_collect(batch_data(step), update);
    updated.apply_update(update);  // running update_ops
    tf2(batch_data(step), true);
    std::printf("  step %d moving_mean %s\n", step, str(updated.moving_mean()->value).c_str());
  }
  check(!at_initial_values(updated), "statistics moved once the update ops ran");
  check(updated.moving_mean()->value.vector() == tf2.moving_mean()->value.vector() &&
            updated.moving_variance()->value.vector() == tf2.moving_variance()->value.vector(),
        "forward_collect + apply_update == call(x, training=true), bit for bit");
  // One step of the Keras 2 form, checked by hand on channel 9 (mean ~4.5).
  const float before = updated.moving_mean()->value[9];
  nn::StatisticsUpdate update;
  updated.forward_collect(batch_data(5), update);
  updated.apply_update(update);
  const double want = before - (before - update.batch_mean[9]) * (1.0 - 0.99);
  check(std::fabs(updated.moving_mean()->value[9] - want) < 1e-6,
        "moving_mean -= (moving_mean - batch_mean) * (1 - momentum)");

  return example::verdict();
} catch (const bnorm::Error& e) {
  std::fprintf(stderr, "bnorm error: %s\n", e.what());
  return 2;
}
