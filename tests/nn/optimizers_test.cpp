// Unit tests of bnorm/nn/optimizers.hpp: options validation, iteration counting, the
// no-change-on-failure guarantee, slots and clipping. (Keras agreement is in
// training_golden_test.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/optimizers.hpp"

using bnorm::ArgumentError;
using bnorm::Shape;
using bnorm::ShapeError;
using bnorm::Tensor;
namespace nn = bnorm::nn;

namespace {

Tensor T(Shape s, std::vector<float> v) {
  return Tensor(std::move(s), std::move(v));
}

nn::Variable var(std::string name, Tensor value, nn::Constraint c = {}) {
  return nn::Variable{.name = std::move(name),
                      .value = std::move(value),
                      .trainable = true,
                      .regularizer = {},
                      .constraint = c};
}

template <typename F>
std::string rejected_argument(F&& f) {
  try {
    f();
  } catch (const ArgumentError& e) {
    return e.argument();
  }
  return "<no ArgumentError>";
}

// ---------------------------------------------------------------- construction

TEST(Optimizers, KerasDefaults) {
  nn::SGD sgd;
  EXPECT_EQ(sgd.class_name(), "SGD");
  EXPECT_EQ(sgd.name(), "sgd");
  EXPECT_EQ(sgd.learning_rate(), static_cast<double>(0.01f));
  EXPECT_EQ(sgd.options().momentum, 0.0);
  EXPECT_FALSE(sgd.options().nesterov);
  nn::Adam adam;
  EXPECT_EQ(adam.name(), "adam");
  EXPECT_EQ(adam.learning_rate(), static_cast<double>(0.001f));  // a float32 variable, as in Keras
  EXPECT_EQ(adam.options().beta_1, 0.9);
  EXPECT_EQ(adam.options().beta_2, 0.999);
  EXPECT_EQ(adam.options().epsilon, 1e-7);
  EXPECT_FALSE(adam.options().amsgrad);
  nn::RMSprop rms;
  EXPECT_EQ(rms.name(), "rm_sprop");
  EXPECT_EQ(rms.options().rho, 0.9);
  EXPECT_EQ(rms.options().momentum, 0.0);
  EXPECT_FALSE(rms.options().centered);
  EXPECT_EQ(rms.iterations(), 0);
  EXPECT_TRUE(rms.state().empty());
}

TEST(Optimizers, DesignatedOptions) {
  nn::SGD sgd(nn::SGDOptions{.learning_rate = 0.1, .momentum = 0.9, .nesterov = true});
  EXPECT_EQ(sgd.learning_rate(), static_cast<double>(0.1f));
  EXPECT_TRUE(sgd.options().nesterov);
  nn::Adam adam(nn::AdamOptions{.learning_rate = 0.01, .amsgrad = true, .clipnorm = 1.0});
  EXPECT_EQ(adam.clip_options().clipnorm, 1.0);
  EXPECT_FALSE(adam.clip_options().clipvalue);
}

TEST(Optimizers, MakeOptimizer) {
  EXPECT_EQ(nn::make_optimizer("sgd")->class_name(), "SGD");
  EXPECT_EQ(nn::make_optimizer("SGD")->class_name(), "SGD");
  EXPECT_EQ(nn::make_optimizer("adam")->class_name(), "Adam");
  EXPECT_EQ(nn::make_optimizer("Adam")->learning_rate(), static_cast<double>(0.001f));
  EXPECT_EQ(nn::make_optimizer("rmsprop")->class_name(), "RMSprop");
  EXPECT_EQ(nn::make_optimizer("RMSprop")->class_name(), "RMSprop");
  EXPECT_THROW(nn::make_optimizer("adagrad"), ArgumentError);
  EXPECT_THROW(nn::make_optimizer(""), ArgumentError);
}

TEST(Optimizers, RejectsBadOptions) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(rejected_argument([] { nn::SGD(nn::SGDOptions{.learning_rate = -0.1}); }), "learning_rate");
  EXPECT_EQ(rejected_argument([&] { nn::Adam(nn::AdamOptions{.learning_rate = nan}); }), "learning_rate");
  EXPECT_EQ(rejected_argument([] { nn::SGD(nn::SGDOptions{.momentum = -0.1}); }), "momentum");
  EXPECT_EQ(rejected_argument([] { nn::SGD(nn::SGDOptions{.momentum = 1.5}); }), "momentum");
  EXPECT_EQ(rejected_argument([] { nn::Adam(nn::AdamOptions{.beta_1 = 1.0}); }), "beta_1");
  EXPECT_EQ(rejected_argument([] { nn::Adam(nn::AdamOptions{.beta_2 = -0.5}); }), "beta_2");
  EXPECT_EQ(rejected_argument([] { nn::Adam(nn::AdamOptions{.epsilon = -1e-7}); }), "epsilon");
  EXPECT_EQ(rejected_argument([] { nn::RMSprop(nn::RMSpropOptions{.rho = 1.5}); }), "rho");
  EXPECT_EQ(rejected_argument([] { nn::RMSprop(nn::RMSpropOptions{.momentum = -1.0}); }), "momentum");
  EXPECT_EQ(rejected_argument([] { nn::RMSprop(nn::RMSpropOptions{.epsilon = -1.0}); }), "epsilon");
  EXPECT_EQ(rejected_argument([] { nn::SGD(nn::SGDOptions{.clipnorm = 0.0}); }), "clipnorm");
  EXPECT_EQ(rejected_argument([] { nn::SGD(nn::SGDOptions{.clipvalue = -1.0}); }), "clipvalue");
  EXPECT_EQ(rejected_argument([] { nn::Adam(nn::AdamOptions{.global_clipnorm = -2.0}); }), "global_clipnorm");
  // Keras: "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set."
  EXPECT_EQ(rejected_argument([] { nn::SGD(nn::SGDOptions{.clipnorm = 1.0, .clipvalue = 1.0}); }),
            "clipnorm/clipvalue/global_clipnorm");
  EXPECT_EQ(rejected_argument([] { nn::Adam(nn::AdamOptions{.clipnorm = 1.0, .global_clipnorm = 1.0}); }),
            "clipnorm/clipvalue/global_clipnorm");
  EXPECT_EQ(
      rejected_argument([] { nn::RMSprop(nn::RMSpropOptions{.clipvalue = 1.0, .global_clipnorm = 1.0}); }),
      "clipnorm/clipvalue/global_clipnorm");
  // Boundaries that are valid.
  EXPECT_NO_THROW(nn::SGD(nn::SGDOptions{.learning_rate = 0.0, .momentum = 1.0}));
  EXPECT_NO_THROW(nn::Adam(nn::AdamOptions{.beta_1 = 0.0, .beta_2 = 0.0, .epsilon = 0.0}));
  EXPECT_NO_THROW(nn::RMSprop(nn::RMSpropOptions{.rho = 1.0, .momentum = 1.0}));
}

TEST(Optimizers, SetLearningRate) {
  nn::Adam adam;
  adam.set_learning_rate(0.5);
  EXPECT_EQ(adam.learning_rate(), 0.5);
  EXPECT_THROW(adam.set_learning_rate(-1.0), ArgumentError);
  EXPECT_THROW(adam.set_learning_rate(std::numeric_limits<double>::infinity()), ArgumentError);
  EXPECT_EQ(adam.learning_rate(), 0.5);
}

// ---------------------------------------------------------------- updates

TEST(Optimizers, SgdPlainAndMomentumByHand) {
  nn::Variable v = var("w", T({2}, {1.0f, -2.0f}));
  nn::SGD plain(nn::SGDOptions{.learning_rate = 0.5});
  plain.apply_gradients({{T({2}, {0.5f, 1.0f}), &v}});
  EXPECT_EQ(v.value[0], 0.75f);
  EXPECT_EQ(v.value[1], -2.5f);
  EXPECT_TRUE(plain.state().empty());  // no momentum slot when momentum == 0

  nn::Variable w = var("w", T({1}, {1.0f}));
  nn::SGD mom(nn::SGDOptions{.learning_rate = 0.5, .momentum = 0.5});
  mom.apply_gradients({{T({1}, {1.0f}), &w}});  // m = -0.5, w = 0.5
  mom.apply_gradients({{T({1}, {1.0f}), &w}});  // m = -0.25 - 0.5 = -0.75, w = -0.25
  EXPECT_EQ(w.value[0], -0.25f);
  ASSERT_NE(mom.slot(&w, "momentum"), nullptr);
  EXPECT_EQ((*mom.slot(&w, "momentum"))[0], -0.75f);

  nn::Variable n = var("w", T({1}, {1.0f}));
  nn::SGD nesterov(nn::SGDOptions{.learning_rate = 0.5, .momentum = 0.5, .nesterov = true});
  nesterov.apply_gradients({{T({1}, {1.0f}), &n}});  // m = -0.5; w += m*0.5 - 0.5 = -0.75
  EXPECT_EQ(n.value[0], 0.25f);
}

TEST(Optimizers, AdamFirstStepAndSlots) {
  nn::Variable v = var("w", T({2}, {1.0f, 1.0f}));
  nn::Adam adam(nn::AdamOptions{.learning_rate = 0.1});
  adam.apply_gradients({{T({2}, {2.0f, -4.0f}), &v}});
  // t = 1: alpha = lr * sqrt(0.001) / 0.1; m = 0.1 g; v = 0.001 g^2 -> step = lr * sign(g) (eps aside)
  EXPECT_NEAR(v.value[0], 0.9f, 1e-6);
  EXPECT_NEAR(v.value[1], 1.1f, 1e-6);
  const auto state = adam.state();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].first, "w_momentum");
  EXPECT_EQ(state[1].first, "w_velocity");
  EXPECT_NEAR(state[0].second[0], 0.2f, 1e-7);
  EXPECT_NEAR(state[1].second[1], 0.016f, 1e-8);
}

TEST(Optimizers, StateOrderIsKeras) {
  nn::Variable a = var("a", T({1}, {0.0f})), b = var("b", T({2}, {0.0f, 0.0f}));
  auto names = [](const nn::Optimizer& o) {
    std::vector<std::string> out;
    for (const auto& [n, t] : o.state()) out.push_back(n);
    return out;
  };
  nn::Adam adam(nn::AdamOptions{.amsgrad = true});
  adam.apply_gradients({{T({1}, {1.0f}), &a}, {T({2}, {1.0f, 1.0f}), &b}});
  EXPECT_EQ(names(adam), (std::vector<std::string>{"a_momentum", "a_velocity", "b_momentum", "b_velocity",
                                                   "a_velocity_hat", "b_velocity_hat"}));
  nn::RMSprop rms(nn::RMSpropOptions{.momentum = 0.5, .centered = true});
  rms.apply_gradients({{T({1}, {1.0f}), &a}, {T({2}, {1.0f, 1.0f}), &b}});
  EXPECT_EQ(names(rms), (std::vector<std::string>{"a_velocity", "b_velocity", "a_momentum", "b_momentum",
                                                  "a_average_gradient", "b_average_gradient"}));
  EXPECT_EQ(rms.slot(&a, "nothing"), nullptr);
  nn::Variable c = var("c", T({1}, {0.0f}));
  EXPECT_EQ(rms.slot(&c, "velocity"), nullptr);
}

TEST(Optimizers, IterationsCountEveryCallThatUpdates) {
  nn::Variable a = var("a", T({1}, {0.0f})), b = var("b", T({1}, {0.0f}));
  nn::SGD sgd;
  EXPECT_EQ(sgd.iterations(), 0);
  sgd.apply_gradients({{T({1}, {1.0f}), &a}});
  sgd.apply_gradients({{T({1}, {1.0f}), &a}, {T({1}, {1.0f}), &b}});
  EXPECT_EQ(sgd.iterations(), 2);
  sgd.apply_gradients(std::vector<std::pair<Tensor, nn::Variable*>>{});  // Keras apply([]): no-op
  sgd.apply_gradients(nn::Gradients{}, {});
  EXPECT_EQ(sgd.iterations(), 2);
  // Gradients overload: b has no gradient, a is updated, iterations advances.
  nn::Gradients g;
  g.emplace(&a, T({1}, {1.0f}));
  const float b_before = b.value[0];
  sgd.apply_gradients(g, {&a, &b});
  EXPECT_EQ(sgd.iterations(), 3);
  EXPECT_EQ(b.value[0], b_before);
  // No gradient for any listed variable: Keras raises; nothing changes here.
  const float a_before = a.value[0];
  EXPECT_THROW(sgd.apply_gradients(nn::Gradients{}, {&a, &b}), ArgumentError);
  EXPECT_EQ(sgd.iterations(), 3);
  EXPECT_EQ(a.value[0], a_before);
}

TEST(Optimizers, FailedApplyChangesNothing) {
  nn::Variable a = var("a", T({3}, {1.0f, 2.0f, 3.0f}));
  nn::Variable b = var("b", T({2, 2}, {1.0f, 2.0f, 3.0f, 4.0f}));
  nn::Adam adam;
  // The second gradient has the wrong shape: the first variable must not move.
  try {
    adam.apply_gradients({{T({3}, {1.0f, 1.0f, 1.0f}), &a}, {T({4}, {1.0f, 1.0f, 1.0f, 1.0f}), &b}});
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_EQ(e.argument(), "gradient of variable 'b'");
    EXPECT_EQ(e.expected(), "the variable's shape (2, 2)");
    EXPECT_EQ(e.received(), "(4,)");
  }
  EXPECT_EQ(a.value.vector(), (std::vector<float>{1.0f, 2.0f, 3.0f}));
  EXPECT_EQ(adam.iterations(), 0);
  EXPECT_TRUE(adam.state().empty());

  // After a good step, a failing one leaves variables, slots and counter as they were.
  adam.apply_gradients({{T({3}, {1.0f, -1.0f, 0.5f}), &a}, {T({2, 2}, {1.0f, 1.0f, 1.0f, 1.0f}), &b}});
  const auto state = adam.state();
  const Tensor a_after = a.value, b_after = b.value;
  EXPECT_THROW(adam.apply_gradients({{T({3}, {1.0f, 1.0f, 1.0f}), &a}, {T({2, 2}, {1, 1, 1, 1}), nullptr}}),
               ArgumentError);
  EXPECT_THROW(adam.apply_gradients({{T({3}, {1.0f, 1.0f, 1.0f}), &a}, {T({3}, {1.0f, 1.0f, 1.0f}), &a}}),
               ArgumentError);  // the same variable twice
  EXPECT_THROW(adam.apply_gradients({{T({3}, {1.0f, 1.0f, 1.0f}), &a}, {T({2, 1}, {1.0f, 1.0f}), &b}}),
               ShapeError);
  nn::Gradients g;
  g.emplace(&a, T({3}, {1.0f, 1.0f, 1.0f}));
  EXPECT_THROW(adam.apply_gradients(g, {&a, nullptr}), ArgumentError);
  EXPECT_EQ(a.value.vector(), a_after.vector());
  EXPECT_EQ(b.value.vector(), b_after.vector());
  EXPECT_EQ(adam.iterations(), 1);
  const auto state_after = adam.state();
  ASSERT_EQ(state_after.size(), state.size());
  for (std::size_t i = 0; i < state.size(); ++i) {
    EXPECT_EQ(state_after[i].first, state[i].first);
    EXPECT_EQ(state_after[i].second.vector(), state[i].second.vector());
  }
}

TEST(Optimizers, VariableReshapedAfterSlotsWereMadeIsRejected) {
  nn::Variable a = var("a", T({2}, {1.0f, 2.0f}));
  nn::SGD sgd(nn::SGDOptions{.momentum = 0.9});
  sgd.apply_gradients({{T({2}, {1.0f, 1.0f}), &a}});
  a.value = T({3}, {1.0f, 2.0f, 3.0f});
  EXPECT_THROW(sgd.apply_gradients({{T({3}, {1.0f, 1.0f, 1.0f}), &a}}), ShapeError);
  EXPECT_EQ(a.value.vector(), (std::vector<float>{1.0f, 2.0f, 3.0f}));
  EXPECT_EQ(sgd.iterations(), 1);
}

TEST(Optimizers, ConstraintsApplyAfterTheUpdateOfUpdatedVariablesOnly) {
  nn::Variable a = var("a", T({2}, {0.1f, 1.0f}), nn::Constraint::non_neg());
  nn::Variable b = var("b", T({1}, {-1.0f}), nn::Constraint::non_neg());
  nn::SGD sgd(nn::SGDOptions{.learning_rate = 1.0});
  nn::Gradients g;
  g.emplace(&a, T({2}, {0.5f, 0.5f}));
  sgd.apply_gradients(g, {&a, &b});
  EXPECT_EQ(a.value[0], 0.0f);  // 0.1 - 0.5 < 0 -> projected
  EXPECT_EQ(a.value[1], 0.5f);
  EXPECT_EQ(b.value[0], -1.0f);  // no gradient: Keras leaves it (and its constraint) alone
}

// ---------------------------------------------------------------- clipping

TEST(Optimizers, ClipValue) {
  nn::Variable v = var("v", T({3}, {0.0f, 0.0f, 0.0f}));
  nn::SGD sgd(nn::SGDOptions{.learning_rate = 1.0, .clipvalue = 0.5});
  sgd.apply_gradients({{T({3}, {2.0f, -3.0f, 0.25f}), &v}});
  EXPECT_EQ(v.value.vector(), (std::vector<float>{-0.5f, 0.5f, -0.25f}));
}

TEST(Optimizers, ClipNormPerVariableAndZeroGradient) {
  nn::Variable a = var("a", T({2}, {0.0f, 0.0f})), z = var("z", T({2}, {1.0f, 1.0f}));
  nn::SGD sgd(nn::SGDOptions{.learning_rate = 1.0, .clipnorm = 1.0});
  sgd.apply_gradients({{T({2}, {3.0f, 4.0f}), &a}, {T({2}, {0.0f, 0.0f}), &z}});
  EXPECT_FLOAT_EQ(a.value[0], -0.6f);
  EXPECT_FLOAT_EQ(a.value[1], -0.8f);
  EXPECT_EQ(z.value.vector(), (std::vector<float>{1.0f, 1.0f}));  // 0 stays 0, no NaN
  // Below the threshold nothing changes: (g * c) / max(norm, c) = g.
  nn::Variable s = var("s", T({2}, {0.0f, 0.0f}));
  sgd.apply_gradients({{T({2}, {0.3f, 0.4f}), &s}});
  EXPECT_FLOAT_EQ(s.value[0], -0.3f);
  EXPECT_FLOAT_EQ(s.value[1], -0.4f);
}

TEST(Optimizers, GlobalClipNorm) {
  nn::Variable a = var("a", T({1}, {0.0f})), b = var("b", T({1}, {0.0f}));
  nn::SGD sgd(nn::SGDOptions{.learning_rate = 1.0, .global_clipnorm = 1.0});
  sgd.apply_gradients({{T({1}, {3.0f}), &a}, {T({1}, {4.0f}), &b}});  // global norm 5
  EXPECT_FLOAT_EQ(a.value[0], -0.6f);
  EXPECT_FLOAT_EQ(b.value[0], -0.8f);
}

TEST(Optimizers, RmspropCenteredByHand) {
  nn::Variable v = var("v", T({1}, {0.0f}));
  nn::RMSprop rms(nn::RMSpropOptions{.learning_rate = 0.1, .rho = 0.5, .epsilon = 0.0, .centered = true});
  rms.apply_gradients({{T({1}, {2.0f}), &v}});
  // velocity = 0.5 * 4 = 2, average = 0.5 * 2 = 1, denominator = 2 - 1 = 1 -> v = -0.1 * 2
  EXPECT_FLOAT_EQ(v.value[0], -0.2f);
}

}  // namespace
