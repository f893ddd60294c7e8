// Graph models: branches, merge layers, shared tensors, nested models, Keras's layer
// order, the gradient tape through a graph (checked by finite differences in float),
// and the two rules for a recorded training argument (CNN.md section 7).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/merge.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/recalibrate.hpp"

using namespace bnorm;

namespace {

Tensor ramp(Shape s, float scale, float offset) {
  Tensor t(std::move(s));
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = offset + scale * std::sin(0.7f * static_cast<float>(i) + 0.3f);
  return t;
}

std::shared_ptr<nn::Dense> dense(std::int64_t units, const std::string& name, const std::string& activation = "linear",
                                 std::uint64_t seed = 1) {
  return std::make_shared<nn::Dense>(units, nn::DenseOptions{.activation = activation,
                                                             .kernel_initializer = nn::Initializer::glorot_uniform(seed),
                                                             .bias_initializer = nn::Initializer::constant(0.1f),
                                                             .name = name});
}

// The graph of CNN.md section 6.1 with Dense layers: stem used twice, Add, a nested model,
// Concatenate with the model input.
struct Example {
  std::shared_ptr<nn::Model> inner;
  std::unique_ptr<nn::Model> model;
};

Example example(std::optional<bool> inner_training) {
  auto inner_in = nn::Input({3}, "inner_in");
  auto bn = std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.name = "inner_bn"});
  auto inner = std::make_shared<nn::Model>(inner_in, (*bn)((*dense(3, "inner_dense", "linear", 4))(inner_in)), "inner");
  auto img = nn::Input({4}, "img");
  auto stem = (*dense(3, "stem", "linear", 2))(img);
  auto a = (*dense(3, "branch_a", "tanh", 3))(stem);
  auto b = (*std::make_shared<nn::Activation>("relu", "branch_b"))(stem);
  auto sum = (*std::make_shared<nn::Add>("sum"))({a, b});
  auto in = (*inner)(sum, inner_training);
  auto cat = (*std::make_shared<nn::Concatenate>(-1, "cat"))({in, img});
  return {inner, std::make_unique<nn::Model>(img, cat, "outer")};
}

// sum(y * r): a scalar loss whose dL/dy is r.
double weighted_sum(const Tensor& y, const Tensor& r) {
  double s = 0;
  for (std::int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(y[i]) * r[i];
  return s;
}

}  // namespace

TEST(Graph, LayersInKerasOrder) {
  auto ex = example(std::nullopt);
  std::vector<std::string> names;
  for (const auto& l : ex.model->layers()) names.push_back(l->name());
  EXPECT_EQ(names, (std::vector<std::string>{"stem", "branch_a", "branch_b", "sum", "inner", "cat"}));
  EXPECT_EQ(ex.model->compute_output_shape(Shape{-1, 4}), (Shape{-1, 7}));
  EXPECT_EQ(ex.model->weights().size(), 2u + 2u + 2u + 4u);  // stem, branch_a, inner_dense, inner_bn
}

TEST(Graph, ForwardMatchesTheLayersComposedByHand) {
  auto ex = example(std::nullopt);
  const Tensor x = ramp(Shape{5, 4}, 1.5f, 0.2f);
  const Tensor y = ex.model->predict(x);
  auto L = [&](const std::string& n) { return ex.model->get_layer(n); };
  const Tensor stem = L("stem")->forward(x, false, nullptr, nullptr);
  const Tensor a = L("branch_a")->forward(stem, false, nullptr, nullptr);
  const Tensor b = L("branch_b")->forward(stem, false, nullptr, nullptr);
  Tensor sum = a;
  for (std::int64_t i = 0; i < sum.numel(); ++i) sum[i] += b[i];
  const Tensor in = ex.inner->call(sum, false);
  ASSERT_EQ(y.shape(), (Shape{5, 7}));
  for (std::int64_t r = 0; r < 5; ++r) {
    for (std::int64_t c = 0; c < 3; ++c) EXPECT_EQ(y[r * 7 + c], in[r * 3 + c]);
    for (std::int64_t c = 0; c < 4; ++c) EXPECT_EQ(y[r * 7 + 3 + c], x[r * 4 + c]);
  }
}

TEST(Graph, GradientsMatchFiniteDifferences) {
  for (bool shared_tensor_only : {false, true}) {
    auto ex = example(std::nullopt);
    const Tensor x = ramp(Shape{6, 4}, 1.0f, 0.1f);
    const Tensor r = ramp(Shape{6, 7}, 0.8f, 0.0f);
    nn::GradientTape tape;
    // Inference mode: the loss is a smooth function of every weight (no batch statistics).
    const Tensor y = ex.model->call(x, false, &tape);
    (void)y;
    nn::Gradients grads = tape.gradient(r);
    const Tensor dx = tape.input_gradient();
    ASSERT_EQ(dx.shape(), x.shape());
    const float h = 1e-2f;
    auto loss = [&](const Tensor& in) { return weighted_sum(ex.model->call(in, false), r); };
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      Tensor p = x, m = x;
      p[i] += h;
      m[i] -= h;
      const double fd = (loss(p) - loss(m)) / (2.0 * h);
      EXPECT_NEAR(dx[i], fd, 2e-3 + 2e-3 * std::abs(fd)) << "dx[" << i << "]";
    }
    if (shared_tensor_only) continue;
    for (nn::Variable* v : ex.model->trainable_weights()) {
      ASSERT_TRUE(grads.count(v)) << v->name;
      const Tensor& g = grads.at(v);
      for (std::int64_t i = 0; i < v->value.numel(); ++i) {
        const float keep = v->value[i];
        v->value[i] = keep + h;
        const double up = loss(x);
        v->value[i] = keep - h;
        const double down = loss(x);
        v->value[i] = keep;
        const double fd = (up - down) / (2.0 * h);
        EXPECT_NEAR(g[i], fd, 2e-3 + 2e-3 * std::abs(fd)) << v->name << "[" << i << "]";
      }
    }
  }
}

TEST(Graph, VariableGradientsEqualFullGradients) {
  auto ex = example(std::nullopt);
  const Tensor x = ramp(Shape{6, 4}, 1.0f, 0.1f);
  const Tensor r = ramp(Shape{6, 7}, 0.8f, 0.0f);
  nn::GradientTape t1, t2;
  (void)ex.model->call(x, true, &t1);
  (void)ex.model->call(x, true, &t2);
  const nn::Gradients full = t1.gradient(r), vars = t2.variable_gradients(r);
  ASSERT_EQ(full.size(), vars.size());
  for (const auto& [v, g] : full) {
    ASSERT_TRUE(vars.count(v));
    for (std::int64_t i = 0; i < g.numel(); ++i) EXPECT_EQ(g[i], vars.at(v)[i]) << v->name;
  }
}

TEST(Graph, RecordedTrainingFalseIsHonouredByDefaultAndReplacedUnderKeras3Rule) {
  for (auto rule : {nn::NestedTraining::recorded_wins, nn::NestedTraining::outer_mode_wins}) {
    auto ex = example(false);
    EXPECT_TRUE(ex.model->has_recorded_training());
    ex.model->set_nested_training(rule);
    EXPECT_EQ(ex.inner->nested_training(), rule);
    ex.model->compile("sgd", "mse");
    const Tensor x = ramp(Shape{8, 4}, 2.0f, 5.0f);
    (void)ex.model->train_on_batch(x, Tensor(Shape{8, 7}));  // builds (first call) and trains
    (void)ex.model->train_on_batch(x, Tensor(Shape{8, 7}));
    auto bn = ex.inner->get_layer<nn::BatchNormalization>("inner_bn");
    const Tensor& mm = bn->moving_mean()->value;
    bool moved = false;
    for (std::int64_t i = 0; i < mm.numel(); ++i) moved = moved || mm[i] != 0.0f;
    EXPECT_EQ(moved, rule == nn::NestedTraining::outer_mode_wins);
  }
}

TEST(Graph, FrozenNestedModelTrainsNothingInside) {
  auto ex = example(std::nullopt);
  ex.inner->set_trainable(false);
  ex.model->compile("sgd", "mse");
  const Tensor x = ramp(Shape{8, 4}, 2.0f, 5.0f);
  (void)ex.model->predict(x);
  const std::vector<Tensor> before = ex.inner->get_weights();
  (void)ex.model->train_on_batch(x, Tensor(Shape{8, 7}));
  const std::vector<Tensor> after = ex.inner->get_weights();
  for (std::size_t k = 0; k < before.size(); ++k)
    for (std::int64_t i = 0; i < before[k].numel(); ++i) EXPECT_EQ(before[k][i], after[k][i]);
  EXPECT_EQ(ex.model->trainable_weights().size(), 4u);  // stem and branch_a only
}

// Broadcasting along any set of axes, the last one included, and from either input.
TEST(Graph, MergeBroadcastsAlongEveryAxis) {
  Tensor x(Shape{2, 3, 4});
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = 0.25f * static_cast<float>(i % 11) - 1.0f;
  for (const Shape& ss : {Shape{1, 3, 1}, Shape{2, 1, 4}, Shape{1, 1, 1}, Shape{2, 3, 1}, Shape{1, 1, 4}}) {
    Tensor s(ss);
    for (std::int64_t i = 0; i < s.numel(); ++i) s[i] = 1.5f + static_cast<float>(i);
    for (const bool s_first : {false, true}) {
      nn::Subtract sub("sub");
      const Tensor y = s_first ? sub.forward_inputs({&s, &x}, false, nullptr, nullptr)
                               : sub.forward_inputs({&x, &s}, false, nullptr, nullptr);
      ASSERT_EQ(y.shape(), x.shape());
      for (std::int64_t a = 0; a < 2; ++a)
        for (std::int64_t b = 0; b < 3; ++b)
          for (std::int64_t c = 0; c < 4; ++c) {
            const float xv = x[(a * 3 + b) * 4 + c];
            const float sv =
                s[((ss[0] == 1 ? 0 : a) * ss[1] + (ss[1] == 1 ? 0 : b)) * ss[2] + (ss[2] == 1 ? 0 : c)];
            EXPECT_EQ(y[(a * 3 + b) * 4 + c], s_first ? sv - xv : xv - sv)
                << ss.str() << " at " << a << b << c;
          }
    }
  }
}

TEST(Graph, MergeBroadcastAndTies) {
  auto a = nn::Input({2, 2, 3});
  auto b = nn::Input({1, 1, 3});
  (void)b;
  nn::Multiply mul("mul");
  Tensor x(Shape{2, 2, 2, 3}), s(Shape{2, 1, 1, 3});
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(i % 7) - 2.0f;
  for (std::int64_t i = 0; i < s.numel(); ++i) s[i] = 0.5f + static_cast<float>(i);
  std::unique_ptr<nn::LayerContext> ctx;
  const Tensor y = mul.forward_inputs({&x, &s}, true, &ctx, nullptr);
  ASSERT_EQ(y.shape(), x.shape());
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t p = 0; p < 4; ++p)
      for (std::int64_t c = 0; c < 3; ++c) EXPECT_EQ(y[(n * 4 + p) * 3 + c], x[(n * 4 + p) * 3 + c] * s[n * 3 + c]);
  nn::Gradients g;
  const Tensor dy(x.shape(), 1.0f);
  const auto dxs = mul.backward_inputs(*ctx, dy, g);
  ASSERT_EQ(dxs[1].shape(), s.shape());
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t c = 0; c < 3; ++c) {
      float sum = 0;
      for (std::int64_t p = 0; p < 4; ++p) sum += x[(n * 4 + p) * 3 + c];
      EXPECT_FLOAT_EQ(dxs[1][n * 3 + c], sum);
    }
  nn::Maximum mx("mx");
  const Tensor p(Shape{1, 3}, std::vector<float>{1, 2, 3}), q(Shape{1, 3}, std::vector<float>{1, 5, 0});
  const Tensor m = mx.forward_inputs({&p, &q}, true, &ctx, nullptr);
  EXPECT_EQ(m.vector(), (std::vector<float>{1, 5, 3}));
  const auto dm = mx.backward_inputs(*ctx, Tensor(Shape{1, 3}, 1.0f), g);
  EXPECT_EQ(dm[0].vector(), (std::vector<float>{1, 0, 1}));  // the tie goes to the first input
  EXPECT_EQ(dm[1].vector(), (std::vector<float>{0, 1, 0}));
  nn::Subtract sub("sub");
  EXPECT_THROW(sub.forward_inputs({&p, &q, &p}, false, nullptr, nullptr), ArgumentError);
  EXPECT_THROW(mul.forward_inputs({&p, &x}, false, nullptr, nullptr), ShapeError);
  nn::Concatenate cat(1, "cat");
  const Tensor c = cat.forward_inputs({&p, &q}, false, nullptr, nullptr);
  EXPECT_EQ(c.shape(), (Shape{1, 6}));
  EXPECT_THROW(nn::Concatenate(0, "c0").forward_inputs({&p, &q}, false, nullptr, nullptr), ArgumentError);
}

TEST(Graph, BadGraphsAreRefused) {
  auto a = nn::Input({3}, "a");
  auto other = nn::Input({3}, "other");
  auto d = dense(2, "d");
  auto y = (*std::make_shared<nn::Add>("add"))({(*d)(a), (*dense(2, "e"))(other)});
  EXPECT_THROW(nn::Model(a, y), ArgumentError);  // "other" dangles
  EXPECT_THROW((*std::make_shared<nn::Add>("one"))({a}), ArgumentError);
  EXPECT_THROW((*std::make_shared<nn::Add>("mismatch"))({a, (*dense(2, "f"))(a)}), ShapeError);
  nn::Sequential seq;
  EXPECT_THROW(seq.add(std::make_shared<nn::Add>("in_sequential")), ArgumentError);
}

TEST(Graph, SharedLayerAccumulatesBothCalls) {
  auto in = nn::Input({3}, "in");
  auto shared = dense(3, "shared", "tanh", 5);
  auto y = (*shared)((*shared)(in));
  nn::Model model(in, y, "twice");
  EXPECT_EQ(model.layers().size(), 1u);
  EXPECT_EQ(model.nodes().size(), 2u);
  const Tensor x = ramp(Shape{4, 3}, 1.0f, 0.0f);
  const Tensor r = ramp(Shape{4, 3}, 1.0f, 0.5f);
  nn::GradientTape tape;
  (void)model.call(x, false, &tape);
  const nn::Gradients g = tape.gradient(r);
  nn::Variable* k = shared->kernel();
  const float h = 1e-2f;
  for (std::int64_t i = 0; i < k->value.numel(); ++i) {
    const float keep = k->value[i];
    k->value[i] = keep + h;
    const double up = weighted_sum(model.call(x, false), r);
    k->value[i] = keep - h;
    const double down = weighted_sum(model.call(x, false), r);
    k->value[i] = keep;
    EXPECT_NEAR(g.at(k)[i], (up - down) / (2 * h), 3e-3);
  }
}

TEST(Graph, NestedLayersHavePathsAndRecalibrate) {
  auto ex = example(false);
  const auto flat = ex.model->flattened_layers();
  std::vector<std::string> names;
  for (const auto& [path, layer] : flat) names.push_back(layer->name());
  EXPECT_EQ(names, (std::vector<std::string>{"stem", "branch_a", "branch_b", "sum", "inner", "inner_dense", "inner_bn", "cat"}));
  const std::vector<std::size_t> bn_path = flat[6].first;
  EXPECT_EQ(bn_path, (std::vector<std::size_t>{4, 1}));
  const Tensor x = ramp(Shape{9, 4}, 3.0f, 2.0f);
  // The nested batch normalization's input, by hand: inner_dense(branch_a(stem(x)) + relu(stem(x))).
  auto L = [&](const std::string& n) { return ex.model->get_layer(n); };
  const Tensor stem = L("stem")->forward(x, false, nullptr, nullptr);
  Tensor sum = L("branch_a")->forward(stem, false, nullptr, nullptr);
  const Tensor b = L("branch_b")->forward(stem, false, nullptr, nullptr);
  for (std::int64_t i = 0; i < sum.numel(); ++i) sum[i] += b[i];
  const Tensor want = ex.inner->get_layer("inner_dense")->forward(sum, false, nullptr, nullptr);
  const Tensor got = ex.model->layer_input(x, bn_path);
  ASSERT_EQ(got.shape(), want.shape());
  for (std::int64_t i = 0; i < got.numel(); ++i) EXPECT_EQ(got[i], want[i]);
  EXPECT_THROW(ex.model->layer_input(x, std::vector<std::size_t>{0, 1}), ArgumentError);  // stem is not a model
  (void)ex.model->predict(x);  // builds the nested batch normalization
  const auto report = nn::recalibrate(*ex.model, x, {.batch_size = 4});
  ASSERT_EQ(report.layers.size(), 1u);
  auto bn = ex.inner->get_layer<nn::BatchNormalization>("inner_bn");
  for (std::int64_t c = 0; c < 3; ++c) {
    double mean = 0;
    for (std::int64_t r = 0; r < 9; ++r) mean += want[r * 3 + c];
    mean /= 9;
    EXPECT_NEAR(bn->moving_mean()->value[c], mean, 1e-6 * (1 + std::abs(mean)));
  }
}

// Keras flattens channels_first input in channels_last order (CNN.md 2.2, measured).
TEST(Graph, FlattenChannelsFirstAsKeras) {
  nn::Flatten flat("f", nn::DataFormat::channels_first);
  Tensor x(Shape{1, 3, 2, 2});
  for (std::int64_t i = 0; i < 12; ++i) x[i] = static_cast<float>(i);
  std::unique_ptr<nn::LayerContext> ctx;
  const Tensor y = flat.forward(x, true, &ctx, nullptr);
  EXPECT_EQ(y.vector(), (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  nn::Gradients g;
  const Tensor dx = flat.backward(*ctx, y, g);  // the gradient goes back to where each value came from
  EXPECT_EQ(dx.vector(), x.vector());
  EXPECT_EQ(nn::Flatten("g").forward(x, false, nullptr, nullptr).vector(), x.vector());
}
