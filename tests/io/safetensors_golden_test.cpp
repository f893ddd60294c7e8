// PyTorch safetensors import against PyTorch itself: fixtures written by
// tests/fixtures/generate_torch_files.py (real torch 2.15.0, safetensors 0.8.0). A value
// matches when |got - want| <= 1e-5 |want| + 1e-6.
#include <gtest/gtest.h>

#include <cmath>

#include "bnorm/io/safetensors.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "nn/fixture_file.hpp"

using bnorm::Shape;
using bnorm::Tensor;
namespace nn = bnorm::nn;
namespace io = bnorm::io;
using nlohmann::json;

namespace {

const json& expected() {
  static const bnorm::test::FixtureFile f = bnorm::test::read_fixture("torch/expected.json", "bnorm-torch-safetensors", 1);
  if (!f.error.empty()) throw std::runtime_error(f.error);
  return f.data;
}

io::SafetensorsFile file(const std::string& name) { return io::read_safetensors(bnorm::test::fixtures_dir() + "/torch/" + name); }

Tensor tensor(const json& j) {
  std::vector<float> values;
  for (const auto& v : j.at("data")) values.push_back(v.get<float>());
  return Tensor(Shape(j.at("shape").get<std::vector<std::int64_t>>()), std::move(values));
}

void expect_close(const Tensor& got, const json& want_json, const std::string& what) {
  const Tensor want = tensor(want_json);
  ASSERT_EQ(got.shape(), want.shape()) << what;
  double worst = 0;
  for (std::int64_t i = 0; i < got.numel(); ++i) {
    const double g = got[i], w = want[i], err = std::fabs(g - w);
    EXPECT_LE(err, 1e-5 * std::fabs(w) + 1e-6) << what << " element " << i << ": " << g << " vs PyTorch " << w;
    worst = std::max(worst, err / std::max(std::fabs(w), 0.1));
  }
  std::printf("[ golden ] %-40s max relative difference %.3g\n", what.c_str(), worst);
}

}  // namespace

// The bnorm model a PyTorch user writes for nn.Sequential(Linear(4, 8), BatchNorm1d(8),
// ReLU(), Linear(8, 3)): Keras momentum = 1 - PyTorch momentum, epsilon = eps.
TEST(TorchSafetensorsGolden, SequentialModelPredictsWhatPyTorchPredicts) {
  const json& e = expected().at("sequential");
  const auto f = file(e.at("file"));
  std::vector<std::string> keys;
  for (const auto& [k, t] : f.tensors()) keys.push_back(k);
  EXPECT_EQ(keys, e.at("keys").get<std::vector<std::string>>());
  nn::reset_unique_names();
  nn::Sequential model({std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{4}), std::make_shared<nn::Dense>(8),
                        std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{
                            .momentum = 1.0 - e.at("momentum").get<double>(), .epsilon = e.at("eps").get<double>()}),
                        std::make_shared<nn::Activation>("relu"), std::make_shared<nn::Dense>(3)});
  io::load_torch_state_dict(model, f);
  expect_close(model.predict(tensor(e.at("x_eval"))), e.at("y_eval"), "Sequential eval output");
  // Training mode: batch statistics (biased variance) normalize, as in PyTorch.
  expect_close(model(tensor(e.at("x_train")), true), e.at("y_train"), "Sequential train-mode output");
  auto bn = model.get_layer<nn::BatchNormalization>("batch_normalization");
  expect_close(bn->moving_mean()->value, e.at("running_mean_after"), "moving_mean after a train step");
}

// The same file, module by module, with PyTorch's batch-norm convention: running_var
// (unbiased) and num_batches_tracked follow PyTorch exactly.
TEST(TorchSafetensorsGolden, TorchBatchNormContinuesWithPyTorchStatistics) {
  const json& e = expected().at("sequential");
  const auto f = file(e.at("file"));
  nn::reset_unique_names();
  nn::Dense first(8), last(3);
  io::load_torch_linear(first, f, "0.");
  io::load_torch_linear(last, f, "3.");
  auto bn = nn::BatchNorm1d(8, {.eps = e.at("eps").get<double>(), .momentum = e.at("momentum").get<double>()});
  io::load_torch_batch_norm(bn, f, "1.");
  EXPECT_EQ(bn.num_batches_tracked(), e.at("num_batches_tracked_before").get<std::int64_t>());
  auto run = [&](const Tensor& x) {
    nn::Activation relu("relu");
    const Tensor h = first.forward(x, false, nullptr, nullptr);
    return last.forward(relu.forward(bn(h), false, nullptr, nullptr), false, nullptr, nullptr);
  };
  bn.eval();
  expect_close(run(tensor(e.at("x_eval"))), e.at("y_eval"), "Linear+TorchBatchNorm eval output");
  bn.train();
  expect_close(run(tensor(e.at("x_train"))), e.at("y_train"), "Linear+TorchBatchNorm train output");
  expect_close(*bn.running_mean(), e.at("running_mean_after"), "running_mean after a train step");
  expect_close(*bn.running_var(), e.at("running_var_after"), "running_var after a train step");
  EXPECT_EQ(bn.num_batches_tracked(), e.at("num_batches_tracked_after").get<std::int64_t>());
}

TEST(TorchSafetensorsGolden, BatchNorm2dWithoutPrefix) {
  const json& e = expected().at("bn2d");
  auto bn = nn::BatchNorm2d(3, {.eps = e.at("eps").get<double>(), .momentum = e.at("momentum").get<double>()});
  io::load_torch_batch_norm(bn, file(e.at("file")), "");
  EXPECT_EQ(bn.num_batches_tracked(), e.at("num_batches_tracked_before").get<std::int64_t>());
  bn.eval();
  expect_close(bn(tensor(e.at("x_eval"))), e.at("y_eval"), "BatchNorm2d eval output");
  bn.train();
  expect_close(bn(tensor(e.at("x_train"))), e.at("y_train"), "BatchNorm2d train output");
  expect_close(*bn.running_mean(), e.at("running_mean_after"), "BatchNorm2d running_mean");
  expect_close(*bn.running_var(), e.at("running_var_after"), "BatchNorm2d running_var");
  EXPECT_EQ(bn.num_batches_tracked(), e.at("num_batches_tracked_after").get<std::int64_t>());
}

// F64, F16 and BF16 convert to float32 exactly as torch's .to(torch.float32) does.
TEST(TorchSafetensorsGolden, DtypesConvertAsTorchConverts) {
  const json& e = expected().at("dtypes");
  const auto f = file(e.at("file"));
  for (const auto& [name, want] : e.at("float").items()) {
    const Tensor got = f.to_float(name), w = tensor(want);
    ASSERT_EQ(got.shape(), w.shape()) << name;
    for (std::int64_t i = 0; i < got.numel(); ++i) EXPECT_EQ(got[i], w[i]) << name << " element " << i;
  }
  for (const auto& [name, want] : e.at("int").items()) {
    EXPECT_EQ(f.to_int64(name), want.at("data").get<std::vector<std::int64_t>>()) << name;
    EXPECT_EQ(f.tensors().at(name).shape, want.at("shape").get<std::vector<std::int64_t>>()) << name;
  }
}
