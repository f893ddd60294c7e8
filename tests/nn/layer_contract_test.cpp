// The generic layer contract (STYLE rule 10), run on both batch-norm conventions:
// finite-difference gradients of input and parameters in both modes, outputs assigned
// whatever the previous content, inference that changes nothing, training that does,
// and a weights round trip that reproduces outputs exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <memory>

#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/torch_batch_norm.hpp"
#include "test_util.hpp"

using bnorm::Shape;
using bnorm::Tensor;
using bnorm::test::random_tensor;
namespace nn = bnorm::nn;

namespace {

// What the contract needs from a layer, whatever its convention.
struct Adapter {
  std::string label;
  Shape shape;
  std::function<Tensor(const Tensor&, bool training, nn::BatchNormContext*)> forward;  // may update state
  std::function<Tensor(const Tensor&, bool training)> pure;  // same output, never updates state
  std::function<nn::BatchNormGradients(const nn::BatchNormContext&, const Tensor&)> backward;
  std::function<std::vector<Tensor*>()> params;   // gamma/weight, beta/bias
  std::function<std::vector<Tensor>()> state;     // everything, for comparisons
  std::function<void(const std::vector<Tensor>&)> set_state;
};

Adapter keras_adapter(std::shared_ptr<nn::BatchNormalization> bn, Shape shape) {
  bn->build(shape);
  return {"keras " + shape.str(), shape,
          [bn](const Tensor& x, bool t, nn::BatchNormContext* c) { return bn->forward(x, t, c); },
          [bn](const Tensor& x, bool t) {
            nn::StatisticsUpdate u;
            return t ? bn->forward_collect(x, u) : bn->call(x, false);
          },
          [bn](const nn::BatchNormContext& c, const Tensor& dy) { return bn->backward(c, dy); },
          [bn] { return std::vector<Tensor*>{&bn->gamma()->value, &bn->beta()->value}; },
          [bn] { return bn->get_weights(); },
          [bn](const std::vector<Tensor>& w) { bn->set_weights(w); }};
}

Adapter torch_adapter(std::shared_ptr<nn::TorchBatchNorm> m, Shape shape) {
  auto pure = [m](const Tensor& x, bool t) {
    nn::TorchBatchNorm copy = *m;  // a copy absorbs the statistics update
    copy.train(t);
    return copy(x);
  };
  return {"torch " + shape.str(), shape,
          [m](const Tensor& x, bool t, nn::BatchNormContext* c) {
            m->train(t);
            return m->forward(x, c);
          },
          pure, [m](const nn::BatchNormContext& c, const Tensor& dy) { return m->backward(c, dy); },
          [m] { return std::vector<Tensor*>{m->weight(), m->bias()}; },
          [m] { return std::vector<Tensor>{*m->weight(), *m->bias(), *m->running_mean(), *m->running_var()}; },
          [m](const std::vector<Tensor>& w) {
            *m->weight() = w[0];
            *m->bias() = w[1];
            *m->running_mean() = w[2];
            *m->running_var() = w[3];
          }};
}

std::vector<Adapter> adapters() {
  std::vector<Adapter> a;
  a.push_back(keras_adapter(std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.name = "k1"}),
                            Shape{6, 4}));
  a.push_back(keras_adapter(
      std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.axis = {1}, .name = "k2"}),
      Shape{3, 2, 4, 3}));
  a.push_back(keras_adapter(std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{
                                .axis = {-2}, .version = nn::KerasVersion::keras2, .name = "k3"}),
                            Shape{2, 3, 5, 2}));
  a.push_back(keras_adapter(std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{
                                .axis = {1, 3}, .version = nn::KerasVersion::keras2, .name = "k4"}),
                            Shape{3, 2, 4, 3}));  // several channel axes, not contiguous
  a.push_back(torch_adapter(std::make_shared<nn::TorchBatchNorm>(nn::BatchNorm2d(3)), Shape{2, 3, 4, 2}));
  a.push_back(torch_adapter(std::make_shared<nn::TorchBatchNorm>(nn::BatchNorm1d(4)), Shape{5, 4}));
  return a;
}

void randomize(Adapter& a) {
  std::uint32_t seed = 40;
  for (Tensor* p : a.params()) *p = random_tensor(p->shape(), seed++, 0.5f, 1.0f);
}

}  // namespace

TEST(LayerContract, GradientsMatchFiniteDifferencesInBothModes) {
  for (Adapter a : adapters()) {
    randomize(a);
    for (bool training : {true, false}) {
      SCOPED_TRACE(a.label + (training ? " training" : " inference"));
      const Tensor x = random_tensor(a.shape, 1, 2.0f, 0.5f);
      const Tensor dy = random_tensor(a.shape, 2);
      nn::BatchNormContext ctx;
      a.forward(x, training, &ctx);
      const auto g = a.backward(ctx, dy);
      auto loss = [&](const Tensor& xi) { return bnorm::test::dot(a.pure(xi, training), dy); };
      const float h = 1e-2f;
      for (std::int64_t i = 0; i < x.numel(); i += 5) {
        Tensor xp = x, xm = x;
        xp[i] += h;
        xm[i] -= h;
        const double fd = (loss(xp) - loss(xm)) / (2.0 * h);
        EXPECT_NEAR(g.dx[i], fd, 2e-3 * (1.0 + std::fabs(fd))) << "dx[" << i << "]";
      }
      const auto params = a.params();
      const Tensor* grads[] = {&*g.dgamma, &*g.dbeta};
      for (std::size_t p = 0; p < 2; ++p) {
        for (std::int64_t c = 0; c < params[p]->numel(); ++c) {
          const float keep = (*params[p])[c];
          (*params[p])[c] = keep + h;
          const double lp = loss(x);
          (*params[p])[c] = keep - h;
          const double lm = loss(x);
          (*params[p])[c] = keep;
          EXPECT_NEAR((*grads[p])[c], (lp - lm) / (2.0 * h), 2e-3 * (1.0 + std::fabs((lp - lm) / (2.0 * h))))
              << "param " << p << "[" << c << "]";
        }
      }
    }
  }
}

TEST(LayerContract, InferenceChangesNothingTrainingUpdatesStatistics) {
  for (Adapter a : adapters()) {
    SCOPED_TRACE(a.label);
    const Tensor x = random_tensor(a.shape, 3, 2.0f, 3.0f);
    const auto before = a.state();
    const Tensor y1 = a.forward(x, false, nullptr);
    const Tensor y2 = a.forward(x, false, nullptr);
    EXPECT_EQ(y1.vector(), y2.vector());
    for (std::size_t i = 0; i < before.size(); ++i) EXPECT_EQ(a.state()[i].vector(), before[i].vector());
    a.forward(x, true, nullptr);
    EXPECT_NE(a.state()[2].vector(), before[2].vector()) << "moving mean did not move";
  }
}

TEST(LayerContract, WeightsRoundTripReproducesOutputsExactly) {
  for (Adapter a : adapters()) {
    SCOPED_TRACE(a.label);
    randomize(a);
    a.forward(random_tensor(a.shape, 4, 1.0f, 2.0f), true, nullptr);
    const auto saved = a.state();
    const Tensor x = random_tensor(a.shape, 5);
    const Tensor want = a.forward(x, false, nullptr);
    a.forward(random_tensor(a.shape, 6, 3.0f), true, nullptr);  // move away
    randomize(a);
    a.set_state(saved);
    EXPECT_EQ(a.forward(x, false, nullptr).vector(), want.vector());
  }
}
