// seed_001_model_predict_and_fit: at model level, predict() and a bare model(x) never update
// batch normalization's moving statistics; fit() and model(x, training=True) do.
//
// Mirrors article 001 ("tf.keras.layers.BatchNormalization with trainable=False appears to
// not update its internal moving mean and variance"), with the functional API:
//   the question:
//     bn = tf.keras.layers.BatchNormalization(trainable=False, epsilon=1e-9)
//     z = input = tf.keras.layers.Input([5]); z = bn(z)
//     model = tf.keras.Model(inputs=input, outputs=z)
//     for i in range(10): print(model.predict(x))          # the same values 10 times
//   the solution:
//     z = tf.keras.layers.BatchNormalization(trainable=True, epsilon=1e-9, momentum=0.99)(z)
//     model.compile(loss=lambda x, y: (x - y) ** 2)
//     model.fit(x, x, batch_size=3, epochs=10)
//     pred = model(x).numpy(); print(pred.mean(axis=0)); print(pred.var(axis=0))  # x2
//     pred = model(x, training=True).numpy() ...              # batch stats, and an update
//     pred = model(x).numpy() ...                             # slightly different
// The article is right (SEMANTICS.md 1.7, 1.8, section 7 item 13). The layer-only twin is
// seed_001_frozen_predict_repeats.cpp. Here compile() without an optimizer takes Keras 3's
// default, "rmsprop", and the dummy loss also trains gamma / beta, so the training=True
// output has mean beta and variance about gamma^2 (not exactly 0 / 1). Keras's fit shuffles
// with its own RNG, which bnorm cannot reproduce: shuffle=false here (batches of rows
// 0-2, 3-5, 6-8, 9). tests/nn/training_parity_test.cpp (the case named "001") compares the
// numbers of this scenario with real Keras.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/model.hpp"
#include "example_checks.hpp"
#include "seed_001_data.hpp"

namespace nn = bnorm::nn;
using bnorm::Shape;
using bnorm::Tensor;
using example::check;
using example::max_abs_diff;

namespace {

const std::vector<float>& kX = example::kArticle001X;  // seed_001_data.hpp

Tensor rows(std::int64_t begin, std::int64_t end) {  // x[begin:end]
  return Tensor(Shape{end - begin, 5}, std::vector<float>(kX.begin() + begin * 5, kX.begin() + end * 5));
}

// pred.mean(axis=0), pred.var(axis=0) of a (N, 5) tensor, in double.
void column_stats(const Tensor& t, std::vector<double>& mean, std::vector<double>& var) {
  const auto n = static_cast<double>(t.dim(0));
  mean.assign(5, 0.0);
  var.assign(5, 0.0);
  for (std::int64_t i = 0; i < t.numel(); ++i) mean[i % 5] += t[i] / n;
  for (std::int64_t i = 0; i < t.numel(); ++i) var[i % 5] += std::pow(t[i] - mean[i % 5], 2) / n;
}

void print_stats(const char* label, const Tensor& pred) {
  std::vector<double> mean, var;
  column_stats(pred, mean, var);
  std::printf("%s\n  mean:", label);
  for (double v : mean) std::printf(" %10.6f", v);
  std::printf("\n  var: ");
  for (double v : var) std::printf(" %10.6f", v);
  std::printf("\n");
}

std::shared_ptr<nn::BatchNormalization> make_bn(bool trainable, double momentum) {
  nn::BatchNormalizationOptions o;
  o.momentum = momentum;
  o.epsilon = 1e-9;
  o.trainable = trainable;
  return std::make_shared<nn::BatchNormalization>(o);
}

}  // namespace

int main() try {
  std::printf("The question: a frozen BN in a functional model, predict(x) 10 times\n");
  const Tensor x3 = rows(0, 3);  // np.random.randn(3, 5) * 5 + 0.3: the first 3 rows
  auto bn = make_bn(false, 0.99);
  auto input = nn::Input({5});
  nn::Model question(input, (*bn)(input));
  const Tensor first = question.predict(x3);
  bool identical = true;
  for (int i = 1; i < 10; ++i) identical = identical && question.predict(x3).vector() == first.vector();
  check(identical, "10 predict() calls return bit-identical outputs");
  check(max_abs_diff(first, x3) < 1e-5, "and the output is x itself: moving statistics still 0 / 1");

  std::printf("The solution: trainable BN, compile(loss=lambda x, y: (x - y) ** 2), fit(x, x, 3, 10)\n");
  const Tensor x = rows(0, 10);
  auto layer = make_bn(true, 0.99);
  auto z = nn::Input({5});
  nn::Model model(z, (*layer)(z));
  model.compile("rmsprop", std::shared_ptr<nn::Loss>(nn::Loss::custom(
                               "<lambda>", [](float t, float p) { return (t - p) * (t - p); },
                               [](float t, float p) { return 2.0f * (p - t); })));
  nn::FitOptions fit;
  fit.batch_size = 3;
  fit.epochs = 10;
  fit.verbose = 0;
  fit.shuffle = false;
  model.fit(x, x, fit);

  std::vector<double> want_mean(5, 0.0), want_var(5, 1.0);  // the Keras 3 update, batch by batch
  for (int step = 0; step < 40; ++step) {
    const std::int64_t begin = 3 * (step % 4);
    std::vector<double> bm, bv;
    column_stats(rows(begin, std::min<std::int64_t>(begin + 3, 10)), bm, bv);
    for (std::size_t c = 0; c < 5; ++c) {
      want_mean[c] = want_mean[c] * 0.99 + bm[c] * 0.01;
      want_var[c] = want_var[c] * 0.99 + bv[c] * 0.01;
    }
  }
  double stat_err = 0.0;
  for (std::size_t c = 0; c < 5; ++c) {
    const auto i = static_cast<std::int64_t>(c);
    stat_err = std::fmax(stat_err, std::fabs(layer->moving_mean()->value[i] - want_mean[c]));
    stat_err = std::fmax(stat_err, std::fabs(layer->moving_variance()->value[i] - want_var[c]) / want_var[c]);
  }
  check(stat_err < 1e-4, "fit's 40 training steps: moving = moving * 0.99 + batch * 0.01 per batch");

  const Tensor pred1 = model(x);
  print_stats("pred = model(x)  (moving averages from training)", pred1);
  const Tensor pred2 = model(x);
  print_stats("pred = model(x)  (again)", pred2);
  check(pred1.vector() == pred2.vector(), "the second model(x) returns the same output");
  check(model.predict(x).vector() == pred1.vector(), "predict(x) is the same inference call");

  const Tensor mean_before = layer->moving_mean()->value;
  const Tensor pred3 = model(x, true);
  print_stats("pred = model(x, training=True)  (batch statistics)", pred3);
  std::vector<double> m3, v3;
  column_stats(pred3, m3, v3);
  bool batch_normalized = true;
  for (std::size_t c = 0; c < 5; ++c) {
    const double g = layer->gamma()->value[static_cast<std::int64_t>(c)];
    const double b = layer->beta()->value[static_cast<std::int64_t>(c)];
    batch_normalized = batch_normalized && std::fabs(m3[c] - b) < 1e-5 && std::fabs(v3[c] - g * g) < 1e-4;
  }
  check(batch_normalized, "training=True: output mean = beta, variance = gamma^2 (batch statistics)");
  const double moved = max_abs_diff(layer->moving_mean()->value, mean_before);
  check(moved > 0.0 && moved < 0.05, "and moving_mean moved slightly (max " + std::to_string(moved) + ")");

  const Tensor pred4 = model(x);
  print_stats("pred = model(x)  (moving averages, after that update)", pred4);
  const double diff = max_abs_diff(pred4, pred1), train_diff = max_abs_diff(pred3, pred1);
  check(diff > 0.0 && diff < 0.25 * train_diff, "the next model(x) differs slightly: max " +
                                                    std::to_string(diff) +
                                                    " (training=True: " + std::to_string(train_diff) + ")");

  return example::verdict();
} catch (const bnorm::Error& e) {
  std::fprintf(stderr, "bnorm error: %s\n", e.what());
  return 2;
}
