// Training parity against Keras 3 (issue 3 item 7): every case of
// tests/fixtures/training_parity.json (written by tests/fixtures/generate_parity.py with
// Keras 3.15.1 / TensorFlow 2.21 on CPU; format in tests/fixtures/FORMAT.md, section
// "training_parity.json") is rebuilt in bnorm, given the Keras initial weights, trained
// with the same batch order (a train_on_batch loop or fit with shuffle = false), and
// compared with Keras: the loss of every step, the weights and moving statistics at the
// checkpoints and at the end, and the predictions / calls made before and after training.
// A value matches when |got - want| <= atol + rtol * |want| (the case's rtol and atol).
// Under Adam / RMSprop the bias of a Dense layer feeding a trainable batch normalization is
// set to Keras's value after every step ("pinned": its exact gradient is zero, so its
// trajectory is rounding noise, in Keras as well; see pin() and generate_parity.py).
// One GoogleTest test per case (value-parameterized, named by the case id), so that CTest
// lists each case. Each test prints the largest relative difference it saw, per kind.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bnorm/nn/batch_normalization.hpp"
#include "fixture_file.hpp"
#include "bnorm/nn/callbacks.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/losses.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/optimizers.hpp"

using json = nlohmann::json;
using bnorm::Shape;
using bnorm::Tensor;
namespace nn = bnorm::nn;

namespace {

using Fixture = bnorm::test::FixtureFile;

const Fixture& fixture() {
  static const Fixture f = bnorm::test::read_fixture("training_parity.json", "bnorm-training-parity", 1);
  return f;
}

struct CaseRef {
  std::string id;
  std::size_t index = 0;
};

void PrintTo(const CaseRef& c, std::ostream* os) { *os << c.id; }

// One entry per case; a single "fixture_not_loaded" entry when the file is unreadable, so
// that the problem shows up as a failing test rather than as no tests at all.
std::vector<CaseRef> all_cases() {
  const Fixture& f = fixture();
  if (!f.error.empty()) return {CaseRef{"fixture_not_loaded", 0}};
  std::vector<CaseRef> out;
  const json& cases = f.data.at("cases");
  for (std::size_t i = 0; i < cases.size(); ++i) out.push_back({cases[i].at("id").get<std::string>(), i});
  return out;
}

Shape shape_of(const json& t) { return Shape(t.at("shape").get<std::vector<std::int64_t>>()); }

Tensor tensor_of(const json& t) {
  std::vector<float> data;
  for (const auto& v : t.at("data")) data.push_back(v.get<float>());
  return Tensor(shape_of(t), std::move(data));
}

// Rows [begin, end) of x (any rank >= 1).
Tensor rows(const Tensor& x, std::int64_t begin, std::int64_t end) {
  end = std::min(end, x.dim(0));
  std::vector<std::int64_t> dims = x.shape().dims();
  const std::int64_t row = x.dim(0) ? x.numel() / x.dim(0) : 0;
  dims[0] = end - begin;
  return Tensor(Shape(dims), std::vector<float>(x.data() + begin * row, x.data() + end * row));
}

// Compares and tracks the largest relative difference |got - want| / max(|want|, atol / rtol)
// per kind of value, for the report.
class Comparer {
 public:
  Comparer(double rtol, double atol) : rtol_(rtol), atol_(atol) {}

  void value(const std::string& kind, const std::string& what, double got, double want) {
    const double err = std::fabs(got - want);
    const double rel = err / std::max(std::fabs(want), atol_ / rtol_);
    auto& m = max_[kind];
    if (!(rel <= m.first)) m = {rel, what};
    if (!(err <= atol_ + rtol_ * std::fabs(want)) && failures_[kind]++ < 8) {
      ADD_FAILURE() << what << ": got " << got << ", want " << want << " (|diff| " << err << ", allowed "
                    << atol_ + rtol_ * std::fabs(want) << ", relative " << rel << ")";
    }
  }

  // Tracks the largest relative difference without asserting anything.
  void observe(const std::string& kind, const std::string& what, const Tensor& got, const json& want) {
    const auto& data = want.at("data");
    if (got.numel() != static_cast<std::int64_t>(data.size())) {
      ADD_FAILURE() << what << ": size";
      return;
    }
    auto& m = max_[kind];
    for (std::size_t i = 0; i < data.size(); ++i) {
      const double w = data[i].get<double>(), g = got[static_cast<std::int64_t>(i)];
      const double rel = std::fabs(g - w) / std::max(std::fabs(w), atol_ / rtol_);
      if (!(rel <= m.first)) m = {rel, what + "[" + std::to_string(i) + "]"};
    }
  }

  void tensor(const std::string& kind, const std::string& what, const Tensor& got, const json& want) {
    ASSERT_EQ(got.shape(), shape_of(want)) << what << ": shape";
    const auto& data = want.at("data");
    double worst = 0;
    for (std::size_t i = 0; i < data.size(); ++i) {
      const double w = data[i].get<double>(), g = got[static_cast<std::int64_t>(i)];
      worst = std::max(worst, std::fabs(g - w) / std::max(std::fabs(w), atol_ / rtol_));
      value(kind, what + "[" + std::to_string(i) + "]", g, w);
    }
    per_tensor_[what] = worst;
  }

  void weights(const std::string& kind, const std::string& what, nn::Model& model, const json& want) {
    const std::vector<Tensor> got = model.get_weights();
    const std::vector<nn::Variable*> vars = model.weights();
    ASSERT_EQ(got.size(), want.size()) << what << ": number of weights";
    for (std::size_t i = 0; i < got.size(); ++i) {
      tensor(kind, what + " weight " + std::to_string(i) + " (" + vars[i]->name + ")", got[i], want[i]);
    }
  }

  std::string report() const {
    std::string out;
    char buf[512];
    if (std::getenv("BNORM_PARITY_VERBOSE"))
      for (const auto& [what, m] : per_tensor_) {
        std::snprintf(buf, sizeof buf, "    %-50s %.3g\n", what.c_str(), m);
        out += buf;
      }
    for (const auto& [kind, m] : max_) {
      std::snprintf(buf, sizeof buf, "  %-12s max relative difference %.3g at %s\n", kind.c_str(), m.first,
                    m.second.c_str());
      out += buf;
    }
    return out;
  }

 private:
  double rtol_, atol_;
  std::map<std::string, std::pair<double, std::string>> max_;
  std::map<std::string, int> failures_;
  std::map<std::string, double> per_tensor_;  // largest relative difference per compared tensor
};

// ---------------------------------------------------------------- model construction

nn::LayerPtr layer_of(const json& spec) {
  const std::string cls = spec.at("class");
  if (cls == "InputLayer") return std::make_shared<nn::InputLayer>(spec.at("shape").get<std::vector<std::int64_t>>());
  if (cls == "Dense") {
    nn::DenseOptions o;
    o.activation = spec.at("activation").get<std::string>();
    o.use_bias = spec.value("use_bias", true);
    if (spec.contains("input_shape")) o.input_shape = spec.at("input_shape").get<std::vector<std::int64_t>>();
    return std::make_shared<nn::Dense>(spec.at("units").get<std::int64_t>(), o);
  }
  if (cls == "BatchNormalization") {
    nn::BatchNormalizationOptions o;
    o.momentum = spec.at("momentum").get<double>();
    o.epsilon = spec.at("epsilon").get<double>();
    o.trainable = spec.at("trainable").get<bool>();
    return std::make_shared<nn::BatchNormalization>(o);
  }
  if (cls == "Activation") return std::make_shared<nn::Activation>(spec.at("activation").get<std::string>());
  throw std::runtime_error("unknown layer class " + cls);
}

std::unique_ptr<nn::Model> model_of(const json& m) {
  if (m.at("functional").get<bool>()) {
    auto inp = nn::Input(m.at("input_shape").get<std::vector<std::int64_t>>());
    auto z = inp;
    for (const auto& spec : m.at("layers")) z = (*layer_of(spec))(z);
    return std::make_unique<nn::Model>(inp, z);
  }
  std::vector<nn::LayerPtr> layers;
  for (const auto& spec : m.at("layers")) layers.push_back(layer_of(spec));
  return std::make_unique<nn::Sequential>(layers);
}

std::shared_ptr<nn::Optimizer> optimizer_of(const json& o) {
  const std::string cls = o.at("class");
  if (o.value("default", false)) return nn::make_optimizer(cls);  // compile(optimizer="adam") / compile()
  if (cls == "Adam") return std::make_shared<nn::Adam>(nn::AdamOptions{});
  if (cls == "SGD") {
    nn::SGDOptions s;
    s.learning_rate = o.at("learning_rate").get<double>();
    s.momentum = o.at("momentum").get<double>();
    return std::make_shared<nn::SGD>(s);
  }
  throw std::runtime_error("unknown optimizer " + cls);
}

std::shared_ptr<nn::Loss> loss_of(const std::string& name) {
  if (name == "lambda_squared_difference") {  // compile(loss=lambda x, y: (x - y) ** 2)
    return nn::Loss::custom(
        "lambda", [](float t, float p) { return (t - p) * (t - p); },
        [](float t, float p) { return -2.0f * (t - p); });
  }
  return nn::make_loss(name);
}

// Pinned variables (FORMAT.md): the bias of a Dense layer that feeds a trainable batch
// normalization has an exact gradient of zero, so under Adam / RMSprop its trajectory is
// rounding noise (Keras itself, given the same batches with their rows permuted, ends
// several percent away). After every step it is set to Keras's value of that step; its
// own value before that is reported (kind "pinned (not asserted)"), never compared.
void pin(nn::Model& model, const json& expect, std::size_t step, Comparer& cmp) {
  if (!expect.contains("pinned")) return;
  std::vector<nn::Variable*> vars = model.weights();
  for (const auto& p : expect.at("pinned")) {
    const auto i = p.at("weight_index").get<std::size_t>();
    const json& want = p.at("after_step").at(step - 1);
    cmp.observe("pinned (not asserted)", "step " + std::to_string(step) + " weight " + std::to_string(i), vars.at(i)->value,
                want);
    vars.at(i)->value = tensor_of(want);
  }
}

// Records logs["loss"] after every batch of fit and pins (see pin()).
class BatchEnd : public nn::Callback {
 public:
  BatchEnd(const json& expect, Comparer& cmp) : expect_(expect), cmp_(cmp) {}
  void on_train_batch_end(nn::Model& model, std::int64_t, const nn::Logs& logs) override {
    losses.push_back(logs.at("loss"));
    pin(model, expect_, losses.size(), cmp_);
  }
  std::vector<double> losses;

 private:
  const json& expect_;
  Comparer& cmp_;
};

// Runs a "before" / "after" operation and compares its expectations.
void run_op(nn::Model& model, const json& op, const Tensor& x, const Tensor& y, Comparer& cmp, const std::string& where) {
  const std::string kind = op.at("op");
  const json& e = op.at("expect");
  if (kind == "predict") {
    cmp.tensor("predictions", where + " predict y", model.predict(x, 32), e.at("y"));
  } else if (kind == "evaluate") {
    cmp.value("losses", where + " evaluate loss", model.evaluate(x, y, 32).at("loss"), e.at("loss").get<double>());
  } else if (kind == "call") {
    std::optional<bool> training;
    if (!op.at("training").is_null()) training = op.at("training").get<bool>();
    const Tensor pred = model(x, training);
    cmp.tensor("predictions", where + " call y", pred, e.at("y"));
    if (e.contains("mean_axis0")) {  // the article's prints: pred.mean(axis=0), pred.var(axis=0)
      const std::int64_t n = pred.dim(0), c = pred.dim(1);
      for (std::int64_t j = 0; j < c; ++j) {
        double mean = 0, var = 0;
        for (std::int64_t i = 0; i < n; ++i) mean += pred[i * c + j];
        mean /= static_cast<double>(n);
        for (std::int64_t i = 0; i < n; ++i) var += (pred[i * c + j] - mean) * (pred[i * c + j] - mean);
        var /= static_cast<double>(n);
        const std::string col = "[" + std::to_string(j) + "]";
        cmp.value("printed", where + " pred.mean(axis=0)" + col, mean, e.at("mean_axis0").at(j).get<double>());
        cmp.value("printed", where + " pred.var(axis=0)" + col, var, e.at("var_axis0").at(j).get<double>());
      }
    }
  } else {
    FAIL() << "unknown op " << kind;
  }
  if (e.contains("weights")) cmp.weights("weights", where + " " + kind, model, e.at("weights"));
}

class TrainingParity : public ::testing::TestWithParam<CaseRef> {};

TEST_P(TrainingParity, MatchesKeras) {
  const Fixture& f = fixture();
  ASSERT_TRUE(f.error.empty()) << f.error;
  const json& c = f.data.at("cases").at(GetParam().index);
  Comparer cmp(c.at("rtol").get<double>(), c.at("atol").get<double>());

  auto model = model_of(c.at("model"));
  model->compile(optimizer_of(c.at("compile").at("optimizer")), loss_of(c.at("compile").at("loss")));
  std::vector<Tensor> initial;
  for (const auto& w : c.at("initial_weights")) initial.push_back(tensor_of(w));
  model->set_weights(initial);

  const Tensor x = tensor_of(c.at("x"));
  const Tensor y = c.at("y").is_string() ? x : tensor_of(c.at("y"));  // "x": fit(x, x)

  if (c.contains("before")) {
    for (std::size_t k = 0; k < c.at("before").size(); ++k)
      run_op(*model, c.at("before")[k], x, y, cmp, "before[" + std::to_string(k) + "]");
  }

  const json& t = c.at("train");
  const json& e = c.at("expect");
  const auto bs = t.at("batch_size").get<std::int64_t>();
  std::vector<double> losses;
  if (t.at("method") == "train_on_batch") {
    const std::int64_t nb = (x.dim(0) + bs - 1) / bs;
    const auto steps = t.at("steps").get<std::int64_t>();
    std::size_t next_checkpoint = 0;
    const json& checkpoints = e.at("checkpoints");
    for (std::int64_t step = 1; step <= steps; ++step) {
      const std::int64_t b = (step - 1) % nb;
      losses.push_back(model->train_on_batch(rows(x, b * bs, (b + 1) * bs), rows(y, b * bs, (b + 1) * bs)).at("loss"));
      pin(*model, e, static_cast<std::size_t>(step), cmp);
      if (next_checkpoint < checkpoints.size() && checkpoints[next_checkpoint].at("step").get<std::int64_t>() == step) {
        cmp.weights("weights", "after step " + std::to_string(step), *model,
                    checkpoints[next_checkpoint].at("weights"));
        ++next_checkpoint;
      }
    }
  } else {
    auto recorder = std::make_shared<BatchEnd>(e, cmp);
    nn::FitOptions o;
    o.batch_size = bs;
    o.epochs = t.at("epochs").get<int>();
    o.verbose = 0;
    o.shuffle = t.at("shuffle").get<bool>();
    o.callbacks = {recorder};
    const auto history = model->fit(x, y, o);
    losses = recorder->losses;
    const auto& want = e.at("history_loss");
    const auto& got = history->history.at("loss");
    ASSERT_EQ(got.size(), want.size()) << "history length";
    for (std::size_t i = 0; i < got.size(); ++i)
      cmp.value("losses", "history loss epoch " + std::to_string(i + 1), got[i], want[i].get<double>());
  }
  const json& want_losses = e.at("losses");
  ASSERT_EQ(losses.size(), want_losses.size()) << "number of recorded step losses";
  for (std::size_t i = 0; i < losses.size(); ++i)
    cmp.value("losses", "loss of step " + std::to_string(i + 1), losses[i], want_losses[i].get<double>());
  cmp.weights("weights", "final", *model, e.at("final_weights"));

  // A frozen batch normalization layer: its four variables are exactly the initial ones.
  for (const auto& layer : model->layers()) {
    auto bn = std::dynamic_pointer_cast<nn::BatchNormalization>(layer);
    if (!bn || bn->trainable()) continue;
    const std::vector<Tensor> all = model->get_weights();
    const std::vector<nn::Variable*> vars = model->weights();
    for (std::size_t i = 0; i < vars.size(); ++i) {
      const auto own = bn->weights();
      if (std::find(own.begin(), own.end(), vars[i]) == own.end()) continue;
      EXPECT_EQ(all[i].vector(), initial[i].vector()) << "frozen batch normalization variable " << vars[i]->name
                                                      << " changed during training";
    }
  }

  for (std::size_t k = 0; k < c.at("after").size(); ++k)
    run_op(*model, c.at("after")[k], x, y, cmp, "after[" + std::to_string(k) + "]");

  const std::string report = cmp.report();
  std::printf("%s (rtol %g, atol %g):\n%s", GetParam().id.c_str(), c.at("rtol").get<double>(),
              c.at("atol").get<double>(), report.c_str());
  RecordProperty("max_relative_differences", report);
}

std::string case_name(const ::testing::TestParamInfo<CaseRef>& info) { return info.param.id; }

INSTANTIATE_TEST_SUITE_P(Keras3, TrainingParity, ::testing::ValuesIn(all_cases()), case_name);

}  // namespace
