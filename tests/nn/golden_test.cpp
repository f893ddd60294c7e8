// Golden tests: every case of tests/fixtures/{keras3,keras2,tfops,torch}.json, written by
// tests/fixtures/generate_golden.py with the real frameworks, replayed step by step on
// bnorm and compared with what the framework produced (format: tests/fixtures/FORMAT.md).
// One GoogleTest test per case, registered at start-up so that CTest lists each case.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/ops.hpp"
#include "bnorm/nn/torch_batch_norm.hpp"
#include "fixture_file.hpp"

using json = nlohmann::json;
using bnorm::Shape;
using bnorm::Tensor;
namespace nn = bnorm::nn;

namespace {

using bnorm::test::fixtures_dir;

// Largest relative error seen over all comparisons (|got-want| / max(|want|, atol/rtol)).
double g_max_rel_error = 0.0;
std::string g_max_rel_where;
std::string g_current_case;

Shape shape_of(const json& t) { return Shape(t.at("shape").get<std::vector<std::int64_t>>()); }

// FORMAT.md "generated" tensors: exact integer hash, one double multiply-add, one rounding.
float hashed_value(std::uint64_t i, std::uint64_t seed, double scale, double offset) {
  const std::uint64_t h = (i * 2654435761ULL + seed * 40503ULL) & 0xffffffffULL;
  const double u = static_cast<double>(h) / 4294967296.0;
  volatile double centered = u - 0.5;  // volatile: no fused multiply-add, as in Python
  volatile double scaled = scale * centered;
  return static_cast<float>(offset + scaled);
}

Tensor tensor_of(const json& t) {
  Shape s = shape_of(t);
  if (t.contains("hash")) {
    const json& h = t.at("hash");
    Tensor out(s);
    const auto seed = h.at("seed").get<std::uint64_t>();
    const double scale = h.value("scale", 1.0), offset = h.value("offset", 0.0);
    for (std::int64_t i = 0; i < out.numel(); ++i) out[i] = hashed_value(static_cast<std::uint64_t>(i), seed, scale, offset);
    return out;
  }
  std::vector<float> data;
  for (const auto& v : t.at("data")) data.push_back(v.get<float>());
  return Tensor(s, std::move(data));
}

struct Tolerance {
  double rtol = 1e-5, atol = 1e-6;
};

// Compares got with an expected tensor (dense or sampled).
void expect_tensor(const std::string& what, const Tensor& got, const json& want, const Tolerance& tol) {
  ASSERT_EQ(got.shape(), shape_of(want)) << what << ": shape";
  const auto& data = want.at("data");
  std::vector<std::int64_t> indices;
  if (want.contains("indices")) {
    indices = want.at("indices").get<std::vector<std::int64_t>>();
  } else {
    for (std::int64_t i = 0; i < static_cast<std::int64_t>(data.size()); ++i) indices.push_back(i);
  }
  ASSERT_EQ(indices.size(), data.size()) << what;
  int failures = 0;
  for (std::size_t k = 0; k < indices.size(); ++k) {
    const double w = data[k].get<double>(), g = got[indices[k]];
    const double err = std::fabs(g - w);
    if (std::isnan(w) || std::isnan(g)) {
      EXPECT_TRUE(std::isnan(w) && std::isnan(g)) << what << "[" << indices[k] << "]: got " << g << ", want " << w;
      continue;
    }
    const double rel = err / std::max(std::fabs(w), tol.atol / tol.rtol);
    if (tol.rtol <= 1e-5 && rel > g_max_rel_error) {  // cases at the default tolerance
      g_max_rel_error = rel;
      g_max_rel_where = g_current_case + " " + what + "[" + std::to_string(indices[k]) + "]";
    }
    if (err > tol.atol + tol.rtol * std::fabs(w) && failures++ < 5) {
      ADD_FAILURE() << what << "[" << indices[k] << "]: got " << g << ", want " << w << " (|diff| " << err
                    << ", allowed " << tol.atol + tol.rtol * std::fabs(w) << ")";
    }
  }
  EXPECT_EQ(failures, 0) << what << ": " << failures << " elements out of tolerance";
}

// ---------------------------------------------------------------- Keras layers

nn::Initializer initializer_of(const json& j, nn::Initializer fallback) {
  if (j.is_null()) return fallback;
  const std::string name = j.at("name");
  if (name == "constant") return nn::Initializer::constant(j.at("value").get<float>());
  return nn::Initializer::from_name(name);
}

nn::Regularizer regularizer_of(const json& j) {
  if (j.is_null()) return {};
  const std::string name = j.at("name");
  if (name == "l1") return nn::Regularizer::l1(j.value("l1", 0.01f));
  if (name == "l2") return nn::Regularizer::l2(j.value("l2", 0.01f));
  if (name == "l1_l2") return nn::Regularizer::l1_l2(j.value("l1", 0.0f), j.value("l2", 0.0f));
  throw std::runtime_error("unknown regularizer " + name);
}

std::vector<int> axes_of(const json& j) {
  if (j.is_number()) return {j.get<int>()};
  return j.get<std::vector<int>>();
}

nn::BatchNormalizationOptions keras_options(const json& l) {
  nn::BatchNormalizationOptions o;
  o.version = l.value("flavor", "keras3") == "keras2" ? nn::KerasVersion::keras2 : nn::KerasVersion::keras3;
  if (l.contains("axis")) o.axis = axes_of(l.at("axis"));
  o.momentum = l.value("momentum", 0.99);
  o.epsilon = l.value("epsilon", 1e-3);
  o.center = l.value("center", true);
  o.scale = l.value("scale", true);
  o.trainable = l.value("trainable", true);
  if (l.contains("fused") && !l.at("fused").is_null()) o.fused = l.at("fused").get<bool>() ? nn::Fused::yes : nn::Fused::no;
  auto get = [&](const char* k) { return l.contains(k) ? l.at(k) : json(); };
  o.beta_initializer = initializer_of(get("beta_initializer"), nn::Initializer::zeros());
  o.gamma_initializer = initializer_of(get("gamma_initializer"), nn::Initializer::ones());
  o.moving_mean_initializer = initializer_of(get("moving_mean_initializer"), nn::Initializer::zeros());
  o.moving_variance_initializer = initializer_of(get("moving_variance_initializer"), nn::Initializer::ones());
  o.beta_regularizer = regularizer_of(get("beta_regularizer"));
  o.gamma_regularizer = regularizer_of(get("gamma_regularizer"));
  o.name = "bn";
  return o;
}

struct KerasState {
  std::vector<std::vector<float>> weights;
  bool trainable, built;
  friend bool operator==(const KerasState&, const KerasState&) = default;
};

KerasState snapshot(const nn::BatchNormalization& bn) {
  KerasState s{{}, bn.trainable(), bn.built()};
  if (bn.built())
    for (const auto& w : bn.get_weights()) s.weights.push_back(w.vector());
  return s;
}

// Compares the named tensors `e` mentions; a null expectation means "does not exist".
void expect_named(const std::vector<std::pair<const char*, const Tensor*>>& named, const json& e,
                  const Tolerance& tol) {
  for (const auto& [key, t] : named) {
    if (!e.contains(key)) continue;
    if (e.at(key).is_null()) {
      EXPECT_EQ(t, nullptr) << key << " should not exist";
      continue;
    }
    ASSERT_NE(t, nullptr) << key << " does not exist in bnorm";
    expect_tensor(key, *t, e.at(key), tol);
  }
}

// y, dx and the parameter gradients of a "grad" step, under the framework's names.
void expect_gradients(const json& e, const Tensor& y, const nn::BatchNormGradients& g, const char* dscale,
                      const char* dshift, const Tolerance& tol) {
  const Tensor* dgamma = g.dgamma ? &*g.dgamma : nullptr;
  const Tensor* dbeta = g.dbeta ? &*g.dbeta : nullptr;
  expect_named({{"y", &y}, {"dx", &g.dx}, {dscale, dgamma}, {dshift, dbeta}}, e, tol);
}

void expect_keras_state(const nn::BatchNormalization& bn, const json& e, const Tolerance& tol) {
  auto value = [](const nn::Variable* v) { return v ? &v->value : nullptr; };
  expect_named({{"gamma", value(bn.gamma())},
                {"beta", value(bn.beta())},
                {"moving_mean", value(bn.moving_mean())},
                {"moving_variance", value(bn.moving_variance())}},
               e, tol);
}

std::optional<bool> training_of(const json& s) {
  if (!s.contains("training") || s.at("training").is_null()) return std::nullopt;
  return s.at("training").get<bool>();
}

// Runs `f`; when the step expects an error, checks that a bnorm::Error is thrown and
// that `same_state` still holds; otherwise runs it plainly.
template <typename F, typename G>
bool run_step(const json& step, F&& f, G&& same_state) {
  if (step.contains("expect_error")) {
    bool threw = false;
    try {
      f();
    } catch (const bnorm::Error& e) {
      threw = true;
      EXPECT_FALSE(std::string(e.what()).empty());
    }
    EXPECT_TRUE(threw) << "step " << step.at("op") << " should fail like the framework's "
                       << step.at("expect_error");
    EXPECT_TRUE(same_state()) << "a failed step changed the layer's state";
    return false;
  }
  f();
  return true;
}

void run_keras_case(const json& c, const Tolerance& tol) {
  const json& l = c.at("layer");
  std::unique_ptr<nn::BatchNormalization> bn;
  const auto& steps = c.at("steps");
  try {
    bn = std::make_unique<nn::BatchNormalization>(keras_options(l));
    if (l.contains("input_shape") && !l.at("input_shape").is_null()) {
      std::vector<std::int64_t> d;
      for (const auto& v : l.at("input_shape")) d.push_back(v.is_null() ? -1 : v.get<std::int64_t>());
      if (!d.empty() && d[0] < 0) d[0] = 1;
      bn->build(Shape(d));
    }
  } catch (const bnorm::Error& e) {
    // Keras rejects some configurations when the layer is constructed or built; the
    // fixture then marks its first step as failing.
    ASSERT_FALSE(steps.empty());
    EXPECT_TRUE(steps[0].contains("expect_error")) << "bnorm rejected the layer, Keras did not: " << e.what();
    return;
  }
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const json& s = steps[i];
    SCOPED_TRACE("step " + std::to_string(i) + " (" + s.at("op").get<std::string>() + ")");
    const std::string op = s.at("op");
    const json e = s.value("expect", json::object());
    const KerasState before = snapshot(*bn);
    auto same = [&] { return snapshot(*bn) == before; };
    if (op == "call") {
      Tensor y;
      if (run_step(s, [&] { y = bn->call(tensor_of(s.at("x")), training_of(s)); }, same)) {
        if (e.contains("y")) expect_tensor("y", y, e.at("y"), tol);
        expect_keras_state(*bn, e, tol);
      }
    } else if (op == "grad") {
      nn::BatchNormContext ctx;
      Tensor y;
      nn::BatchNormGradients g;
      if (run_step(s, [&] {
            y = bn->forward(tensor_of(s.at("x")), training_of(s), &ctx);
            g = bn->backward(ctx, tensor_of(s.at("dy")));
          }, same)) {
        expect_gradients(e, y, g, "dgamma", "dbeta", tol);
        expect_keras_state(*bn, e, tol);
      }
    } else if (op == "set_weights") {
      ASSERT_TRUE(bn->built()) << "set_weights before build";
      std::pair<const char*, nn::Variable*> vars[] = {{"gamma", bn->gamma()},
                                                      {"beta", bn->beta()},
                                                      {"moving_mean", bn->moving_mean()},
                                                      {"moving_variance", bn->moving_variance()}};
      for (auto& [key, v] : vars) {
        if (!s.contains(key)) continue;
        ASSERT_NE(v, nullptr) << key;
        v->value = tensor_of(s.at(key));
      }
    } else if (op == "set_trainable") {
      bn->set_trainable(s.at("value").get<bool>());
    } else if (op == "inspect") {
      if (e.contains("num_trainable_weights")) {
        EXPECT_EQ(bn->trainable_weights().size(), e.at("num_trainable_weights").get<std::size_t>());
      }
      if (e.contains("num_non_trainable_weights")) {
        EXPECT_EQ(bn->non_trainable_weights().size(), e.at("num_non_trainable_weights").get<std::size_t>());
      }
      if (e.contains("weight_names")) {
        std::vector<std::string> names;
        for (auto* v : bn->weights()) names.push_back(v->name);
        EXPECT_EQ(names, e.at("weight_names").get<std::vector<std::string>>());
      }
      const auto losses = bn->losses();
      if (e.contains("num_losses")) { EXPECT_EQ(losses.size(), e.at("num_losses").get<std::size_t>()); }
      if (e.contains("losses")) {
        const auto want = e.at("losses").get<std::vector<double>>();
        ASSERT_EQ(losses.size(), want.size());
        for (std::size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(losses[k], want[k], tol.atol + tol.rtol * std::fabs(want[k]));
      }
      expect_keras_state(*bn, e, tol);
    } else {
      FAIL() << "unknown Keras step " << op;
    }
  }
}

// ---------------------------------------------------------------- PyTorch modules

struct TorchState {
  std::vector<std::vector<float>> tensors;
  std::int64_t counter;
  bool training, tracking, initialized;
  friend bool operator==(const TorchState&, const TorchState&) = default;
};

TorchState snapshot(const nn::TorchBatchNorm& m) {
  TorchState s{{}, m.num_batches_tracked(), m.is_training(), m.track_running_stats(), m.initialized()};
  for (const Tensor* t : {m.weight(), m.bias(), m.running_mean(), m.running_var()})
    s.tensors.push_back(t ? t->vector() : std::vector<float>{});
  return s;
}

void expect_torch_state(const nn::TorchBatchNorm& m, const json& e, const Tolerance& tol) {
  expect_named({{"weight", m.weight()},
                {"bias", m.bias()},
                {"running_mean", m.running_mean()},
                {"running_var", m.running_var()}},
               e, tol);
  if (e.contains("num_batches_tracked") && !e.at("num_batches_tracked").is_null()) {
    EXPECT_EQ(m.num_batches_tracked(), e.at("num_batches_tracked").get<std::int64_t>());
  }
}

void run_torch_case(const json& c, const Tolerance& tol) {
  const json& l = c.at("layer");
  nn::TorchBatchNormOptions o;
  o.num_features = l.contains("num_features") && !l.at("num_features").is_null() ? l.at("num_features").get<std::int64_t>() : 0;
  o.eps = l.value("eps", 1e-5);
  if (l.contains("momentum") && l.at("momentum").is_null()) o.momentum = std::nullopt;
  else o.momentum = l.value("momentum", 0.1);
  o.affine = l.value("affine", true);
  o.track_running_stats = l.value("track_running_stats", true);
  nn::TorchBatchNorm::Rank rank = nn::TorchBatchNorm::Rank::any;
  const json dim = l.contains("dim") ? l.at("dim") : json();
  int d = dim.is_null() ? l.value("lazy_dim", 2) : dim.get<int>();
  rank = d == 1 ? nn::TorchBatchNorm::Rank::d1 : d == 2 ? nn::TorchBatchNorm::Rank::d2 : nn::TorchBatchNorm::Rank::d3;
  if (dim.is_null()) o.num_features = 0;
  nn::TorchBatchNorm m(rank, o);

  const auto& steps = c.at("steps");
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const json& s = steps[i];
    SCOPED_TRACE("step " + std::to_string(i) + " (" + s.at("op").get<std::string>() + ")");
    const std::string op = s.at("op");
    const json e = s.value("expect", json::object());
    const TorchState before = snapshot(m);
    auto same = [&] { return snapshot(m) == before; };
    if (op == "train") {
      m.train();
    } else if (op == "eval") {
      m.eval();
    } else if (op == "forward") {
      Tensor y;
      if (run_step(s, [&] { y = m.forward(tensor_of(s.at("x"))); }, same)) {
        if (e.contains("y")) expect_tensor("y", y, e.at("y"), tol);
        expect_torch_state(m, e, tol);
      }
    } else if (op == "grad") {
      nn::BatchNormContext ctx;
      Tensor y;
      nn::BatchNormGradients g;
      if (run_step(s, [&] {
            y = m.forward(tensor_of(s.at("x")), &ctx);
            g = m.backward(ctx, tensor_of(s.at("dy")));
          }, same)) {
        expect_gradients(e, y, g, "dweight", "dbias", tol);
        expect_torch_state(m, e, tol);
      }
    } else if (op == "set_track_running_stats") {
      m.set_track_running_stats(s.at("value").get<bool>());
    } else if (op == "set_momentum") {
      if (s.at("value").is_null()) m.set_momentum(std::nullopt);
      else m.set_momentum(s.at("value").get<double>());
    } else if (op == "reset_running_stats") {
      m.reset_running_stats();
    } else if (op == "set_state") {
      std::pair<const char*, Tensor*> vars[] = {{"weight", m.weight()},
                                                {"bias", m.bias()},
                                                {"running_mean", m.running_mean()},
                                                {"running_var", m.running_var()}};
      for (auto& [key, t] : vars) {
        if (!s.contains(key)) continue;
        ASSERT_NE(t, nullptr) << key;
        *t = tensor_of(s.at(key));
      }
      if (s.contains("num_batches_tracked")) m.set_num_batches_tracked(s.at("num_batches_tracked").get<std::int64_t>());
    } else if (op == "inspect") {
      if (e.contains("num_features")) { EXPECT_EQ(m.num_features(), e.at("num_features").get<std::int64_t>()); }
      if (e.contains("eps")) { EXPECT_DOUBLE_EQ(m.eps(), e.at("eps").get<double>()); }
      if (e.contains("momentum")) {
        if (e.at("momentum").is_null()) { EXPECT_FALSE(m.momentum().has_value()); }
        else EXPECT_DOUBLE_EQ(m.momentum().value_or(-1.0), e.at("momentum").get<double>());
      }
      if (e.contains("has_running_stats")) { EXPECT_EQ(m.has_running_stats(), e.at("has_running_stats").get<bool>()); }
      if (e.contains("training")) { EXPECT_EQ(m.is_training(), e.at("training").get<bool>()); }
      expect_torch_state(m, e, tol);
    } else {
      FAIL() << "unknown PyTorch step " << op;
    }
  }
}

// ---------------------------------------------------------------- TensorFlow ops

void run_ops_case(const json& c, const Tolerance& tol) {
  const auto& steps = c.at("steps");
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const json& s = steps[i];
    SCOPED_TRACE("step " + std::to_string(i) + " (" + s.at("op").get<std::string>() + ")");
    const std::string op = s.at("op");
    const json e = s.value("expect", json::object());
    auto nothing_changed = [] { return true; };
    if (op == "moments") {
      nn::Moments mo;
      if (run_step(s, [&] {
            mo = nn::moments(tensor_of(s.at("x")), s.at("axes").get<std::vector<int>>(), s.value("keepdims", false));
          }, nothing_changed)) {
        if (e.contains("mean")) expect_tensor("mean", mo.mean, e.at("mean"), tol);
        if (e.contains("variance")) expect_tensor("variance", mo.variance, e.at("variance"), tol);
      }
    } else if (op == "batch_normalization") {
      auto opt = [&](const char* k) -> std::optional<Tensor> {
        if (!s.contains(k) || s.at(k).is_null()) return std::nullopt;
        return tensor_of(s.at(k));
      };
      Tensor y;
      if (run_step(s, [&] {
            y = nn::batch_normalization(tensor_of(s.at("x")), tensor_of(s.at("mean")), tensor_of(s.at("variance")),
                                        opt("offset"), opt("scale"), s.at("epsilon").get<float>());
          }, nothing_changed)) {
        if (e.contains("y")) expect_tensor("y", y, e.at("y"), tol);
      }
    } else {
      FAIL() << "unknown ops step " << op;
    }
  }
}

class GoldenCase : public ::testing::Test {
 public:
  GoldenCase(json c, std::string kind) : case_(std::move(c)), kind_(std::move(kind)) {}
  void TestBody() override {
    nn::reset_unique_names();
    g_current_case = case_.at("id");
    Tolerance tol{case_.value("rtol", 1e-5), case_.value("atol", 1e-6)};
    SCOPED_TRACE(case_.value("source", std::string()));
    const std::string kind = case_.at("layer").value("kind", kind_);
    if (kind == "keras") run_keras_case(case_, tol);
    else if (kind == "torch") run_torch_case(case_, tol);
    else if (kind == "ops") run_ops_case(case_, tol);
    else FAIL() << "unknown layer kind " << kind;
  }

 private:
  json case_;
  std::string kind_;
};

class MissingFixture : public ::testing::Test {
 public:
  explicit MissingFixture(std::string why) : why_(std::move(why)) {}
  void TestBody() override { FAIL() << why_; }

 private:
  std::string why_;
};

int register_cases() {
  int n = 0;
  const std::pair<const char*, const char*> files[] = {
      {"keras3.json", "Keras3"}, {"keras2.json", "Keras2"}, {"tfops.json", "TfOps"}, {"torch.json", "Torch"}};
  // CTest runs one case per process with --gtest_filter=Suite.case: parse only the file
  // that filter can match (the files are large, and slow to parse under sanitizers).
  const std::string filter = ::testing::GTEST_FLAG(filter);
  const bool one_suite = filter.find_first_of("*?:-") == std::string::npos && filter.find('.') != std::string::npos;
  for (const auto& [file, suite] : files) {
    if (one_suite && filter.rfind(std::string(suite) + ".", 0) != 0) continue;
    const bnorm::test::FixtureFile fixture = bnorm::test::read_fixture(file, "bnorm-golden", 1);
    const json& doc = fixture.data;
    const std::string problem = fixture.error;
    if (!problem.empty()) {
      ::testing::RegisterTest(suite, "fixture_file", nullptr, nullptr, __FILE__, __LINE__,
                              [problem]() -> ::testing::Test* { return new MissingFixture(problem); });
      continue;
    }
    const std::string kind = std::string(suite) == "Torch" ? "torch" : std::string(suite) == "TfOps" ? "ops" : "keras";
    for (const auto& c : doc.at("cases")) {
      const std::string id = c.at("id");
      ::testing::RegisterTest(suite, id.c_str(), nullptr, nullptr, __FILE__, __LINE__,
                              [c, kind]() -> ::testing::Test* { return new GoldenCase(c, kind); });
      ++n;
    }
  }
  return n;
}

class ReportMaxError : public ::testing::EmptyTestEventListener {
  void OnTestProgramEnd(const ::testing::UnitTest&) override {
    if (g_max_rel_error > 0)
      std::printf("golden: largest relative error in cases at rtol 1e-5: %.3g (%s)\n", g_max_rel_error,
                  g_max_rel_where.c_str());
  }
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  register_cases();
  ::testing::UnitTest::GetInstance()->listeners().Append(new ReportMaxError);
  return RUN_ALL_TESTS();
}
