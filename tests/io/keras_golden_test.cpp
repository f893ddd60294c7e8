// Keras model files written by real Keras 3 and tf_keras (tests/fixtures/models/, made by
// tests/fixtures/generate_model_files.py): every file loads in bnorm and predicts what
// Keras predicted, within the fixture's tolerance; the layer configurations come through;
// files bnorm writes load back in bnorm with the same predictions, and (with
// BNORM_KERAS_EXPORT_DIR set) are exported for the generator's --check-bnorm-files, which
// loads them in real Keras.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"
#include "nn/fixture_file.hpp"

using bnorm::Shape;
using bnorm::Tensor;
using nlohmann::json;
namespace nn = bnorm::nn;
namespace io = bnorm::io;
namespace fs = std::filesystem;

namespace {

const bnorm::test::FixtureFile& fixture() {
  static const auto f = bnorm::test::read_fixture("keras_models.json", "bnorm-keras-models", 1);
  return f;
}

std::string model_path(const std::string& file) { return bnorm::test::fixtures_dir() + "/" + file; }

Tensor tensor_of(const json& t) {
  std::vector<std::int64_t> shape = t["shape"].get<std::vector<std::int64_t>>();
  Tensor out{Shape(shape)};
  const auto& data = t["data"];
  for (std::int64_t i = 0; i < out.numel(); ++i) out[i] = data[static_cast<std::size_t>(i)].get<float>();
  return out;
}

json json_of(const Tensor& t) {
  json data = json::array();
  for (std::int64_t i = 0; i < t.numel(); ++i) data.push_back(t[i]);
  return {{"shape", t.shape().dims()}, {"data", data}};
}

// Largest |got - want| / (atol + rtol |want|); <= 1 passes.
double worst(const Tensor& got, const Tensor& want, double rtol, double atol) {
  EXPECT_EQ(got.shape(), want.shape());
  if (got.shape() != want.shape()) return INFINITY;
  double w = 0;
  for (std::int64_t i = 0; i < got.numel(); ++i) {
    w = std::max(w, std::abs(double(got[i]) - want[i]) / (atol + rtol * std::abs(double(want[i]))));
  }
  return w;
}

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  if (fixture().error.empty()) {
    for (const auto& c : fixture().data["cases"]) names.push_back(c["name"].get<std::string>());
  }
  return names;
}

const json& case_of(const std::string& name) {
  for (const auto& c : fixture().data["cases"])
    if (c["name"] == name) return c;
  throw std::runtime_error("no case " + name);
}

class KerasFiles : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { ASSERT_TRUE(fixture().error.empty()) << fixture().error; }
};

// Every file of the case: load (a model file) or load into the model of "into" (a
// weights file), predict, compare.
TEST_P(KerasFiles, LoadAndPredictAsKeras) {
  const json& c = case_of(GetParam());
  const double rtol = fixture().data["tolerance"]["rtol"], atol = fixture().data["tolerance"]["atol"];
  const Tensor x = tensor_of(c["input"]);
  for (const auto& f : c["files"]) {
    const std::string file = f["file"];
    SCOPED_TRACE(file);
    std::unique_ptr<nn::Model> model;
    if (f["load"] == "model") {
      model = io::load_model(model_path(file));
    } else {
      model = io::load_model(model_path(f["into"]));
      io::load_weights(*model, model_path(file));
    }
    const auto steps = io::saved_optimizer_iterations(model_path(file));
    if (f["optimizer_iterations"].is_null()) {
      EXPECT_FALSE(steps.has_value());
    } else {
      EXPECT_EQ(steps, std::optional<std::int64_t>(f["optimizer_iterations"].get<std::int64_t>()));
    }
    const Tensor y = model->predict(x);
    const double w = worst(y, tensor_of(f["output"]), rtol, atol);
    EXPECT_LE(w, 1.0) << file << ": worst error " << w << " x tolerance";
    std::printf("[ keras ] %-40s predict within %.3g of the tolerance\n", file.c_str(), w);
  }
}

// The configuration comes through: class, name, trainable and hyper-parameters.
TEST_P(KerasFiles, ConfigurationMatchesKeras) {
  const json& c = case_of(GetParam());
  for (const auto& [flavor, suffix] : {std::pair<std::string, std::string>{"keras3", ".keras"}, {"tf_keras", ".legacy.h5"}}) {
    SCOPED_TRACE(flavor);
    auto model = io::load_model(model_path("models/" + GetParam() + suffix));
    const json& layers = c["layers"][flavor];
    ASSERT_EQ(model->layers().size(), layers.size());
    EXPECT_EQ(dynamic_cast<nn::Sequential*>(model.get()) != nullptr, c["api"] == "Sequential");
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const auto& want = layers[i];
      const auto& layer = model->layers()[i];
      EXPECT_EQ(layer->class_name(), want["class_name"]);
      EXPECT_EQ(layer->name(), want["name"]);
      EXPECT_EQ(layer->trainable(), want["trainable"]) << layer->name();
      if (auto* bn = dynamic_cast<nn::BatchNormalization*>(layer.get())) {
        EXPECT_DOUBLE_EQ(bn->options().momentum, want["momentum"].get<double>());
        EXPECT_DOUBLE_EQ(bn->options().epsilon, want["epsilon"].get<double>());
        EXPECT_EQ(bn->options().center, want["center"]);
        EXPECT_EQ(bn->options().scale, want["scale"]);
        // Keras's axis (tf_keras stores it made positive) names the same channel axes.
        std::vector<int> axes = want["axis"].get<std::vector<int>>();
        EXPECT_EQ(bn->axes().size(), axes.size());
        for (std::size_t k = 0; k < axes.size() && k < bn->axes().size(); ++k) {
          const int rank = model->input_shape()->rank();
          EXPECT_EQ(bn->axes()[k], axes[k] < 0 ? axes[k] + rank : axes[k]);
        }
      }
      if (auto* d = dynamic_cast<nn::Dense*>(layer.get())) {
        EXPECT_EQ(d->units(), want["units"].get<std::int64_t>());
        EXPECT_EQ(d->options().use_bias, want["use_bias"]);
      }
      if (auto* dr = dynamic_cast<nn::Dropout*>(layer.get())) {
        EXPECT_DOUBLE_EQ(dr->rate(), want["rate"].get<double>());
      }
    }
  }
}

// bnorm writes every format; bnorm reads each back with the same predictions (bit for
// bit: the same float32 values); with BNORM_KERAS_EXPORT_DIR set, the files and bnorm's
// predictions are left there for `generate_model_files.py --check-bnorm-files DIR`.
TEST_P(KerasFiles, WrittenFilesForKerasRoundTrip) {
  const json& c = case_of(GetParam());
  const Tensor x = tensor_of(c["input"]);
  const char* env = std::getenv("BNORM_KERAS_EXPORT_DIR");
  const fs::path dir = env ? fs::path(env) : fs::temp_directory_path() / "bnorm_keras_roundtrip";
  fs::create_directories(dir);
  auto model = io::load_model(model_path("models/" + GetParam() + ".keras"));
  const Tensor want = model->predict(x);
  const std::string base = (dir / GetParam()).string();
  io::save_model(*model, base + ".keras");
  io::save_weights(*model, base + ".weights.h5");
  io::save_model(*model, base + ".h5");
  io::save_weights(*model, base + ".legacy_weights.h5");
  // The .keras file carries the compile configuration and the optimizer state (the
  // fixture's, restored from Keras): both come back exactly.
  {
    auto back = io::load_model(base + ".keras");
    ASSERT_TRUE(back->compiled());
    EXPECT_EQ(back->optimizer()->class_name(), model->optimizer()->class_name());
    EXPECT_EQ(back->optimizer()->iterations(), model->optimizer()->iterations());
    EXPECT_EQ(back->optimizer()->learning_rate(), model->optimizer()->learning_rate());
    const auto sa = model->optimizer()->state(), sb = back->optimizer()->state();
    ASSERT_EQ(sa.size(), sb.size());
    for (std::size_t i = 0; i < sa.size(); ++i) EXPECT_EQ(worst(sb[i].second, sa[i].second, 0, 0), 0.0) << sa[i].first;
  }
  for (const std::string suffix : {".keras", ".h5"}) {
    SCOPED_TRACE(suffix);
    auto back = io::load_model(base + suffix);
    EXPECT_EQ(worst(back->predict(x), want, 0, 0), 0.0);
    for (std::size_t i = 0; i < back->layers().size(); ++i) {
      EXPECT_EQ(back->layers()[i]->name(), model->layers()[i]->name());
      EXPECT_EQ(back->layers()[i]->trainable(), model->layers()[i]->trainable());
    }
  }
  for (const std::string suffix : {".weights.h5", ".legacy_weights.h5"}) {
    SCOPED_TRACE(suffix);
    auto into = io::load_model(model_path("models/" + GetParam() + ".keras"));
    for (nn::Variable* v : into->weights()) v->value.fill(0.25f);
    io::load_weights(*into, base + suffix);
    EXPECT_EQ(worst(into->predict(x), want, 0, 0), 0.0);
  }
  json frozen = json::array();
  for (const auto& l : model->layers())
    if (!l->trainable()) frozen.push_back(l->name());
  json record{{"input", json_of(x)}, {"output", json_of(want)}, {"frozen", frozen}};
  // For the Keras check: Keras, loading bnorm's .keras (compiled, with the optimizer
  // state bnorm wrote), trains on these batches to these weights (Keras's own run).
  bool dropout = false;
  for (const auto& l : model->layers()) dropout |= l->class_name() == "Dropout";
  const json& keras3_continued = c["files"][1]["continued"];
  if (!dropout) {
    record["continue"] = {{"iterations", model->optimizer()->iterations()},
                          {"batches", keras3_continued["batches"]},
                          {"weights", keras3_continued["weights"]},
                          {"zero_gradient_weights", keras3_continued["zero_gradient_weights"]}};
  }
  // The same for the legacy format: the fixture's tf.keras model (compiled, with its
  // optimizer state) written back by bnorm as .h5 with training_config and
  // optimizer_weights, for tf.keras to continue from.
  {
    auto legacy = io::load_model(model_path("models/" + GetParam() + ".legacy.h5"));
    ASSERT_TRUE(legacy->compiled());
    io::save_model(*legacy, base + ".from_legacy.h5");
    auto back = io::load_model(base + ".from_legacy.h5");
    ASSERT_TRUE(back->compiled());
    EXPECT_EQ(back->optimizer()->iterations(), legacy->optimizer()->iterations());
    const auto sa = legacy->optimizer()->state(), sb = back->optimizer()->state();
    ASSERT_EQ(sa.size(), sb.size());
    for (std::size_t i = 0; i < sa.size(); ++i) EXPECT_EQ(worst(sb[i].second, sa[i].second, 0, 0), 0.0) << sa[i].first;
    const json& legacy_continued = c["files"][3]["continued"];
    if (!dropout) {
      record["continue_legacy"] = {{"iterations", legacy->optimizer()->iterations()},
                                   {"batches", legacy_continued["batches"]},
                                   {"weights", legacy_continued["weights"]},
                                   {"zero_gradient_weights", legacy_continued["zero_gradient_weights"]}};
    }
  }
  std::ofstream(base + ".json") << record.dump();
  if (!env) {
    for (const std::string suffix : {".keras", ".weights.h5", ".h5", ".legacy_weights.h5", ".from_legacy.h5", ".json"}) {
      fs::remove(base + suffix);
    }
  }
}

// A .keras file of a compiled model loads compiled, with Keras's optimizer state;
// training on the batches Keras trained on next gives Keras's next weights (relative
// 1e-4, absolute 1e-6, as the training parity tests). Dropout masks are random draws in
// both frameworks, so a model with Dropout is only checked for its optimizer state.
TEST_P(KerasFiles, ContinuesKerasTrainingWhereItStopped) {
  const json& c = case_of(GetParam());
  for (const auto& f : c["files"]) {
    if (!f.contains("continued")) continue;
    const json& cont = f["continued"];
    auto model = io::load_model(model_path(cont["from"]));
    ASSERT_TRUE(model->compiled()) << "compile_config of " << cont["from"];
    std::int64_t steps_before = 0;
    for (const auto& g : c["files"])
      if (g["file"] == cont["from"]) steps_before = g["optimizer_iterations"].get<std::int64_t>();
    EXPECT_EQ(model->optimizer()->iterations(), steps_before);
    bool dropout = false;
    for (const auto& l : model->layers()) dropout |= l->class_name() == "Dropout";
    if (dropout) continue;
    for (const auto& b : cont["batches"]) model->train_on_batch(tensor_of(b["x"]), tensor_of(b["y"]));
    EXPECT_EQ(model->optimizer()->iterations(), cont.contains("iterations_after") ? cont["iterations_after"].get<std::int64_t>()
                                                                                 : f["optimizer_iterations"].get<std::int64_t>());
    const auto got = model->get_weights();
    ASSERT_EQ(got.size(), cont["weights"].size());
    // Weights whose exact gradient is zero (the generator finds them with Keras): Adam
    // turns their rounding noise into steps, so they agree to 1e-4 absolute only.
    const auto noisy = cont["zero_gradient_weights"].get<std::vector<std::size_t>>();
    double w = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      const bool zero_gradient = std::find(noisy.begin(), noisy.end(), i) != noisy.end();
      w = std::max(w, worst(got[i], tensor_of(cont["weights"][i]), zero_gradient ? 0.0 : 1e-4, zero_gradient ? 1e-4 : 1e-6));
    }
    EXPECT_LE(w, 1.0) << "weights after " << cont["batches"].size() << " more steps";
    std::printf("[ keras ] %-40s + %zu training steps from its optimizer state: weights within %.3g of the tolerance\n",
                cont["from"].get<std::string>().c_str(), cont["batches"].size(), w);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, KerasFiles, ::testing::ValuesIn(case_names()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(KerasFiles);

TEST(KerasFixture, HasEveryFormatOfEveryCase) {
  ASSERT_TRUE(fixture().error.empty()) << fixture().error;
  EXPECT_GE(fixture().data["cases"].size(), 6u);
  for (const auto& c : fixture().data["cases"]) EXPECT_EQ(c["files"].size(), 4u) << c["name"];
}

}  // namespace
