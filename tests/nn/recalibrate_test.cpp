// Recalibration (bnorm/nn/recalibrate.hpp): every batch-normalization layer's moving
// statistics against a double-precision population computation over the layer's input,
// written here with plain loops; batch sizes that do not divide the sample count; data
// far from zero; the stored variance of each convention; state unchanged on failure;
// idempotence; inference after recalibration against training-mode normalization of the
// whole dataset.
#include "bnorm/nn/recalibrate.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/torch_batch_norm.hpp"
#include "bnorm/nn/updates.hpp"

using bnorm::Shape;
using bnorm::Tensor;
namespace nn = bnorm::nn;

namespace {

// offset + spread * N(0, 1), deterministic (LCG, Box-Muller).
Tensor gaussian(const Shape& shape, double offset, double spread, std::uint64_t seed) {
  Tensor x(shape);
  std::uint64_t state = 0x9e3779b97f4a7c15ULL ^ seed;
  const auto uniform = [&] {  // (0, 1)
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (static_cast<double>(state >> 11) + 0.5) * 0x1.0p-53;
  };
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double u1 = uniform(), u2 = uniform();
    x[i] = static_cast<float>(offset +
                              spread * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  return x;
}

// Per-channel population moments of z by plain double loops (two passes), channels on
// `axes` (non-negative, sorted; flat index row-major over them).
struct Population {
  std::int64_t count = 0;
  std::vector<double> mean, m2;
};

Population population(const Tensor& z, const std::vector<int>& axes) {
  const Shape& s = z.shape();
  std::int64_t channels = 1;
  for (int a : axes) channels *= s[a];
  Population p;
  p.count = z.numel() / channels;
  p.mean.assign(static_cast<std::size_t>(channels), 0.0);
  p.m2.assign(p.mean.size(), 0.0);
  std::vector<std::int64_t> channel(static_cast<std::size_t>(z.numel()));
  std::vector<std::int64_t> index(static_cast<std::size_t>(s.rank()));
  for (std::int64_t i = 0; i < z.numel(); ++i) {
    std::int64_t rest = i;
    for (int d = s.rank() - 1; d >= 0; --d) {
      index[static_cast<std::size_t>(d)] = rest % s[d];
      rest /= s[d];
    }
    std::int64_t c = 0;
    for (int a : axes) c = c * s[a] + index[static_cast<std::size_t>(a)];
    channel[static_cast<std::size_t>(i)] = c;
    p.mean[static_cast<std::size_t>(c)] += z[i];
  }
  for (auto& m : p.mean) m /= static_cast<double>(p.count);
  for (std::int64_t i = 0; i < z.numel(); ++i) {
    const auto c = static_cast<std::size_t>(channel[static_cast<std::size_t>(i)]);
    const double d = z[i] - p.mean[c];
    p.m2[c] += d * d;
  }
  return p;
}

// The input of layers()[k] on all of x at once, by the layers' own inference calls.
Tensor prefix(nn::Model& model, const Tensor& x, std::size_t k) {
  Tensor y = x;
  for (std::size_t i = 0; i < k; ++i) y = model.layers()[i]->forward(y, false, nullptr, nullptr);
  return y;
}

// Every batch-normalization layer's statistics against the population of its input,
// computed with the statistics the model holds now for the layers before it (the
// already-recalibrated ones): mean within 1e-6 (|mean| + std), variance within relative
// 1e-6. Fused Keras 2 layers store M2 / (N - 1), the others M2 / N.
void expect_population_statistics(nn::Model& model, const Tensor& x) {
  for (std::size_t k = 0; k < model.layers().size(); ++k) {
    auto* bn = dynamic_cast<nn::BatchNormalization*>(model.layers()[k].get());
    if (bn == nullptr) continue;
    const Population p = population(prefix(model, x, k), bn->axes());
    const bool unbiased = bn->options().version == nn::KerasVersion::keras2 && bn->fused();
    const double divisor = unbiased ? static_cast<double>(p.count - 1) : static_cast<double>(p.count);
    const Tensor& mean = bn->moving_mean()->value;
    const Tensor& var = bn->moving_variance()->value;
    ASSERT_EQ(mean.numel(), static_cast<std::int64_t>(p.mean.size())) << bn->name();
    for (std::size_t c = 0; c < p.mean.size(); ++c) {
      const double want_var = p.m2[c] / divisor;
      const auto i = static_cast<std::int64_t>(c);
      EXPECT_LE(std::abs(mean[i] - p.mean[c]), 1e-6 * (std::abs(p.mean[c]) + std::sqrt(want_var)))
          << bn->name() << " channel " << c << ": " << mean[i] << " against " << p.mean[c];
      EXPECT_LE(std::abs(var[i] - want_var), 1e-6 * want_var)
          << bn->name() << " channel " << c << ": " << var[i] << " against " << want_var;
    }
  }
}

std::shared_ptr<nn::BatchNormalization> batch_norm(nn::BatchNormalizationOptions o) {
  return std::make_shared<nn::BatchNormalization>(std::move(o));
}

// gamma, beta and the Dense biases away from their initial values, so that every layer
// input has its own offset (500 after each Dense: far from zero against a spread of 1).
void perturb(nn::Model& model) {
  std::uint64_t seed = 11;
  for (const auto& layer : model.layers()) {
    if (auto* bn = dynamic_cast<nn::BatchNormalization*>(layer.get())) {
      const Shape s = bn->gamma()->value.shape();
      bn->gamma()->value = gaussian(s, 1.0, 0.2, seed++);
      bn->beta()->value = gaussian(s, 0.0, 0.5, seed++);
    } else if (auto* dense = dynamic_cast<nn::Dense*>(layer.get()); dense && dense->bias()) {
      dense->bias()->value = gaussian(dense->bias()->value.shape(), 500.0, 3.0, seed++);
    }
  }
}

// Functional: Input (3, 4, 5) -> BN (axis 1: channels-first rank 4, Keras 3) -> tanh ->
// BN (axes 1 and 3, Keras 2 non-fused: parameters (1, 3, 1, 5)) -> Flatten -> Dense 8 ->
// BN (channels-last, Keras 3) -> relu -> Dense 6 -> BN (Keras 2, rank 2: non-fused).
std::unique_ptr<nn::Model> mixed_model() {
  auto input = nn::Input({3, 4, 5});
  auto z = (*batch_norm({.axis = {1}, .name = "bn_nchw"}))(input);
  z = (*std::make_shared<nn::Activation>("tanh"))(z);
  z = (*batch_norm({.axis = {1, 3}, .version = nn::KerasVersion::keras2, .name = "bn_two_axes"}))(z);
  z = (*std::make_shared<nn::Flatten>())(z);
  z = (*std::make_shared<nn::Dense>(
      8, nn::DenseOptions{.kernel_initializer = nn::Initializer::glorot_uniform(1)}))(z);
  z = (*batch_norm({.name = "bn_dense"}))(z);
  z = (*std::make_shared<nn::Activation>("relu"))(z);
  z = (*std::make_shared<nn::Dense>(
      6, nn::DenseOptions{.kernel_initializer = nn::Initializer::glorot_uniform(2)}))(z);
  z = (*batch_norm({.version = nn::KerasVersion::keras2, .name = "bn_out"}))(z);
  auto model = std::make_unique<nn::Model>(input, z, "mixed");
  perturb(*model);
  return model;
}

// Sequential: (4, 5, 3) channels-last rank 4 -> BN Keras 2 fused (unbiased stored
// variance) -> Flatten -> Dense 5 -> BN Keras 2 fused = no.
std::unique_ptr<nn::Sequential> fused_model() {
  auto model = std::make_unique<nn::Sequential>(
      std::vector<nn::LayerPtr>{
          std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{4, 5, 3}),
          batch_norm({.version = nn::KerasVersion::keras2, .name = "bn_fused"}),
          std::make_shared<nn::Flatten>(),
          std::make_shared<nn::Dense>(
              5, nn::DenseOptions{.kernel_initializer = nn::Initializer::glorot_uniform(3)}),
          batch_norm({.version = nn::KerasVersion::keras2, .fused = nn::Fused::no, .name = "bn_plain"})},
      "fused");
  perturb(*model);
  return model;
}

std::vector<Tensor> statistics(nn::Model& model) {
  std::vector<Tensor> out;
  for (const auto& layer : model.layers()) {
    if (auto* bn = dynamic_cast<nn::BatchNormalization*>(layer.get())) {
      out.push_back(bn->moving_mean()->value);
      out.push_back(bn->moving_variance()->value);
    }
  }
  return out;
}

void expect_bitwise_equal(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].shape(), b[i].shape());
    for (std::int64_t j = 0; j < a[i].numel(); ++j)
      ASSERT_EQ(a[i][j], b[i][j]) << "tensor " << i << " element " << j;
  }
}

void expect_close(const std::vector<Tensor>& a, const std::vector<Tensor>& b, double relative) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].shape(), b[i].shape());
    for (std::int64_t j = 0; j < a[i].numel(); ++j) {
      EXPECT_LE(std::abs(a[i][j] - b[i][j]), relative * (std::abs(b[i][j]) + 1e-3))
          << "tensor " << i << " element " << j;
    }
  }
}

}  // namespace

TEST(Recalibrate, MixedModelMatchesDoublePopulationForEveryBatchSize) {
  const Tensor x = gaussian(Shape{1000, 3, 4, 5}, 1e3, 1.0, 1);
  for (std::int64_t batch : {64, 7, 1000, 4096}) {
    SCOPED_TRACE("batch size " + std::to_string(batch));
    auto model = mixed_model();
    const nn::RecalibrationReport r = nn::recalibrate(*model, x, {.batch_size = batch});
    EXPECT_EQ(r.samples, 1000);
    ASSERT_EQ(r.layers.size(), 4u);
    const std::vector<std::string> names{"bn_nchw", "bn_two_axes", "bn_dense", "bn_out"};
    const std::vector<std::size_t> index{0, 2, 5, 8};
    const std::vector<std::int64_t> counts{1000 * 20, 1000 * 4, 1000, 1000};
    for (std::size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(r.layers[i].name, names[i]);
      EXPECT_EQ(r.layers[i].index, index[i]);
      EXPECT_TRUE(r.layers[i].recalibrated);
      EXPECT_EQ(r.layers[i].variance_kind, nn::StoredVariance::biased);
      EXPECT_EQ(r.layers[i].moments.count, counts[i]);
      auto* bn = model->get_layer<nn::BatchNormalization>(names[i]).get();
      EXPECT_EQ(r.layers[i].new_mean.values()[0], bn->moving_mean()->value[0]);
      EXPECT_EQ(r.layers[i].old_variance.values()[0], 1.0f);  // the initializer's value
    }
    EXPECT_EQ(r.layers[1].new_mean.shape(), (Shape{1, 3, 1, 5}));  // Keras 2's broadcast shape
    expect_population_statistics(*model, x);
  }
}

TEST(Recalibrate, FusedKeras2StoresTheUnbiasedVariance) {
  const Tensor x = gaussian(Shape{333, 4, 5, 3}, 1e3, 2.0, 2);
  auto model = fused_model();
  const auto r = nn::recalibrate(*model, x, {.batch_size = 50});
  ASSERT_EQ(r.layers.size(), 2u);
  EXPECT_EQ(r.layers[0].variance_kind, nn::StoredVariance::unbiased);
  EXPECT_EQ(r.layers[1].variance_kind, nn::StoredVariance::biased);
  EXPECT_EQ(r.layers[0].moments.count, 333 * 20);
  expect_population_statistics(*model, x);
  // Against the report's own double moments: M2 / (N - 1), rounded once to float.
  const auto& m = r.layers[0].moments;
  for (std::int64_t c = 0; c < 3; ++c) {
    EXPECT_EQ(r.layers[0].new_variance[c],
              static_cast<float>(m.m2[static_cast<std::size_t>(c)] / static_cast<double>(m.count - 1)));
  }
}

TEST(Recalibrate, IdempotentAndIndependentOfTheBatchSize) {
  const Tensor x = gaussian(Shape{500, 3, 4, 5}, 1e3, 1.0, 3);
  auto a = mixed_model();
  nn::recalibrate(*a, x, {.batch_size = 37});
  const std::vector<Tensor> once = statistics(*a);
  nn::recalibrate(*a, x, {.batch_size = 37});
  expect_close(statistics(*a), once, 1e-6);
  nn::recalibrate(*a, x, {.batch_size = 500});
  expect_close(statistics(*a), once, 1e-6);
}

// After recalibration on x, inference on x is training-mode normalization of x as one
// batch (the layers' statistics are x's population statistics: Keras 3 and Keras 2
// non-fused store the biased variance that training normalizes with). The training call
// collects its updates instead of applying them.
TEST(Recalibrate, InferenceEqualsTrainingModeOnTheWholeDataset) {
  const Tensor x = gaussian(Shape{400, 3, 4, 5}, 1e3, 1.0, 4);
  auto model = mixed_model();
  // The largest difference between inference and training mode on all of x, relative to
  // 1 + |output|; the training call collects its updates instead of applying them.
  const auto worst_difference = [&] {
    const std::vector<Tensor> before = statistics(*model);
    const Tensor inference = model->predict(x, 64);
    nn::UpdateCollection updates;
    const Tensor training = model->call(x, true, nullptr, &updates);
    updates.discard();
    expect_bitwise_equal(statistics(*model), before);
    EXPECT_EQ(inference.shape(), training.shape());
    double worst = 0;
    for (std::int64_t i = 0; i < inference.numel(); ++i) {
      worst = std::max(
          worst, std::abs(static_cast<double>(inference[i]) - training[i]) / (1.0 + std::abs(training[i])));
    }
    return worst;
  };
  EXPECT_GT(worst_difference(), 0.1);  // initial statistics (0, 1): far off
  nn::recalibrate(*model, x, {.batch_size = 64});
  // Float rounding only: the data at 1e3 have an ulp of 6e-5, so the float means of the
  // two paths may differ by that much (measured: 1.9e-4 at the output).
  EXPECT_LT(worst_difference(), 1e-3);
}

TEST(Recalibrate, FrozenLayersRecalibratedUnlessSkipped) {
  const Tensor x = gaussian(Shape{300, 3, 4, 5}, 1e3, 1.0, 5);
  auto model = mixed_model();
  model->get_layer("bn_two_axes")->set_trainable(false);
  auto r = nn::recalibrate(*model, x, {.batch_size = 64});
  EXPECT_TRUE(r.layers[1].recalibrated);
  expect_population_statistics(*model, x);

  auto skipped = mixed_model();
  skipped->get_layer("bn_two_axes")->set_trainable(false);
  auto* frozen = skipped->get_layer<nn::BatchNormalization>("bn_two_axes").get();
  const Tensor old_mean = frozen->moving_mean()->value;
  r = nn::recalibrate(*skipped, x, {.batch_size = 64, .skip_frozen = true});
  EXPECT_FALSE(r.layers[1].recalibrated);
  EXPECT_EQ(r.layers[1].moments.count, 0);
  expect_bitwise_equal({frozen->moving_mean()->value}, {old_mean});
  // The layers after it see its kept statistics: check them, with the frozen layer left
  // out of the expectation.
  const Population p = population(prefix(*skipped, x, 5), {1});
  auto* after = skipped->get_layer<nn::BatchNormalization>("bn_dense").get();
  for (std::size_t c = 0; c < p.mean.size(); ++c) {
    const auto i = static_cast<std::int64_t>(c);
    EXPECT_NEAR(after->moving_mean()->value[i], p.mean[c], 1e-6 * std::abs(p.mean[c]));
    const double var = p.m2[c] / static_cast<double>(p.count);
    EXPECT_NEAR(after->moving_variance()->value[i], var, 1e-6 * var);
  }
}

TEST(Recalibrate, StateUnchangedOnFailure) {
  const Tensor x = gaussian(Shape{200, 3, 4, 5}, 1e3, 1.0, 6);
  auto model = mixed_model();
  nn::recalibrate(*model, gaussian(Shape{50, 3, 4, 5}, 0.0, 3.0, 7),
                  {.batch_size = 16});  // non-initial values
  const std::vector<Tensor> before = statistics(*model);
  const std::vector<Tensor> weights = model->get_weights();

  // A NaN in one sample of a later batch: the first layer's statistics are not finite.
  Tensor bad = x;
  bad[150 * 60 + 7] = std::numeric_limits<float>::quiet_NaN();
  try {
    nn::recalibrate(*model, bad, {.batch_size = 64});
    FAIL() << "a NaN in x was accepted";
  } catch (const bnorm::NumericalError& e) {
    EXPECT_NE(std::string(e.what()).find("bn_nchw"), std::string::npos) << e.what();
  }
  expect_bitwise_equal(statistics(*model), before);

  // A failure at the third layer, after two were recalibrated: the Dense before it
  // overflows to infinity. Both earlier layers are restored.
  auto* dense = dynamic_cast<nn::Dense*>(model->layers()[4].get());
  const Tensor kernel = dense->kernel()->value;
  dense->kernel()->value = Tensor(kernel.shape(), 3e38f);
  try {
    nn::recalibrate(*model, x, {.batch_size = 64});
    FAIL() << "infinite activations were accepted";
  } catch (const bnorm::NumericalError& e) {
    EXPECT_NE(std::string(e.what()).find("bn_dense"), std::string::npos) << e.what();
  }
  expect_bitwise_equal(statistics(*model), before);
  dense->kernel()->value = kernel;

  // Wrong input shape, bad options, no sample.
  EXPECT_THROW(nn::recalibrate(*model, gaussian(Shape{10, 3, 4, 6}, 0.0, 1.0, 8)), bnorm::ShapeError);
  EXPECT_THROW(nn::recalibrate(*model, x, {.batch_size = 0}), bnorm::ArgumentError);
  EXPECT_THROW(nn::recalibrate(*model, Tensor(Shape{0, 3, 4, 5})), bnorm::ArgumentError);
  expect_bitwise_equal(statistics(*model), before);
  expect_bitwise_equal(model->get_weights(), weights);
}

TEST(Recalibrate, OnlyTheMovingStatisticsChange) {
  const Tensor x = gaussian(Shape{120, 3, 4, 5}, 1e3, 1.0, 9);
  auto model = mixed_model();
  std::vector<Tensor> before;
  for (nn::Variable* v : model->weights())
    if (v->name != "moving_mean" && v->name != "moving_variance") before.push_back(v->value);
  nn::recalibrate(*model, x, {.batch_size = 50});
  std::vector<Tensor> after;
  for (nn::Variable* v : model->weights())
    if (v->name != "moving_mean" && v->name != "moving_variance") after.push_back(v->value);
  expect_bitwise_equal(after, before);
}

TEST(Recalibrate, ModelsWithoutOrWithUnbuiltOrSharedBatchNorms) {
  nn::Sequential plain(
      {std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{4}), std::make_shared<nn::Dense>(3)});
  const Tensor x = gaussian(Shape{10, 4}, 0.0, 1.0, 10);
  EXPECT_TRUE(nn::recalibrate(plain, x).layers.empty());

  nn::Sequential unbuilt({batch_norm({.name = "lazy"})});
  try {
    nn::recalibrate(unbuilt, x);
    FAIL() << "an unbuilt layer was accepted";
  } catch (const bnorm::StateError& e) {
    EXPECT_NE(std::string(e.what()).find("lazy"), std::string::npos) << e.what();
  }

  auto shared = batch_norm({.name = "shared"});
  auto input = nn::Input({4});
  auto z = (*shared)((*shared)(input));
  nn::Model twice(input, z);
  EXPECT_THROW(nn::recalibrate(twice, x), bnorm::ArgumentError);
}

TEST(Recalibrate, TorchBatchNormStoresTheUnbiasedVariance) {
  const Tensor x = gaussian(Shape{77, 3, 4, 5}, 1e3, 1.5, 12);
  nn::TorchBatchNorm bn = nn::BatchNorm2d(3);
  bn.set_num_batches_tracked(5);
  const auto r = nn::recalibrate(bn, x, {.batch_size = 10});
  const Population p = population(x, {1});
  EXPECT_EQ(r.moments.count, 77 * 20);
  for (std::size_t c = 0; c < 3; ++c) {
    const auto i = static_cast<std::int64_t>(c);
    const double want = p.m2[c] / static_cast<double>(p.count - 1);
    EXPECT_LE(std::abs((*bn.running_mean())[i] - p.mean[c]), 1e-6 * std::abs(p.mean[c]));
    EXPECT_LE(std::abs((*bn.running_var())[i] - want), 1e-6 * want);
  }
  EXPECT_EQ(bn.num_batches_tracked(), 5);
  EXPECT_TRUE(bn.is_training());

  // Errors leave the module unchanged.
  const Tensor mean = *bn.running_mean();
  EXPECT_THROW(nn::recalibrate(bn, gaussian(Shape{5, 4, 2, 2}, 0.0, 1.0, 13)), bnorm::ShapeError);
  EXPECT_THROW(nn::recalibrate(bn, gaussian(Shape{5, 3, 2}, 0.0, 1.0, 13)), bnorm::ShapeError);
  EXPECT_THROW(nn::recalibrate(bn, gaussian(Shape{1, 3, 1, 1}, 0.0, 1.0, 13)), bnorm::ShapeError);
  Tensor bad = x;
  bad[3] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(nn::recalibrate(bn, bad), bnorm::NumericalError);
  expect_bitwise_equal({*bn.running_mean()}, {mean});
  nn::TorchBatchNorm lazy = nn::LazyBatchNorm2d();
  EXPECT_THROW(nn::recalibrate(lazy, x), bnorm::StateError);
  nn::TorchBatchNorm untracked = nn::BatchNorm2d(3, {.track_running_stats = false});
  EXPECT_THROW(nn::recalibrate(untracked, x), bnorm::StateError);
}

TEST(Recalibrate, PopulationMomentsAndStoredVariance) {
  const Tensor x = gaussian(Shape{101, 6}, 1e4, 1.0, 14);
  const nn::ChannelMoments whole = nn::population_moments(x, {1}, 1000);
  const nn::ChannelMoments sliced = nn::population_moments(x, {-1}, 8);
  const Population p = population(x, {1});
  ASSERT_EQ(whole.count, 101);
  for (std::size_t c = 0; c < 6; ++c) {
    EXPECT_NEAR(sliced.mean[c], p.mean[c], 1e-9 * std::abs(p.mean[c]));
    EXPECT_NEAR(sliced.m2[c], p.m2[c], 1e-9 * p.m2[c]);
    EXPECT_NEAR(whole.m2[c], p.m2[c], 1e-9 * p.m2[c]);
  }
  const auto biased = nn::stored_variance(sliced, nn::StoredVariance::biased);
  const auto unbiased = nn::stored_variance(sliced, nn::StoredVariance::unbiased);
  EXPECT_DOUBLE_EQ(biased[2], sliced.m2[2] / 101);
  EXPECT_DOUBLE_EQ(unbiased[2], sliced.m2[2] / 100);
  nn::ChannelMoments one(2);
  one.count = 1;
  EXPECT_EQ(nn::stored_variance(one, nn::StoredVariance::unbiased), (std::vector<double>{0.0, 0.0}));
  EXPECT_EQ(nn::stored_variance(nn::ChannelMoments(2), nn::StoredVariance::biased),
            (std::vector<double>{0.0, 0.0}));
  EXPECT_THROW(nn::population_moments(x, {2}, 8), bnorm::ArgumentError);
  EXPECT_THROW(nn::population_moments(x, {1}, 0), bnorm::ArgumentError);
}

TEST(Model, LayerInputIsThePrefixInInferenceMode) {
  auto model = mixed_model();
  const Tensor x = gaussian(Shape{9, 3, 4, 5}, 0.0, 1.0, 15);
  const Tensor all = model->layer_input(x, model->layers().size());
  const Tensor out = model->predict(x, 9);
  ASSERT_EQ(all.shape(), out.shape());
  for (std::int64_t i = 0; i < out.numel(); ++i) EXPECT_EQ(all[i], out[i]);
  EXPECT_EQ(model->layer_input(x, 0).shape(), x.shape());
  EXPECT_EQ(model->layer_input(x, 4).shape(), (Shape{9, 60}));
  EXPECT_THROW(model->layer_input(x, model->layers().size() + 1), bnorm::ArgumentError);
  EXPECT_THROW(model->layer_input(gaussian(Shape{9, 60}, 0.0, 1.0, 16), 2), bnorm::ShapeError);
}

// Batch renormalization keeps its variance as moving_stddev: recalibration sets it (and
// the renorm averages) so that moving_variance = moving_stddev^2 - epsilon still holds and
// the next training step starts from the population's statistics.
TEST(Recalibrate, RenormLayersGetTheirStddevToo) {
  nn::BatchNormalizationOptions o;
  o.renorm = true;
  o.name = "renorm";
  auto bn = std::make_shared<nn::BatchNormalization>(o);
  auto in = nn::Input({3});
  nn::Model model(in, (*bn)(in));
  const Tensor x = gaussian(Shape{50, 3}, 4.0, 2.0, 31);
  (void)model.predict(x);
  nn::recalibrate(model, x, {.batch_size = 16});
  for (std::int64_t c = 0; c < 3; ++c) {
    const double var = bn->moving_variance()->value[c];
    const double sd = bn->moving_stddev()->value[c];
    EXPECT_NEAR(sd * sd - o.epsilon, var, 1e-5 * var);
    EXPECT_EQ(bn->renorm_mean()->value[c], bn->moving_mean()->value[c]);
    EXPECT_EQ(bn->renorm_stddev()->value[c], bn->moving_stddev()->value[c]);
  }
}
