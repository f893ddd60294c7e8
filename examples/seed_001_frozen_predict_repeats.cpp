// seed_001_frozen_predict_repeats: inference never updates moving statistics; only
// training calls do, and a later inference call then sees the (slightly) moved values.
//
// Mirrors article 001 ("tf.keras.layers.BatchNormalization with trainable=False appears to
// not update its internal moving mean and variance"), at the level of the layer alone:
//   the question:
//     np.random.seed(1); x = np.random.randn(3, 5) * 5 + 0.3
//     bn = tf.keras.layers.BatchNormalization(trainable=False, epsilon=1e-9)
//     for i in range(10): print(model.predict(x))        # the same values 10 times
//   the solution:
//     np.random.seed(1); x = np.random.randn(10, 5) * 5 + 0.3
//     z = tf.keras.layers.BatchNormalization(trainable=True, epsilon=1e-9, momentum=0.99)(z)
//     model.fit(x, x, batch_size=3, epochs=10)
//     pred = model(x).numpy()                    # moving averages; twice the same
//     pred = model(x, training=True).numpy()     # batch statistics, and an update
//     pred = model(x).numpy()                    # moving averages, slightly different
// The article's explanation is right (SEMANTICS.md 1.7, 1.8): predict / a bare call is
// inference, and statistics change only in training calls of a trainable layer.
// Differences of this twin: C++ cannot reproduce numpy's generator, so x holds the values
// numpy gives, pasted as constants (computed with `np.random.seed(1);
// (np.random.randn(10, 5) * 5 + 0.3).astype("float32")`; its first 3 rows are the 3x5
// x of the question). fit() shuffles and also trains gamma/beta with the dummy loss; here
// the layer sees the rows in order (batches of 3, 3, 3, 1) and gamma/beta stay 1/0.
// A batch of one row is fine in Keras: variance 0, no error (unlike PyTorch).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "example_checks.hpp"
#include "seed_001_data.hpp"
#include "bnorm/nn/batch_normalization.hpp"

namespace nn = bnorm::nn;
using example::check;
using example::max_abs_diff;
using bnorm::Shape;
using bnorm::Tensor;

namespace {

const std::vector<float>& kX = example::kArticle001X;  // seed_001_data.hpp


Tensor rows(std::int64_t begin, std::int64_t end) {  // x[begin:end], shape (end - begin, 5)
  return Tensor(Shape{end - begin, 5}, std::vector<float>(kX.begin() + begin * 5, kX.begin() + end * 5));
}


// Per-column mean and (biased) variance of a (N, 5) tensor, as pred.mean(axis=0), pred.var(axis=0).
void column_stats(const Tensor& t, std::vector<double>& mean, std::vector<double>& var) {
  const std::int64_t n = t.dim(0);
  mean.assign(5, 0.0);
  var.assign(5, 0.0);
  for (std::int64_t i = 0; i < t.numel(); ++i) mean[i % 5] += t[i] / static_cast<double>(n);
  for (std::int64_t i = 0; i < t.numel(); ++i)
    var[i % 5] += std::pow(t[i] - mean[i % 5], 2) / static_cast<double>(n);
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

}  // namespace

int main() try {
  // ---- The question: a frozen layer, predicted 10 times.
  const Tensor x3 = rows(0, 3);
  nn::BatchNormalization bn({.epsilon = 1e-9, .trainable = false});
  const Tensor first = bn(x3, false);  // model.predict(x): training=False
  bool identical = true;
  for (int i = 1; i < 10; ++i) identical = identical && bn(x3, false).vector() == first.vector();
  std::printf("predict(x), 10 times; the first row of the output: %f %f %f %f %f\n", double{first[0]},
              double{first[1]}, double{first[2]}, double{first[3]}, double{first[4]});
  check(identical, "10 inference calls return bit-identical outputs");
  check(max_abs_diff(first, x3) < 1e-5,
        "output = (x - 0) / sqrt(1 + 1e-9), i.e. x: moving stats still 0 / 1");
  check(bn.moving_mean()->value.vector() == std::vector<float>(5, 0.0f) &&
            bn.moving_variance()->value.vector() == std::vector<float>(5, 1.0f),
        "moving statistics unchanged (inference never updates them)");

  // ---- The solution: a trainable layer, "fit" for 10 epochs of batches of 3, 3, 3, 1 rows.
  const Tensor x = rows(0, 10);
  nn::BatchNormalization layer({.momentum = 0.99, .epsilon = 1e-9});
  std::vector<double> want_mean(5, 0.0), want_var(5, 1.0);  // the Keras 3 update, in double
  for (int epoch = 0; epoch < 10; ++epoch) {
    for (std::int64_t begin = 0; begin < 10; begin += 3) {
      const Tensor batch = rows(begin, std::min<std::int64_t>(begin + 3, 10));
      layer(batch, true);
      std::vector<double> bm, bv;
      column_stats(batch, bm, bv);
      for (std::size_t c = 0; c < 5; ++c) {
        want_mean[c] = want_mean[c] * 0.99 + bm[c] * 0.01;
        want_var[c] = want_var[c] * 0.99 + bv[c] * 0.01;
      }
    }
  }
  bool follows_formula = true;
  for (std::size_t c = 0; c < 5; ++c) {
    const auto i = static_cast<std::int64_t>(c);
    follows_formula = follows_formula && std::fabs(layer.moving_mean()->value[i] - want_mean[c]) < 1e-5 &&
                      std::fabs(layer.moving_variance()->value[i] - want_var[c]) < 1e-4;
  }
  check(follows_formula, "after 40 training calls: moving = moving * 0.99 + batch * 0.01 per batch");

  const Tensor pred1 = layer(x);
  print_stats("pred = model(x)  (moving averages from training)", pred1);
  const Tensor pred2 = layer(x);
  print_stats("pred = model(x)  (again)", pred2);
  check(pred1.vector() == pred2.vector(), "the second inference call returns the same output");

  const Tensor mean_before = layer.moving_mean()->value;
  const Tensor pred3 = layer(x, true);
  print_stats("pred = model(x, training=True)  (batch statistics: mean 0, var 1)", pred3);
  std::vector<double> m3, v3;
  column_stats(pred3, m3, v3);
  bool normalized = true;
  for (std::size_t c = 0; c < 5; ++c)
    normalized = normalized && std::fabs(m3[c]) < 1e-5 && std::fabs(v3[c] - 1) < 1e-4;
  check(normalized, "training=True normalizes with the batch statistics");
  const double moved = max_abs_diff(layer.moving_mean()->value, mean_before);
  check(moved > 0.0 && moved < 0.05,
        "the training call moved moving_mean slightly (max " + std::to_string(moved) + ")");

  const Tensor pred4 = layer(x);
  print_stats("pred = model(x)  (moving averages, after that update)", pred4);
  const double diff = max_abs_diff(pred4, pred1), train_diff = max_abs_diff(pred3, pred1);
  check(diff > 0.0 && diff < 0.25 * train_diff,
        "the next inference output differs slightly: max " + std::to_string(diff) +
            " (the training=True output differed by " + std::to_string(train_diff) + ")");

  return example::verdict();
} catch (const bnorm::Error& e) {
  std::fprintf(stderr, "bnorm error: %s\n", e.what());
  return 2;
}
