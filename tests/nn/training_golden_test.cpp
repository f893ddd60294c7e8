// Golden tests of the training ops against Keras 3: every case of
// tests/fixtures/training_ops.json (part train_ops of tests/fixtures/generate_golden.py,
// written by Keras 3.15.1 / TensorFlow 2.21 on CPU), replayed on bnorm. One GoogleTest
// test per case (value-parameterized, named by the case id), so CTest lists each case.
//
// File format (details in tests/fixtures/FORMAT.md, "training_ops.json"): the usual
// bnorm-golden envelope; each case has "id", "source", "kind", "rtol", "atol" and
//   kind "optimizer": "optimizer" {class SGD|Adam|RMSprop, the Keras arguments,
//       clipnorm/clipvalue/global_clipnorm or null}, "variables" [{name, value T,
//       constraint null|{name non_neg}|{name max_norm, max_value}}], "steps"
//       [{op apply_gradients, grads [T|null per variable]} | {op set_learning_rate, value}],
//       each step with "expect" {iterations, learning_rate (float32), variables [T]} and the
//       last one also "slots" [{name, value T}] (Keras optimizer.variables after iteration
//       and learning_rate).
//   kind "loss": "loss" {name, from_logits?}, "y_true" T, "y_pred" T,
//       "expect" {value, grad T}: the compile() loss and d loss / d y_pred (GradientTape).
//       name "lambda_squared_difference" is compile(loss=lambda x, y: (x - y) ** 2).
//   kind "metric": "metric" {class BinaryAccuracy (threshold)|CategoricalAccuracy|
//       SparseCategoricalAccuracy|Mean|null}, "steps" [{op update_state, y_true T, y_pred T}
//       | {op update_state, value, sample_weight} | {op reset_state}], each with
//       "expect" {result}; or steps {op resolve, identifier, y_true_shape, y_pred_shape,
//       expect {class, name}} (compile(metrics=["accuracy"]) resolution).
// T is a dense tensor {"shape": [...], "data": [...]} (float32 values, exact in JSON).
// A value matches when |got - want| <= atol + rtol * |want| (the case's rtol, atol).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "fixture_file.hpp"
#include "bnorm/nn/losses.hpp"
#include "bnorm/nn/metrics.hpp"
#include "bnorm/nn/optimizers.hpp"

using json = nlohmann::json;
using bnorm::Shape;
using bnorm::Tensor;
namespace nn = bnorm::nn;

namespace {

using Fixture = bnorm::test::FixtureFile;

const Fixture& fixture() {
  static const Fixture f = bnorm::test::read_fixture("training_ops.json", "bnorm-golden", 1);
  return f;
}

struct CaseRef {
  std::string id;
  std::size_t index = 0;
};

void PrintTo(const CaseRef& c, std::ostream* os) {
  *os << c.id;
}

// The cases of one kind; a single "fixture_not_loaded" entry when the file is unreadable,
// so that the failure shows up as a failing test rather than as no tests at all.
std::vector<CaseRef> cases_of(const std::string& kind) {
  const Fixture& f = fixture();
  if (!f.error.empty()) return {CaseRef{"fixture_not_loaded", 0}};
  std::vector<CaseRef> out;
  const json& cases = f.data.at("cases");
  for (std::size_t i = 0; i < cases.size(); ++i) {
    if (cases[i].at("kind") == kind) out.push_back({cases[i].at("id").get<std::string>(), i});
  }
  return out;
}

const json& case_of(const CaseRef& c) {
  const Fixture& f = fixture();
  if (!f.error.empty()) throw std::runtime_error(f.error);
  return f.data.at("cases").at(c.index);
}

Shape shape_of(const json& t) {
  return Shape(t.at("shape").get<std::vector<std::int64_t>>());
}

Tensor tensor_of(const json& t) {
  std::vector<float> data;
  for (const auto& v : t.at("data")) data.push_back(v.get<float>());
  return Tensor(shape_of(t), std::move(data));
}

struct Tolerance {
  double rtol = 1e-5, atol = 1e-6;
};

Tolerance tolerance_of(const json& c) {
  return {c.at("rtol").get<double>(), c.at("atol").get<double>()};
}

void expect_close(const std::string& what, double got, double want, const Tolerance& tol) {
  EXPECT_LE(std::fabs(got - want), tol.atol + tol.rtol * std::fabs(want))
      << what << ": got " << got << ", want " << want;
}

void expect_tensor(const std::string& what, const Tensor& got, const json& want, const Tolerance& tol) {
  ASSERT_EQ(got.shape(), shape_of(want)) << what << ": shape";
  const auto& data = want.at("data");
  int failures = 0;
  for (std::size_t i = 0; i < data.size(); ++i) {
    const double w = data[i].get<double>();
    const double g = got[static_cast<std::int64_t>(i)];
    if (std::fabs(g - w) > tol.atol + tol.rtol * std::fabs(w) && failures++ < 5) {
      ADD_FAILURE() << what << "[" << i << "]: got " << g << ", want " << w << " (|diff| " << std::fabs(g - w)
                    << ", allowed " << tol.atol + tol.rtol * std::fabs(w) << ")";
    }
  }
  EXPECT_EQ(failures, 0) << what << ": " << failures << " elements out of tolerance";
}

std::optional<double> optional_number(const json& o, const char* key) {
  if (!o.contains(key) || o.at(key).is_null()) return std::nullopt;
  return o.at(key).get<double>();
}

// ---------------------------------------------------------------- optimizers

std::unique_ptr<nn::Optimizer> optimizer_of(const json& o) {
  const std::string cls = o.at("class");
  const auto clipnorm = optional_number(o, "clipnorm");
  const auto clipvalue = optional_number(o, "clipvalue");
  const auto global_clipnorm = optional_number(o, "global_clipnorm");
  if (cls == "SGD") {
    return std::make_unique<nn::SGD>(nn::SGDOptions{.learning_rate = o.at("learning_rate").get<double>(),
                                                    .momentum = o.at("momentum").get<double>(),
                                                    .nesterov = o.at("nesterov").get<bool>(),
                                                    .clipnorm = clipnorm,
                                                    .clipvalue = clipvalue,
                                                    .global_clipnorm = global_clipnorm});
  }
  if (cls == "Adam") {
    return std::make_unique<nn::Adam>(nn::AdamOptions{.learning_rate = o.at("learning_rate").get<double>(),
                                                      .beta_1 = o.at("beta_1").get<double>(),
                                                      .beta_2 = o.at("beta_2").get<double>(),
                                                      .epsilon = o.at("epsilon").get<double>(),
                                                      .amsgrad = o.at("amsgrad").get<bool>(),
                                                      .clipnorm = clipnorm,
                                                      .clipvalue = clipvalue,
                                                      .global_clipnorm = global_clipnorm});
  }
  if (cls == "RMSprop") {
    return std::make_unique<nn::RMSprop>(
        nn::RMSpropOptions{.learning_rate = o.at("learning_rate").get<double>(),
                           .rho = o.at("rho").get<double>(),
                           .momentum = o.at("momentum").get<double>(),
                           .epsilon = o.at("epsilon").get<double>(),
                           .centered = o.at("centered").get<bool>(),
                           .clipnorm = clipnorm,
                           .clipvalue = clipvalue,
                           .global_clipnorm = global_clipnorm});
  }
  throw std::runtime_error("unknown optimizer class " + cls);
}

nn::Constraint constraint_of(const json& c) {
  if (c.is_null()) return {};
  const std::string name = c.at("name");
  if (name == "non_neg") return nn::Constraint::non_neg();
  if (name == "max_norm") return nn::Constraint::max_norm(c.at("max_value").get<float>());
  throw std::runtime_error("unknown constraint " + name);
}

// Test names are the case ids.
std::string case_name(const ::testing::TestParamInfo<CaseRef>& param_info) {
  return param_info.param.id;
}

class OptimizerGolden : public ::testing::TestWithParam<CaseRef> {};

TEST_P(OptimizerGolden, StepsMatchKeras) {
  const json& c = case_of(GetParam());
  const Tolerance tol = tolerance_of(c);
  auto opt = optimizer_of(c.at("optimizer"));
  std::vector<std::unique_ptr<nn::Variable>> vars;
  for (const auto& v : c.at("variables")) {
    vars.push_back(
        std::make_unique<nn::Variable>(nn::Variable{.name = v.at("name").get<std::string>(),
                                                    .value = tensor_of(v.at("value")),
                                                    .trainable = true,
                                                    .regularizer = {},
                                                    .constraint = constraint_of(v.at("constraint"))}));
  }
  const auto& steps = c.at("steps");
  for (std::size_t k = 0; k < steps.size(); ++k) {
    const json& s = steps[k];
    const std::string at = "step " + std::to_string(k);
    const std::string op = s.at("op");
    if (op == "apply_gradients") {
      const auto& grads = s.at("grads");
      bool any_missing = false;
      for (const auto& g : grads) any_missing = any_missing || g.is_null();
      if (any_missing) {  // the Gradients overload skips variables without an entry
        nn::Gradients map;
        std::vector<nn::Variable*> list;
        for (std::size_t i = 0; i < grads.size(); ++i) {
          list.push_back(vars[i].get());
          if (!grads[i].is_null()) map.emplace(vars[i].get(), tensor_of(grads[i]));
        }
        opt->apply_gradients(map, list);
      } else {
        std::vector<std::pair<Tensor, nn::Variable*>> gv;
        for (std::size_t i = 0; i < grads.size(); ++i) gv.emplace_back(tensor_of(grads[i]), vars[i].get());
        opt->apply_gradients(gv);
      }
    } else if (op == "set_learning_rate") {
      opt->set_learning_rate(s.at("value").get<double>());
    } else {
      FAIL() << "unknown step op " << op;
    }
    const json& e = s.at("expect");
    EXPECT_EQ(opt->iterations(), e.at("iterations").get<std::int64_t>()) << at;
    EXPECT_EQ(static_cast<float>(opt->learning_rate()), e.at("learning_rate").get<float>()) << at;
    const auto& want = e.at("variables");
    ASSERT_EQ(want.size(), vars.size());
    for (std::size_t i = 0; i < vars.size(); ++i) {
      expect_tensor(at + " " + vars[i]->name, vars[i]->value, want[i], tol);
    }
    if (e.contains("slots")) {
      const auto state = opt->state();
      const auto& slots = e.at("slots");
      ASSERT_EQ(state.size(), slots.size()) << at << ": number of optimizer slot variables";
      for (std::size_t i = 0; i < state.size(); ++i) {
        EXPECT_EQ(state[i].first, slots[i].at("name").get<std::string>()) << at << ": slot " << i;
        expect_tensor(at + " slot " + state[i].first, state[i].second, slots[i].at("value"), tol);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Keras3, OptimizerGolden, ::testing::ValuesIn(cases_of("optimizer")), case_name);

// ---------------------------------------------------------------- losses

std::unique_ptr<nn::Loss> loss_of(const json& l) {
  const std::string name = l.at("name");
  if (name == "lambda_squared_difference") {
    return nn::Loss::custom(
        "lambda", [](float t, float p) { return (t - p) * (t - p); },
        [](float t, float p) { return -2.0f * (t - p); });
  }
  if (l.contains("from_logits")) {
    const bool logits = l.at("from_logits").get<bool>();
    if (name == "binary_crossentropy") return std::make_unique<nn::BinaryCrossentropy>(logits);
    if (name == "categorical_crossentropy") return std::make_unique<nn::CategoricalCrossentropy>(logits);
    if (name == "sparse_categorical_crossentropy")
      return std::make_unique<nn::SparseCategoricalCrossentropy>(logits);
    throw std::runtime_error("no from_logits form for " + name);
  }
  return nn::make_loss(name);
}

class LossGolden : public ::testing::TestWithParam<CaseRef> {};

TEST_P(LossGolden, ValueAndGradientMatchKeras) {
  const json& c = case_of(GetParam());
  const Tolerance tol = tolerance_of(c);
  const auto loss = loss_of(c.at("loss"));
  const nn::LossValue got = loss->compute(tensor_of(c.at("y_true")), tensor_of(c.at("y_pred")));
  expect_close("value", got.value, c.at("expect").at("value").get<double>(), tol);
  expect_tensor("grad", got.grad, c.at("expect").at("grad"), tol);
  EXPECT_EQ(loss->value(tensor_of(c.at("y_true")), tensor_of(c.at("y_pred"))), got.value);
}

INSTANTIATE_TEST_SUITE_P(Keras3, LossGolden, ::testing::ValuesIn(cases_of("loss")), case_name);

// ---------------------------------------------------------------- metrics

class MetricGolden : public ::testing::TestWithParam<CaseRef> {};

TEST_P(MetricGolden, ResultsMatchKeras) {
  const json& c = case_of(GetParam());
  const Tolerance tol = tolerance_of(c);
  const json& m = c.at("metric");
  std::unique_ptr<nn::Metric> metric;
  if (!m.at("class").is_null()) {
    const std::string cls = m.at("class");
    if (cls == "BinaryAccuracy")
      metric = std::make_unique<nn::BinaryAccuracy>(m.at("threshold").get<float>());
    else if (cls == "CategoricalAccuracy")
      metric = std::make_unique<nn::CategoricalAccuracy>();
    else if (cls == "SparseCategoricalAccuracy")
      metric = std::make_unique<nn::SparseCategoricalAccuracy>();
    else if (cls == "Mean")
      metric = std::make_unique<nn::Mean>("loss");
    else
      FAIL() << "unknown metric class " << cls;
  }
  const auto& steps = c.at("steps");
  for (std::size_t k = 0; k < steps.size(); ++k) {
    const json& s = steps[k];
    const std::string at = "step " + std::to_string(k);
    const std::string op = s.at("op");
    if (op == "resolve") {
      const auto got = nn::make_metric(s.at("identifier").get<std::string>(),
                                       shape_of(json{{"shape", s.at("y_true_shape")}}),
                                       shape_of(json{{"shape", s.at("y_pred_shape")}}));
      EXPECT_EQ(got->class_name(), s.at("expect").at("class").get<std::string>()) << at;
      EXPECT_EQ(got->name(), s.at("expect").at("name").get<std::string>()) << at;
      continue;
    }
    ASSERT_TRUE(metric) << at;
    if (op == "update_state" && s.contains("value")) {
      auto* mean = dynamic_cast<nn::Mean*>(metric.get());
      ASSERT_NE(mean, nullptr) << at;
      mean->update_state(s.at("value").get<float>(), s.at("sample_weight").get<float>());
    } else if (op == "update_state") {
      auto* wrapper = dynamic_cast<nn::MeanMetricWrapper*>(metric.get());
      ASSERT_NE(wrapper, nullptr) << at;
      wrapper->update_state(tensor_of(s.at("y_true")), tensor_of(s.at("y_pred")));
    } else if (op == "reset_state") {
      metric->reset_state();
    } else {
      FAIL() << "unknown step op " << op;
    }
    expect_close(at + " result", metric->result(), s.at("expect").at("result").get<double>(), tol);
  }
}

INSTANTIATE_TEST_SUITE_P(Keras3, MetricGolden, ::testing::ValuesIn(cases_of("metric")), case_name);

}  // namespace
