// Golden tests of the Keras BatchNormalization variants: batch renormalization, ghost
// batches (tf_keras virtual_batch_size) and masks, against tests/fixtures/bn_variants.json
// (part `variants` of tests/fixtures/generate_golden.py, run with real Keras 3 and
// tf_keras; FORMAT.md "bn_variants.json"), and the models with such layers that Keras saved
// (models/bn_renorm.keras, bn_renorm.legacy.h5, bn_ghost.legacy.h5): they load, predict
// as Keras did, train one step to Keras's variables, and round-trip through bnorm's files.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "bnorm/core/error.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/model.hpp"
#include "nn/fixture_file.hpp"

using bnorm::Shape;
using bnorm::Tensor;
using nlohmann::json;
namespace nn = bnorm::nn;
namespace io = bnorm::io;

namespace {

const bnorm::test::FixtureFile& fixture() {
  static const auto f = bnorm::test::read_fixture("bn_variants.json", "bnorm-golden", 1);
  return f;
}

Tensor tensor_of(const json& t) {
  Tensor out{Shape(t.at("shape").get<std::vector<std::int64_t>>())};
  const auto& data = t.at("data");
  for (std::int64_t i = 0; i < out.numel(); ++i) out[i] = data[static_cast<std::size_t>(i)].get<float>();
  return out;
}

// Every element (dense) or the sampled ones within atol + rtol |want|; the worst ratio.
double expect_close(const std::string& what, const Tensor& got, const json& want, double rtol, double atol) {
  const auto shape = want.at("shape").get<std::vector<std::int64_t>>();
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  EXPECT_EQ(got.numel(), n) << what << ": got shape " << got.shape().str();
  if (got.numel() != n) return INFINITY;
  const auto& data = want.at("data");
  const bool sampled = want.contains("indices");
  double worst = 0;
  for (std::size_t k = 0; k < data.size(); ++k) {
    const std::int64_t i = sampled ? want["indices"][k].get<std::int64_t>() : static_cast<std::int64_t>(k);
    const double w = data[k].get<double>(), g = got[i];
    const double ratio = std::abs(g - w) / (atol + rtol * std::abs(w));
    worst = std::max(worst, ratio);
    EXPECT_LE(ratio, 1.0) << what << " element " << i << ": got " << g << ", Keras " << w;
    if (ratio > 1.0) break;
  }
  return worst;
}

nn::BatchNormalizationOptions options_of(const json& L) {
  nn::BatchNormalizationOptions o;
  o.version = L.at("flavor") == "keras3" ? nn::KerasVersion::keras3 : nn::KerasVersion::keras2;
  const json& axis = L.at("axis");
  o.axis = axis.is_array() ? axis.get<std::vector<int>>() : std::vector<int>{axis.get<int>()};
  o.momentum = L.at("momentum");
  o.epsilon = L.at("epsilon");
  o.center = L.at("center");
  o.scale = L.at("scale");
  o.renorm = L.at("renorm");
  o.renorm_momentum = L.at("renorm_momentum");
  if (const json& rc = L.at("renorm_clipping"); rc.is_object()) {
    if (rc.contains("rmax")) o.renorm_clipping.rmax = rc["rmax"].get<double>();
    if (rc.contains("rmin")) o.renorm_clipping.rmin = rc["rmin"].get<double>();
    if (rc.contains("dmax")) o.renorm_clipping.dmax = rc["dmax"].get<double>();
  }
  if (!L.at("virtual_batch_size").is_null()) o.virtual_batch_size = L["virtual_batch_size"].get<std::int64_t>();
  if (o.version == nn::KerasVersion::keras2 && L.at("fused").is_boolean()) {
    o.fused = L["fused"].get<bool>() ? nn::Fused::yes : nn::Fused::no;
  }
  return o;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    if (std::memcmp(&a.data()[i], &b.data()[i], sizeof(float)) != 0) return false;
  return true;
}

std::map<std::string, Tensor> state_of(nn::BatchNormalization& bn) {
  std::map<std::string, Tensor> s;
  for (auto* v : bn.weights()) s[v->name] = v->value;
  return s;
}

std::vector<std::string> layer_case_ids() {
  std::vector<std::string> ids;
  if (fixture().error.empty())
    for (const auto& c : fixture().data["cases"])
      if (!c.contains("kind")) ids.push_back(c["id"]);
  return ids;
}
std::vector<std::string> file_case_ids() {
  std::vector<std::string> ids;
  if (fixture().error.empty())
    for (const auto& c : fixture().data["cases"])
      if (c.value("kind", "") == "model_file") ids.push_back(c["id"]);
  return ids;
}
const json& case_of(const std::string& id) {
  for (const auto& c : fixture().data["cases"])
    if (c["id"] == id) return c;
  throw std::runtime_error("no case " + id);
}

class Variants : public ::testing::TestWithParam<std::string> {};

TEST(VariantsFixture, Reads) { ASSERT_EQ(fixture().error, "") << fixture().error; }

TEST_P(Variants, MatchesKeras) {
  const json& c = case_of(GetParam());
  const double rtol = c["rtol"], atol = c["atol"];
  const auto& steps = c["steps"];
  if (c.contains("construct_error")) {
    EXPECT_THROW(
        {
          nn::BatchNormalization bn(options_of(c["layer"]));
          bn(tensor_of(steps[0]["x"]), true);
        },
        bnorm::Error)
        << "Keras raised " << c["construct_error"];
    return;
  }
  nn::BatchNormalization bn(options_of(c["layer"]));
  bn.build(tensor_of(steps[0]["x"]).shape());
  for (auto* v : bn.weights()) {
    const json& want = c["initial_state"].at(v->name);
    const Tensor t = tensor_of(want);
    ASSERT_EQ(t.numel(), v->value.numel()) << v->name;
    ASSERT_EQ(t.shape(), v->value.shape()) << v->name << " (Keras's variable shape)";
    v->value = t;
  }
  ASSERT_EQ(bn.weights().size(), c["initial_state"].size());
  double worst = 0;
  for (std::size_t k = 0; k < steps.size(); ++k) {
    const json& s = steps[k];
    const std::string at = GetParam() + " step " + std::to_string(k);
    const Tensor x = tensor_of(s["x"]);
    std::optional<Tensor> mask;
    if (!s["mask"].is_null()) mask = tensor_of(s["mask"]);
    const bool training = s["training"];
    if (s.contains("expect_error")) {
      const auto before = state_of(bn);
      EXPECT_THROW(bn.forward_masked(x, mask ? &*mask : nullptr, training, nullptr), bnorm::Error)
          << at << ": Keras raised " << s["expect_error"];
      const auto after = state_of(bn);
      for (const auto& [name, t] : before) EXPECT_TRUE(same_bits(t, after.at(name))) << at << ": " << name << " changed";
      continue;
    }
    const json& e = s["expect"];
    nn::BatchNormContext ctx;
    const Tensor y = bn.forward_masked(x, mask ? &*mask : nullptr, training, &ctx);
    worst = std::max(worst, expect_close(at + " y", y, e["y"], rtol, atol));
    if (s.contains("dy")) {
      const auto g = bn.backward(ctx, tensor_of(s["dy"]));
      worst = std::max(worst, expect_close(at + " dx", g.dx, e["dx"], rtol, atol));
      if (e.contains("dgamma")) worst = std::max(worst, expect_close(at + " dgamma", *g.dgamma, e["dgamma"], rtol, atol));
      if (e.contains("dbeta")) worst = std::max(worst, expect_close(at + " dbeta", *g.dbeta, e["dbeta"], rtol, atol));
    }
    for (auto* v : bn.weights()) worst = std::max(worst, expect_close(at + " " + v->name, v->value, e["state"].at(v->name), rtol, atol));
  }
  std::printf("[ variants ] %-40s %zu steps: within %.3g of the tolerance\n", GetParam().c_str(), steps.size(), worst);
}

INSTANTIATE_TEST_SUITE_P(Cases, Variants, ::testing::ValuesIn(layer_case_ids()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

class VariantFiles : public ::testing::TestWithParam<std::string> {};

void check_file_case(const json& c, nn::Model& model, const std::string& what) {
  const double rtol = c["rtol"], atol = c["atol"];
  expect_close(what + " predict", model.predict(tensor_of(c["x"])), c["predict"], rtol, atol);
  ASSERT_TRUE(model.compiled()) << what;
  model.train_on_batch(tensor_of(c["x"]), tensor_of(c["y"]));
  for (const auto& layer : model.layers()) {
    if (layer->weights().empty()) continue;
    const json& want = c["after_step"].at(layer->name());
    EXPECT_EQ(layer->weights().size(), want.size()) << what << " " << layer->name();
    for (auto* v : layer->weights()) {
      expect_close(what + " " + layer->name() + "/" + v->name + " after one train_on_batch", v->value, want.at(v->name),
                   rtol, atol);
    }
  }
}

TEST_P(VariantFiles, LoadsPredictsAndTrainsAsKeras) {
  const json& c = case_of(GetParam());
  const std::string path = bnorm::test::fixtures_dir() + "/" + c["file"].get<std::string>();
  auto model = io::load_model(path);
  check_file_case(c, *model, c["file"]);
}

// bnorm writes the loaded model back (both formats; the renorm variables and the ghost
// parameters' shapes go with it) and reads it again: the same predictions and step.
TEST_P(VariantFiles, RoundTripsThroughBnormFiles) {
  const json& c = case_of(GetParam());
  const std::string path = bnorm::test::fixtures_dir() + "/" + c["file"].get<std::string>();
  const bool keras3 = c["flavor"] == "keras3";
  for (const std::string suffix : {keras3 ? ".keras" : ".h5", ".h5", ".keras"}) {
    if (suffix == ".keras" && c["id"].get<std::string>().find("ghost") != std::string::npos) {
      // Keras 3 has no ghost batches: bnorm refuses to write one into a .keras file.
      auto model = io::load_model(path);
      EXPECT_THROW(io::save_model(*model, (std::filesystem::temp_directory_path() / "bnorm_ghost_refused.keras").string()),
                   bnorm::Error);
      continue;
    }
    auto model = io::load_model(path);
    const auto out = (std::filesystem::temp_directory_path() / ("bnorm_variants_" + GetParam() + suffix)).string();
    io::save_model(*model, out);
    auto back = io::load_model(out);
    check_file_case(c, *back, out);
    std::filesystem::remove(out);
  }
}

INSTANTIATE_TEST_SUITE_P(Files, VariantFiles, ::testing::ValuesIn(file_case_ids()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
