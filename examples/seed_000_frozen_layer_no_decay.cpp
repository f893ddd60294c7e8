// seed_000_frozen_layer_no_decay: a BatchNormalization layer with trainable=False keeps its
// moving statistics exactly as they are, and normalizes with them.
//
// Mirrors article 000 ("Why doesn't tf.keras.layers.BatchNormalization with trainable=False
// update its moving mean and variance?"), Example 3:
//     bn = tf.keras.layers.BatchNormalization(trainable=False)
//     momentum = bn.momentum.numpy()
//     moving_mean = np.array([1.0, 2.0, 3.0])
//     moving_var = np.array([0.5, 1.0, 1.5])
//     for _ in range(5):
//         #No update, decay observed below
//         new_moving_mean = momentum * moving_mean
//         new_moving_var = momentum * moving_var
//
// What the article gets wrong (SEMANTICS.md section 7, item 1): it says a frozen layer's
// statistics "decay gradually towards zero due to the momentum factor". They do not. In
// TF2 Keras 2 and in Keras 3 a layer with trainable=False runs in inference mode even
// when called with training=True, and assigns nothing to moving_mean / moving_variance.
// The article's loop never calls the layer; it only multiplies numbers by 0.99 (and
// bn.momentum is a plain Python float, so `.numpy()` on it would not even run). Below,
// the real layer is called 5 times with training=True and 5 times without a training
// argument: its statistics stay [1, 2, 3] / [0.5, 1, 1.5] while the article's simulation
// shrinks them. Only a trainable layer called with training=True moves them, and toward
// the batch statistics, not toward zero (last part).
#include <cmath>
#include <cstdio>
#include <string>

#include "bnorm/core/error.hpp"
#include "example_checks.hpp"
#include "bnorm/nn/batch_normalization.hpp"

namespace nn = bnorm::nn;
using example::check;
using example::max_abs_diff;
using example::str;
using bnorm::Shape;
using bnorm::Tensor;

namespace {



// Largest |y - (x - mean) / sqrt(var + eps)| over a (N, 3) input.
double inference_error(const Tensor& x, const Tensor& y, const Tensor& mean, const Tensor& var, double eps) {
  double err = 0.0;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const std::int64_t c = i % 3;
    const double want = (double{x[i]} - mean[c]) / std::sqrt(double{var[c]} + eps);
    err = std::fmax(err, std::fabs(double{y[i]} - want));
  }
  return err;
}

}  // namespace

int main() try {
  // bn = tf.keras.layers.BatchNormalization(trainable=False)
  nn::BatchNormalization bn({.trainable = false});
  const double momentum = bn.options().momentum;  // 0.99
  const double eps = bn.options().epsilon;        // 1e-3

  // The article's initial values, loaded into the layer (build on shape (None, 3)).
  const Tensor moving_mean0(Shape{3}, {1.0f, 2.0f, 3.0f});
  const Tensor moving_var0(Shape{3}, {0.5f, 1.0f, 1.5f});
  bn.build(Shape{-1, 3});
  bn.set_weights({Tensor::ones(Shape{3}), Tensor::zeros(Shape{3}), moving_mean0, moving_var0});

  // Batch means [3, 0, 1]: a trainable layer would move moving_mean[0] UP, away from zero.
  const Tensor x(Shape{4, 3}, {2.5f, -1.0f, 1.5f, 3.5f, 1.0f, 0.0f, 2.0f, 0.5f, 2.0f, 4.0f, -0.5f, 0.5f});
  std::printf("frozen layer: trainable=%s, trainable_weights=%zu, non_trainable_weights=%zu\n",
              bn.trainable() ? "true" : "false", bn.trainable_weights().size(),
              bn.non_trainable_weights().size());
  check(bn.trainable_weights().empty() && bn.non_trainable_weights().size() == 4,
        "gamma and beta are not trainable weights of a frozen layer");

  Tensor sim_mean = moving_mean0, sim_var = moving_var0;  // the article's simulation
  bool unchanged = true, uses_moving = true, same_output = true;
  for (int step = 1; step <= 5; ++step) {
    for (std::int64_t c = 0; c < 3; ++c) {  // new_moving_mean = momentum * moving_mean
      sim_mean[c] = static_cast<float>(momentum * sim_mean[c]);
      sim_var[c] = static_cast<float>(momentum * sim_var[c]);
    }
    const Tensor y_train = bn(x, true);  // training=True: still inference for a frozen layer
    const Tensor y_bare = bn(x);         // no training argument: inference
    const Tensor& mm = bn.moving_mean()->value;
    const Tensor& mv = bn.moving_variance()->value;
    std::printf("step %d\n  article says  moving_mean %s  moving_variance %s\n", step, str(sim_mean).c_str(),
                str(sim_var).c_str());
    std::printf("  layer has     moving_mean %s  moving_variance %s\n", str(mm).c_str(), str(mv).c_str());
    unchanged = unchanged && mm.vector() == moving_mean0.vector() && mv.vector() == moving_var0.vector();
    uses_moving = uses_moving && inference_error(x, y_train, moving_mean0, moving_var0, eps) < 1e-5 &&
                  inference_error(x, y_bare, moving_mean0, moving_var0, eps) < 1e-5;
    same_output = same_output && y_train.vector() == y_bare.vector();
  }
  check(unchanged, "moving statistics bit-for-bit unchanged after 10 calls (5 with training=true)");
  check(uses_moving, "every output is (x - moving_mean) / sqrt(moving_variance + eps)");
  check(same_output, "training=true and no training argument give the same output when frozen");
  check(sim_mean[0] < 0.96f, "the article's simulation would have shrunk moving_mean[0] to " +
                                 std::to_string(sim_mean[0]) + " (it is not what the layer does)");

  // What does move the statistics: trainable=True and training=True, toward the batch mean.
  bn.set_trainable(true);
  bn(x, true);
  std::printf("after set_trainable(true) and one call with training=true:\n  moving_mean %s\n",
              str(bn.moving_mean()->value).c_str());
  bool toward_batch = true;
  for (std::int64_t c = 0; c < 3; ++c) {
    double batch_mean = 0.0;
    for (std::int64_t n = 0; n < 4; ++n) batch_mean += x[n * 3 + c] / 4.0;
    const double want = moving_mean0[c] * momentum + batch_mean * (1.0 - momentum);
    toward_batch = toward_batch && std::fabs(bn.moving_mean()->value[c] - want) < 1e-6;
  }
  check(toward_batch, "moving_mean = moving_mean * 0.99 + batch_mean * 0.01 (toward the batch, not zero)");

  return example::verdict();
} catch (const bnorm::Error& e) {
  std::fprintf(stderr, "bnorm error: %s\n", e.what());
  return 2;
}
