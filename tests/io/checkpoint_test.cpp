// Native weights file: round trip, ModelCheckpoint inside fit, and bad files that must be
// refused whole (the model unchanged).
#include "bnorm/io/checkpoint.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"

using bnorm::Shape;
using bnorm::Tensor;
namespace nn = bnorm::nn;
namespace fs = std::filesystem;

namespace {

std::unique_ptr<nn::Sequential> model(std::int64_t width = 4) {
  nn::reset_unique_names();
  return std::make_unique<nn::Sequential>(std::vector<nn::LayerPtr>{
      std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{3}), std::make_shared<nn::Dense>(width),
      std::make_shared<nn::BatchNormalization>(), std::make_shared<nn::Dense>(1)});
}

fs::path temp(const std::string& name) { return fs::temp_directory_path() / ("bnorm_ckpt_" + name); }

Tensor data(std::int64_t n, std::int64_t c, float scale) {
  Tensor t(Shape{n, c});
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = scale * static_cast<float>((i * 37) % 11) - 2.0f;
  return t;
}

}  // namespace

TEST(NativeWeights, RoundTripRestoresEveryVariableExactly) {
  auto a = model();
  a->compile("adam", "mse");
  a->fit(data(16, 3, 0.5f), data(16, 1, 0.3f), {.batch_size = 4, .epochs = 2, .verbose = 0});
  const auto path = temp("roundtrip.bnw");
  bnorm::io::save_checkpoint(*a, path);
  auto b = model();
  bnorm::io::load_checkpoint(*b, path);
  const auto wa = a->get_weights(), wb = b->get_weights();
  ASSERT_EQ(wa.size(), wb.size());
  for (std::size_t i = 0; i < wa.size(); ++i) EXPECT_EQ(wa[i].vector(), wb[i].vector()) << i;
  fs::remove(path);
}

TEST(NativeWeights, BadFilesAreRefusedWholeAndNamed) {
  auto a = model();
  const auto path = temp("bad.bnw");
  bnorm::io::save_checkpoint(*a, path);
  const auto size = fs::file_size(path);
  auto b = model();
  const auto before = b->get_weights();
  auto unchanged = [&] {
    const auto now = b->get_weights();
    for (std::size_t i = 0; i < now.size(); ++i)
      if (now[i].vector() != before[i].vector()) return false;
    return true;
  };
  fs::resize_file(path, size - 3);  // truncated
  try {
    bnorm::io::load_checkpoint(*b, path);
    ADD_FAILURE() << "truncated file accepted";
  } catch (const bnorm::io::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    EXPECT_NE(e.received().find("truncated"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(unchanged());
  { std::ofstream(path) << "not a weights file at all"; }
  EXPECT_THROW(bnorm::io::load_checkpoint(*b, path), bnorm::io::FormatError);
  auto wide = model(5);  // other shapes
  bnorm::io::save_checkpoint(*wide, path);
  try {
    bnorm::io::load_checkpoint(*b, path);
    ADD_FAILURE() << "mismatching shapes accepted";
  } catch (const bnorm::io::FormatError& e) {
    EXPECT_EQ(e.argument(), "dense/kernel") << e.what();
  }
  EXPECT_TRUE(unchanged());
  EXPECT_THROW(bnorm::io::load_checkpoint(*b, temp("missing.bnw")), bnorm::io::FileError);
  fs::remove(path);
}

TEST(ModelCheckpoint, SavesBestEpochOnly) {
  auto m = model();
  m->compile("sgd", "mse");
  const auto path = temp("best_{epoch}.bnw");
  auto ckpt = std::make_shared<bnorm::io::ModelCheckpoint>(
      path.string(), bnorm::io::ModelCheckpointOptions{.monitor = "loss", .save_best_only = true});
  m->fit(data(16, 3, 0.5f), data(16, 1, 0.3f), {.batch_size = 4, .epochs = 3, .verbose = 0, .callbacks = {ckpt}});
  ASSERT_FALSE(ckpt->last_saved().empty());
  EXPECT_TRUE(fs::exists(ckpt->last_saved()));
  for (int e = 1; e <= 3; ++e) fs::remove(temp("best_" + std::to_string(e) + ".bnw"));
}
