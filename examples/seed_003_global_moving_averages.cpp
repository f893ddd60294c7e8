// seed_003_global_moving_averages: the moving statistics after fit() and after custom loops,
// and what they do (and do not do) on an imbalanced data set.
//
// Mirrors article 003 ("How can TensorFlow's tf.keras.layers.BatchNormalization utilize
// global moving averages during training?"):
//   Example 1:  Sequential([Dense(64, input_shape=(10,)),
//                           BatchNormalization(momentum=0.99, name='bn_layer'), Activation('relu')])
//               # This requires a custom training loop for direct access; model.fit doesn't
//               # directly expose them.
//   Example 2:  (momentum=0.9)  with tf.GradientTape() as tape: predictions = model(x_batch)
//   Example 3:  x_train = np.concatenate([np.random.randn(1000, 10), np.random.randn(100, 10) + 5])
//               ... BatchNormalization(momentum=0.95) ... Dense(1, activation='sigmoid')
//               model.compile(optimizer='adam', loss='binary_crossentropy'); model.fit(..., epochs=10)
// Where the article is wrong (SEMANTICS.md 1.7, section 7 item 13):
// * Example 1: no custom loop is needed: get_layer('bn_layer').moving_mean works after fit().
// * Example 2: `model(x_batch)` without training=True runs batch normalization in INFERENCE
//   mode: it normalizes with the moving statistics (0 / 1) and never updates them. The fix
//   is model(x_batch, training=True), here model.call(x_batch, true, &tape).
// * Example 3: nothing supports the claim that the moving averages prevent "overfitting to
//   the majority class": training normalizes with batch statistics, so the moving ones take
//   no part in training (shown below); they matter only at inference, and they track the
//   data as sampled (about 10:1), not a class-balanced average.
// Data: a fixed generator instead of numpy's. tf.keras.losses.mse returns a per-sample loss
// (the tape differentiates its sum); bnorm's MeanSquaredError is its mean (a scale factor).
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
using example::str;

namespace {


// Sequential([Dense(64, input_shape=(10,)), BatchNormalization(momentum, name='bn_layer'), ...rest]).
std::unique_ptr<nn::Sequential> make_model(double momentum, bool classifier) {
  nn::DenseOptions dense;
  dense.input_shape = {10};
  nn::BatchNormalizationOptions bn;
  bn.momentum = momentum;
  bn.name = "bn_layer";
  auto model = std::make_unique<nn::Sequential>(std::vector<nn::LayerPtr>{
      std::make_shared<nn::Dense>(64, dense), std::make_shared<nn::BatchNormalization>(bn),
      std::make_shared<nn::Activation>("relu")});
  nn::DenseOptions out;
  out.activation = "sigmoid";
  if (classifier) model->add(std::make_shared<nn::Dense>(1, out));
  return model;
}

// Column means (C) of the Dense layer's output for x, with its current weights.
Tensor dense_means(nn::Model& model, const Tensor& x) {
  const Tensor h = model.layers()[0]->forward(x, false, nullptr, nullptr);
  Tensor m(Shape{h.dim(1)});
  for (std::int64_t i = 0; i < h.numel(); ++i) m[i % h.dim(1)] += h[i] / static_cast<float>(h.dim(0));
  return m;
}

double l1(const Tensor& a, const Tensor& b) {
  double s = 0.0;
  for (std::int64_t i = 0; i < a.numel(); ++i) s += std::fabs(double{a[i]} - b[i]);
  return s;
}

// Example 2's loop over 8 batches of 32, 10 epochs; `training` is what model(...) is given.
void custom_loop(nn::Model& model, const Tensor& x, const Tensor& y, bool training) {
  nn::Adam optimizer;
  const nn::MeanSquaredError mse;
  for (int epoch = 0; epoch < 10; ++epoch) {
    for (std::int64_t b = 0; b < 8; ++b) {
      const Tensor xb(Shape{32, 10}, {x.vector().begin() + b * 320, x.vector().begin() + (b + 1) * 320});
      const Tensor yb(Shape{32, 64}, {y.vector().begin() + b * 2048, y.vector().begin() + (b + 1) * 2048});
      nn::GradientTape tape;
      const Tensor predictions = model.call(xb, training, &tape);
      const nn::LossValue loss = mse.compute(yb, predictions);
      const auto grads = tape.gradient(loss.grad, model.trainable_weights());
      optimizer.apply_gradients(nn::zip(grads, model.trainable_weights()));
    }
  }
}

}  // namespace

int main() try {
  const Tensor x = normal(Shape{256, 10}, 1, 2.0f), y = normal(Shape{256, 64}, 2, 0.5f);

  std::printf("Example 1: fit(), then get_layer('bn_layer').moving_mean\n");
  const auto model1 = make_model(0.99, false);
  model1->compile("adam", "mse");
  nn::FitOptions fit;
  fit.epochs = 5;
  fit.verbose = 0;
  model1->fit(x, y, fit);
  const Tensor mm1 = model1->get_layer<nn::BatchNormalization>("bn_layer")->moving_mean()->value;
  std::printf("  Moving Mean: %s\n", str(mm1, 4).c_str());
  check(max_abs_diff(mm1, Tensor::zeros(Shape{64})) > 0.05,
        "readable right after fit(), and moved: no custom loop needed");

  std::printf("Example 2: the article's loop, predictions = model(x_batch)\n");
  const auto article = make_model(0.9, false);
  custom_loop(*article, x, y, false);
  auto bn2 = article->get_layer<nn::BatchNormalization>("bn_layer");
  std::printf("  Moving Mean: %s\n", str(bn2->moving_mean()->value, 4).c_str());
  check(bn2->moving_mean()->value.vector() == Tensor::zeros(Shape{64}).vector() &&
            bn2->moving_variance()->value.vector() == Tensor::ones(Shape{64}).vector(),
        "80 steps of model(x_batch): moving statistics still exactly 0 / 1");
  const Tensor h = article->layers()[0]->forward(x, false, nullptr, nullptr), out = (*article)(x);
  double err = 0.0;  // out = relu(gamma * (h - 0) / sqrt(1 + 1e-3) + beta)
  for (std::int64_t i = 0; i < h.numel(); ++i) {
    const double bn_out = bn2->gamma()->value[i % 64] * h[i] / std::sqrt(1.001) + bn2->beta()->value[i % 64];
    err = std::fmax(err, std::fabs(out[i] - std::fmax(bn_out, 0.0)));
  }
  check(err < 1e-4, "and it normalized with 0 / 1, not with the batch statistics");

  std::printf("Example 2, corrected: model(x_batch, training=True)\n");
  const auto fixed = make_model(0.9, false);
  custom_loop(*fixed, x, y, true);
  const Tensor mm2 = fixed->get_layer<nn::BatchNormalization>("bn_layer")->moving_mean()->value;
  const Tensor data_mean = dense_means(*fixed, x);
  std::printf("  Moving Mean: %s\n  data mean:   %s\n", str(mm2, 4).c_str(), str(data_mean, 4).c_str());
  check(l1(mm2, data_mean) < 0.2 * l1(Tensor::zeros(Shape{64}), data_mean),
        "the moving mean now tracks the mean of the Dense outputs");

  std::printf("Example 3: imbalanced data, 1000 N(0, 1) rows + 100 N(5, 1) rows\n");
  const Tensor x0 = normal(Shape{1000, 10}, 3), x1 = normal(Shape{100, 10}, 4, 5.0f);
  Tensor x_train(Shape{1100, 10}), y_train(Shape{1100});
  for (std::int64_t i = 0; i < 11000; ++i) x_train[i] = i < 10000 ? x0[i] : x1[i - 10000];
  for (std::int64_t i = 1000; i < 1100; ++i) y_train[i] = 1.0f;
  const auto model3 = make_model(0.95, true);
  model3->compile("adam", "binary_crossentropy", {"accuracy"});
  fit.epochs = 10;
  model3->fit(x_train, y_train, fit);
  auto bn3 = model3->get_layer<nn::BatchNormalization>("bn_layer");
  const nn::Logs logs = model3->evaluate(x_train, y_train);
  std::printf("  Moving Mean: %s\n  evaluate: loss %.6f, accuracy %.6f\n",
              str(bn3->moving_mean()->value, 4).c_str(), logs.at("loss"), logs.at("accuracy"));
  check(logs.at("accuracy") > 0.95, "the two well-separated classes are learned");
  const Tensor mixture = dense_means(*model3, x_train), m0 = dense_means(*model3, x0),
               m1 = dense_means(*model3, x1);
  Tensor balanced(Shape{64});  // the mean a class-balanced sample would have
  for (std::int64_t c = 0; c < 64; ++c) balanced[c] = 0.5f * (m0[c] + m1[c]);
  check(l1(bn3->moving_mean()->value, mixture) < 0.5 * l1(bn3->moving_mean()->value, balanced),
        "the moving mean is the 10:1 mixture's mean, not a class-balanced one");
  // The moving statistics take no part in a training step: replace them, same output.
  const Tensor xb(Shape{32, 10}, {x_train.vector().begin() + 9800, x_train.vector().begin() + 10120});
  const auto saved = bn3->get_weights();
  nn::UpdateCollection u1, u2;
  const Tensor train_a = model3->call(xb, true, nullptr, &u1), infer_a = (*model3)(xb);
  bn3->set_weights({saved[0], saved[1], Tensor(Shape{64}, 3.0f), Tensor(Shape{64}, 9.0f)});
  const Tensor train_b = model3->call(xb, true, nullptr, &u2), infer_b = (*model3)(xb);
  u1.discard(), u2.discard();
  bn3->set_weights(saved);
  check(train_a.vector() == train_b.vector() && max_abs_diff(infer_a, infer_b) > 1e-3,
        "other moving statistics: training output bit-identical, inference output different");

  return example::verdict();
} catch (const bnorm::Error& e) {
  std::fprintf(stderr, "bnorm error: %s\n", e.what());
  return 2;
}
