// seed_002_handwritten_moving_stats: moving statistics kept by hand with the stateless ops
// (tf.nn.moments, tf.nn.batch_normalization) change only when the state itself is
// assigned; and the article's update formula inverts Keras's momentum.
//
// Mirrors article 002 ("How to assign moving variance and average in TensorFlow batch
// normalization?"), its three examples on a (32, 32, 32, 32) input:
//   Example 1:  mean, variance = tf.nn.moments(inputs, axes=[0, 1, 2], keepdims=False)
//               update_moving_mean = tf.assign(moving_mean, moving_mean * (1 - momentum) + mean * momentum)
//               tf.nn.batch_normalization(inputs, mean, variance, offset=None, scale=None, ...)
//   Example 2:  moving_mean = moving_mean * (1 - momentum) + mean * momentum  # Incorrect update
//   Example 3:  bn_layer = tf.keras.layers.BatchNormalization(momentum=momentum)
//               normalized_inputs = bn_layer(inputs, training=True)   # or training=False
// What the article gets wrong (SEMANTICS.md section 7, item 2): with momentum = 0.99 its
// formula gives the NEW batch 99% of the weight, so the "moving" average is essentially
// the last batch. That is PyTorch's meaning of momentum (its default is 0.1). Keras's
// momentum is the weight of the OLD value: moving * momentum + batch * (1 - momentum),
// which is what tf.keras.layers.BatchNormalization(momentum=0.99) in its own Example 3
// does. The output below shows both, and the layer agreeing with the Keras form.
// Also: the article creates its variables (and in Example 3 its layer) inside the
// function, so each call would start again from 0 / 1; here the state lives outside.
// Example 2's diagnosis is right (SEMANTICS 7 item 3): rebinding a name is not assigning.
#include <cmath>
#include <cstdio>
#include <optional>
#include <string>

#include "bnorm/core/error.hpp"
#include "example_checks.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/ops.hpp"

namespace nn = bnorm::nn;
using example::check;
using example::max_abs_diff;
using bnorm::Shape;
using bnorm::Tensor;

namespace {


void show(const char* label, const Tensor& t) {  // the first 4 channels
  std::printf("  %-46s [%.6f, %.6f, %.6f, %.6f, ...]\n", label, double{t[0]}, double{t[1]}, double{t[2]},
              double{t[3]});
}


// a * sa + b * sb, element by element (Python scalars act as float32 constants).
Tensor weighted_sum(const Tensor& a, double sa, const Tensor& b, double sb) {
  Tensor out(a.shape());
  for (std::int64_t i = 0; i < a.numel(); ++i)
    out[i] = a[i] * static_cast<float>(sa) + b[i] * static_cast<float>(sb);
  return out;
}

// A deterministic stand-in for tf.random.normal((32, 32, 32, 32)), NHWC: channel c has
// mean 0.1 c and standard deviation about 0.7 (1 + 0.05 c).
Tensor make_input(std::int64_t shift) {
  Tensor x(Shape{32, 32, 32, 32});
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const auto c = static_cast<double>(i % 32), k = static_cast<double>(i / 32 + shift);
    x[i] = static_cast<float>(0.1 * c + (1.0 + 0.05 * c) * std::sin(0.7 * k + 0.3 * c));
  }
  return x;
}

struct MovingStats {  // moving_mean = tf.Variable(tf.zeros([channels])), moving_variance: ones
  Tensor moving_mean = Tensor::zeros(Shape{32});
  Tensor moving_variance = Tensor::ones(Shape{32});
};

// Example 1, line for line (keras_form = false); keras_form = true weights the old value.
Tensor batch_norm_layer(MovingStats& s, const Tensor& inputs, bool is_training, double momentum = 0.99,
                        bool keras_form = false) {
  if (is_training) {
    auto [mean, variance] = nn::moments(inputs, {0, 1, 2}, /*keepdims=*/false);
    if (!keras_form) {  // the article: the NEW batch gets weight `momentum` (PyTorch's meaning)
      s.moving_mean = weighted_sum(s.moving_mean, 1 - momentum, mean, momentum);
      s.moving_variance = weighted_sum(s.moving_variance, 1 - momentum, variance, momentum);
    } else {  // Keras: the OLD value gets weight `momentum`
      s.moving_mean = weighted_sum(s.moving_mean, momentum, mean, 1 - momentum);
      s.moving_variance = weighted_sum(s.moving_variance, momentum, variance, 1 - momentum);
    }
    return nn::batch_normalization(inputs, mean, variance, std::nullopt, std::nullopt, 1e-5f);
  }
  return nn::batch_normalization(inputs, s.moving_mean, s.moving_variance, std::nullopt, std::nullopt, 1e-5f);
}

// Example 2: the new values go into local copies, which are dropped on return.
Tensor incorrect_batch_norm_layer(const MovingStats& s, const Tensor& inputs, bool is_training,
                                  double momentum = 0.99) {
  Tensor moving_mean = s.moving_mean, moving_variance = s.moving_variance;  // copies, not the state
  auto [mean, variance] = nn::moments(inputs, {0, 1, 2});
  if (is_training) {
    moving_mean = weighted_sum(moving_mean, 1 - momentum, mean, momentum);  // Incorrect update
    moving_variance = weighted_sum(moving_variance, 1 - momentum, variance, momentum);
    return nn::batch_normalization(inputs, mean, variance, std::nullopt, std::nullopt, 1e-5f);
  }
  return nn::batch_normalization(inputs, moving_mean, moving_variance, std::nullopt, std::nullopt, 1e-5f);
}

}  // namespace

int main() try {
  const Tensor input_tensor = make_input(0);
  const Tensor batch_mean = nn::moments(input_tensor, {0, 1, 2}).mean;
  std::printf("Example 1: one training step, momentum 0.99\n");
  show("batch mean", batch_mean);
  MovingStats article, keras;
  batch_norm_layer(article, input_tensor, true);
  const Tensor normalized = batch_norm_layer(keras, input_tensor, true, 0.99, /*keras_form=*/true);
  show("article: moving_mean*(1-m) + mean*m", article.moving_mean);
  show("Keras:   moving_mean*m + mean*(1-m)", keras.moving_mean);
  show("article: moving_variance*(1-m) + variance*m", article.moving_variance);
  show("Keras:   moving_variance*m + variance*(1-m)", keras.moving_variance);
  check(max_abs_diff(article.moving_mean, weighted_sum(batch_mean, 0.99, batch_mean, 0.0)) < 1e-6,
        "article: from 0, one step gives 0.99 * batch_mean (the new batch dominates)");

  // epsilon 1e-5 to match variance_epsilon above (the article's Example 3 keeps the default 1e-3).
  nn::BatchNormalization bn({.momentum = 0.99, .epsilon = 1e-5});
  const Tensor y = bn(input_tensor, true);
  show("layer(momentum=0.99): moving_mean", bn.moving_mean()->value);
  check(max_abs_diff(bn.moving_mean()->value, keras.moving_mean) < 1e-6 &&
            max_abs_diff(bn.moving_variance()->value, keras.moving_variance) < 1e-6,
        "the Keras layer's moving statistics equal the Keras form, not the article's");
  check(max_abs_diff(y, normalized) < 1e-4, "hand-written and layer outputs agree (batch statistics)");

  std::printf("Example 2: 5 training calls that rebind local copies\n");
  MovingStats incorrect;
  for (int step = 0; step < 5; ++step) incorrect_batch_norm_layer(incorrect, make_input(step), true);
  show("moving_mean", incorrect.moving_mean);
  show("moving_variance", incorrect.moving_variance);
  check(incorrect.moving_mean.vector() == Tensor::zeros(Shape{32}).vector() &&
            incorrect.moving_variance.vector() == Tensor::ones(Shape{32}).vector(),
        "the state never changed: still 0 / 1");
  const Tensor train_out = incorrect_batch_norm_layer(incorrect, input_tensor, true);
  const Tensor infer_out = incorrect_batch_norm_layer(incorrect, input_tensor, false);
  show("per-channel mean of the training output", nn::moments(train_out, {0, 1, 2}).mean);
  show("per-channel mean of the inference output", nn::moments(infer_out, {0, 1, 2}).mean);
  check(max_abs_diff(infer_out, train_out) > 1.0, "so inference output diverges from training output");
  const Tensor before = bn.moving_mean()->value;
  Tensor copy = bn.moving_mean()->value;  // the same mistake with a layer: a copy of its variable
  copy = weighted_sum(copy, 0.99, batch_mean, 0.01);
  check(bn.moving_mean()->value.vector() == before.vector() && copy.vector() != before.vector(),
        "updating a copy of a layer's variable leaves the layer unchanged");
  Tensor& state = bn.moving_mean()->value;  // assigning the variable itself (tf.assign) does change it
  state = weighted_sum(state, 0.99, batch_mean, 0.01);
  check(bn.moving_mean()->value.vector() != before.vector(), "assigning the layer's variable changes it");
  state = before;

  std::printf("Example 3: BatchNormalization(momentum=0.99), training=True then False\n");
  for (bool is_training : {true, false}) {
    const Tensor mean0 = bn.moving_mean()->value, var0 = bn.moving_variance()->value;
    const Tensor out = bn(input_tensor, is_training);  // bn_layer(inputs, training=is_training)
    show(is_training ? "training=True:  moving_mean" : "training=False: moving_mean",
         bn.moving_mean()->value);
    if (is_training) {
      check(max_abs_diff(bn.moving_mean()->value, weighted_sum(mean0, 0.99, batch_mean, 0.01)) < 1e-6,
            "training=True: moving = moving * 0.99 + batch * 0.01");
    } else {
      check(bn.moving_mean()->value.vector() == mean0.vector() &&
                bn.moving_variance()->value.vector() == var0.vector(),
            "training=False: moving statistics unchanged");
      const Tensor want =
          nn::batch_normalization(input_tensor, mean0, var0, std::nullopt, std::nullopt, 1e-5f);
      check(max_abs_diff(out, want) < 1e-4, "training=False normalizes with the moving statistics");
    }
  }

  return example::verdict();
} catch (const bnorm::Error& e) {
  std::fprintf(stderr, "bnorm error: %s\n", e.what());
  return 2;
}
