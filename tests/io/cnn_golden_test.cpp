// Convolutional networks written by real Keras 3 and tf_keras (tests/fixtures/cnn/, made
// by tests/fixtures/generate_cnn_models.py; schema in tests/fixtures/FORMAT.md): each
// .keras file (Keras 3) and .h5 file (tf_keras) loads in bnorm, predicts what its
// framework predicts, and one training-mode call gives the framework's outputs, input
// gradient, variable gradients (of sum(y * r)) and updated moving statistics, within the
// fixture's relative tolerance (1e-5 of the largest value of each array; gradients of the
// largest gradient of the case). Keras 3's files run under Keras 3's rule for a recorded
// training argument (outer mode wins), tf_keras's under its own (recorded wins): the
// nested cases differ exactly there. Then each model is written back by bnorm in the same
// format, read again and predicts the same bits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "bnorm/io/array_file.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/fold.hpp"
#include "bnorm/nn/model.hpp"
#include "nn/fixture_file.hpp"

using namespace bnorm;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string cnn_dir() { return bnorm::test::fixtures_dir() + "/cnn"; }

json cases() {
  std::ifstream in(cnn_dir() + "/cnn_models.json");
  return json::parse(in);
}

Tensor npy(const std::string& rel) { return io::read_npy(cnn_dir() + "/" + rel); }

double max_abs(const Tensor& t) {
  double m = 0;
  for (std::int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::abs(static_cast<double>(t[i])));
  return m;
}

void expect_close(const Tensor& got, const Tensor& want, double scale, double rtol, const std::string& what) {
  ASSERT_EQ(got.numel(), want.numel()) << what << ": got shape " << got.shape().str() << ", want " << want.shape().str();
  double worst = 0;
  std::int64_t at = 0;
  for (std::int64_t i = 0; i < got.numel(); ++i) {
    const double d = std::abs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  EXPECT_LE(worst, rtol * scale + 1e-30) << what << ": largest difference " << worst << " at " << at << " (got " << got[at]
                                         << ", want " << want[at] << "), allowed " << rtol * scale;
}

// "<layer>/<variable>" -> variable, through nested models.
void variables_by_key(nn::Model& model, std::map<std::string, nn::Variable*>& out) {
  for (const auto& layer : model.layers()) {
    if (auto* nested = dynamic_cast<nn::Model*>(layer.get())) {
      variables_by_key(*nested, out);
      continue;
    }
    for (nn::Variable* v : layer->weights()) out[layer->name() + "/" + v->name] = v;
  }
}

void check_file(const json& c, const std::string& file, const std::string& framework, double default_rtol) {
  SCOPED_TRACE(file + " (" + framework + ")");
  const json& want = c["expected"][framework];
  // Per-quantity tolerances of the case (MobileNetV2's training call is looser: the
  // fixture measured float32 against float64 in the framework itself).
  auto rtol_of = [&](const char* quantity) {
    const json t = c.value("tolerance", json::object());
    if (t.contains(framework) && t[framework].contains(quantity)) return t[framework][quantity].get<double>();
    return default_rtol;
  };
  const Tensor x = npy(c["input"].get<std::string>());
  std::unique_ptr<nn::Model> model;
  try {
    model = io::load_model(cnn_dir() + "/" + file);
  } catch (const std::exception& e) {
    FAIL() << e.what();
  }
  const Tensor predicted = model->predict(x, 32);
  const Tensor want_predict = npy(want["predict"].get<std::string>());
  expect_close(predicted, want_predict, max_abs(want_predict), rtol_of("predict"), "predict");

  // Folded for inference (nn/fold.hpp): the framework's predictions within 1e-5, and the
  // folded model written as a Keras file reads back with the same predictions.
  {
    nn::FoldReport report;
    const auto folded = nn::fold_batch_norm(*model, &report);
    expect_close(folded->predict(x, 32), want_predict, max_abs(want_predict), 1e-5, "folded predict");
    EXPECT_EQ(report.folded + report.kept, static_cast<int>(c["batchnorm_layers"].size()));
    const fs::path ftmp = fs::temp_directory_path() / ("bnorm_cnn_folded_" + c["id"].get<std::string>() + fs::path(file).extension().string());
    io::save_model(*folded, ftmp.string());
    const Tensor back = io::load_model(ftmp.string())->predict(x, 32);
    fs::remove(ftmp);
    expect_close(back, want_predict, max_abs(want_predict), 1e-5, "folded file");
  }

  // The written-back file predicts the same bits.
  const fs::path tmp = fs::temp_directory_path() / ("bnorm_cnn_" + c["id"].get<std::string>() + fs::path(file).extension().string());
  io::save_model(*model, tmp.string());
  const auto again = io::load_model(tmp.string());
  const Tensor y2 = again->predict(x, 32);
  ASSERT_EQ(y2.numel(), predicted.numel());
  for (std::int64_t i = 0; i < y2.numel(); ++i) ASSERT_EQ(y2[i], predicted[i]) << "written-back file, output " << i;
  fs::remove(tmp);

  // One training-mode call.
  model->set_nested_training(framework == "keras3" ? nn::NestedTraining::outer_mode_wins : nn::NestedTraining::recorded_wins);
  const Tensor r = npy(c["r"].get<std::string>());
  nn::GradientTape tape;
  const Tensor y = model->call(x, true, &tape);
  const Tensor want_y = npy(want["y_train"].get<std::string>());
  expect_close(y, want_y, max_abs(want_y), rtol_of("y_train"), "y_train");
  const nn::Gradients grads = tape.gradient(r);
  const Tensor want_dx = npy(want["dx"].get<std::string>());
  expect_close(tape.input_gradient(), want_dx, max_abs(want_dx), rtol_of("dx"), "dx");
  std::map<std::string, nn::Variable*> vars;
  variables_by_key(*model, vars);
  const double largest = want["largest_gradient"].get<double>();
  for (const auto& [key, path] : want["gradients"].items()) {
    ASSERT_TRUE(vars.count(key)) << "no variable " << key;
    const auto it = grads.find(vars[key]);
    const Tensor g = it != grads.end() ? it->second : Tensor(vars[key]->value.shape());
    expect_close(g, npy(path.get<std::string>()), largest, rtol_of("gradients"), "gradient " + key);
  }
  // A moving mean is compared on the scale of its layer's spread, max(|mean|,
  // sqrt(variance)): some means are rounding noise around 0.
  for (const auto& [key, path] : want["moving_stats"].items()) {
    ASSERT_TRUE(vars.count(key)) << "no variable " << key;
    const Tensor w = npy(path.get<std::string>());
    double scale = max_abs(w);
    const bool mean = key.size() > 12 && key.compare(key.size() - 12, 12, "/moving_mean") == 0;
    if (mean) {
      const std::string var_key = key.substr(0, key.size() - 12) + "/moving_variance";
      if (want["moving_stats"].contains(var_key)) scale = std::max(scale, std::sqrt(max_abs(npy(want["moving_stats"][var_key].get<std::string>()))));
    }
    expect_close(vars[key]->value, w, scale, rtol_of(mean ? "moving_mean" : "moving_variance"), key);
  }
}

}  // namespace

std::vector<std::string> case_ids() {
  std::vector<std::string> ids;
  const json all = cases();
  for (const json& c : all["cases"]) ids.push_back(c["id"].get<std::string>());
  return ids;
}

class CnnGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(CnnGolden, KerasAndTfKerasFiles) {
  const json all = cases();
  const double rtol = all["tolerance"]["rtol"].get<double>();
  for (const json& c : all["cases"]) {
    if (c["id"] != GetParam()) continue;
    const json& files = c["files"];
    for (const auto& framework : c["frameworks"]) {
      const std::string fw = framework.get<std::string>();
      const std::string key = fw == "keras3" ? "keras3" : "legacy";
      if (!files.contains(key) || files[key].is_null()) continue;
      check_file(c, files[key].get<std::string>(), fw, rtol);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CnnGolden, ::testing::ValuesIn(case_ids()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

// A Keras 3 file with base(x, training=False): loads under bnorm's default rule (the
// recorded argument wins) with a note saying Keras 3 differs; the option selects Keras
// 3's rule; tf_keras's file gives no note.
TEST(CnnFiles, RecordedTrainingArgumentRuleAndNote) {
  std::vector<std::string> notes;
  auto model = io::load_model(cnn_dir() + "/nested_base.keras", {.notes = &notes});
  EXPECT_EQ(model->nested_training(), nn::NestedTraining::recorded_wins);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("Keras 3"), std::string::npos) << notes[0];
  notes.clear();
  model = io::load_model(cnn_dir() + "/nested_base.keras",
                         {.nested_training = nn::NestedTraining::outer_mode_wins, .notes = &notes});
  EXPECT_EQ(model->nested_training(), nn::NestedTraining::outer_mode_wins);
  notes.clear();
  model = io::load_model(cnn_dir() + "/nested_base.h5", {.notes = &notes});
  EXPECT_TRUE(notes.empty());
  notes.clear();
  model = io::load_model(cnn_dir() + "/resnet_block_channels_last.keras", {.notes = &notes});
  EXPECT_TRUE(notes.empty());
}

// Bad input to a loaded CNN: a wrong input shape is a ShapeError naming the layer or the
// model's input, and the model is unchanged (its weights and moving statistics).
TEST(CnnFiles, WrongInputShapeLeavesTheModelUnchanged) {
  auto model = io::load_model(cnn_dir() + "/resnet_block_channels_last.keras");
  const std::vector<Tensor> before = model->get_weights();
  EXPECT_THROW(model->predict(Tensor(Shape{2, 13, 13, 4})), ShapeError);
  EXPECT_THROW(model->call(Tensor(Shape{2, 13, 13}), true), ShapeError);
  model->compile("sgd", "mse");
  EXPECT_THROW(model->train_on_batch(Tensor(Shape{2, 5, 5, 3}), Tensor(Shape{2, 5})), ShapeError);
  const std::vector<Tensor> after = model->get_weights();
  ASSERT_EQ(before.size(), after.size());
  for (std::size_t k = 0; k < before.size(); ++k) EXPECT_EQ(before[k].vector(), after[k].vector()) << k;
}

// A bnorm checkpoint of a model with a nested model restores every variable, the nested
// ones included (named by their own layer).
TEST(CnnFiles, CheckpointOfANestedModel) {
  auto a = io::load_model(cnn_dir() + "/nested_base.keras");
  const Tensor x = npy("nested_base/x.npy");
  a->compile("sgd", "mse");
  (void)a->train_on_batch(x, Tensor(Shape{x.dim(0), 3}, 0.5f));
  const fs::path file = fs::temp_directory_path() / "bnorm_cnn_nested.ckpt";
  io::save_checkpoint(*a, file.string());
  auto b = io::load_model(cnn_dir() + "/nested_base.keras");
  io::load_checkpoint(*b, file.string());
  fs::remove(file);
  const auto wa = a->get_weights(), wb = b->get_weights();
  ASSERT_EQ(wa.size(), wb.size());
  bool any_changed = false;
  const auto original = io::load_model(cnn_dir() + "/nested_base.keras")->get_weights();
  for (std::size_t k = 0; k < wa.size(); ++k) {
    EXPECT_EQ(wa[k].vector(), wb[k].vector()) << k;
    any_changed = any_changed || wa[k].vector() != original[k].vector();
  }
  EXPECT_TRUE(any_changed);
}
