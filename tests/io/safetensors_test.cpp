// safetensors reader and PyTorch loaders: hand-built files, and bad files that must be
// refused with a FormatError naming the file and the tensor, the target unchanged.
// (Matching PyTorch's numbers: safetensors_golden_test.cpp.)
#include "bnorm/io/safetensors.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "bnorm/nn/batch_normalization.hpp"
#include "nn/fixture_file.hpp"

using bnorm::Shape;
using bnorm::Tensor;
namespace nn = bnorm::nn;
namespace io = bnorm::io;

namespace {

using Tensors = std::map<std::string, io::SafetensorsTensor>;

// A safetensors file from tensors, laid out in map order (the writer the reader is
// checked against; `header_edit` may corrupt the header before it is serialized).
std::string serialize(const Tensors& tensors, const std::function<void(nlohmann::json&)>& header_edit = {}) {
  nlohmann::json header = nlohmann::json::object();
  std::string buffer;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {buffer.size(), buffer.size() + t.bytes.size()}}};
    buffer += t.bytes;
  }
  if (header_edit) header_edit(header);
  const std::string text = header.dump();
  const std::uint64_t n = text.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + text + buffer;
}

io::SafetensorsTensor f32(std::vector<std::int64_t> shape, std::vector<float> values) {
  return {"F32", std::move(shape), std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4)};
}
io::SafetensorsTensor i64(std::vector<std::int64_t> shape, std::vector<std::int64_t> values) {
  return {"I64", std::move(shape), std::string(reinterpret_cast<const char*>(values.data()), values.size() * 8)};
}

Tensors batch_norm_dict(const std::string& prefix, std::int64_t c) {
  std::vector<float> ones(static_cast<std::size_t>(c), 1.5f), zeros(static_cast<std::size_t>(c), 0.25f);
  return {{prefix + "weight", f32({c}, ones)},
          {prefix + "bias", f32({c}, zeros)},
          {prefix + "running_mean", f32({c}, zeros)},
          {prefix + "running_var", f32({c}, ones)},
          {prefix + "num_batches_tracked", i64({}, {4})}};
}

// Expects parsing (or `load`) to throw a FormatError whose message names the file and
// contains `part`.
void expect_format_error(const std::string& bytes, const std::string& part,
                         const std::function<void(const io::SafetensorsFile&)>& load = {}) {
  try {
    io::SafetensorsFile file(bytes, "test.safetensors");
    if (!load) {
      ADD_FAILURE() << "accepted; expected an error with \"" << part << "\"";
      return;
    }
    load(file);
    ADD_FAILURE() << "loaded; expected an error with \"" << part << "\"";
  } catch (const io::FormatError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("test.safetensors"), std::string::npos) << what;
    EXPECT_NE(what.find(part), std::string::npos) << "expected \"" << part << "\" in: " << what;
  }
}

std::string fixture_bytes(const std::string& name) {
  std::ifstream in(bnorm::test::fixtures_dir() + "/torch/" + name, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST(Safetensors, ReadsTensorsMetadataAndScalars) {
  Tensors t{{"a", f32({2, 3}, {1, 2, 3, 4, 5, 6})}, {"n", i64({}, {42})}, {"empty", f32({0, 4}, {})}};
  const std::string bytes = serialize(t, [](nlohmann::json& h) { h["__metadata__"] = {{"format", "pt"}}; });
  io::SafetensorsFile f(bytes, "x");
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  const Tensor a = f.to_float("a");
  EXPECT_EQ(a.shape(), (Shape{2, 3}));
  EXPECT_EQ(a[5], 6.0f);
  EXPECT_EQ(f.to_int64("n"), std::vector<std::int64_t>{42});
  EXPECT_EQ(f.to_float("empty").numel(), 0);
  // Header padded with spaces, as the reference writer aligns it.
  nlohmann::json h = {{"a", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}}}};
  std::string text = h.dump() + "   ";
  const std::uint64_t n = text.size();
  const float one = 1.0f;
  io::SafetensorsFile padded(std::string(reinterpret_cast<const char*>(&n), 8) + text + std::string(reinterpret_cast<const char*>(&one), 4), "p");
  EXPECT_EQ(padded.to_float("a")[0], 1.0f);
}

TEST(Safetensors, MalformedFilesAreRefusedByName) {
  const Tensors good{{"a", f32({2}, {1, 2})}, {"b", f32({1}, {3})}};
  const std::string bytes = serialize(good);
  for (std::size_t cut : {std::size_t{0}, std::size_t{7}, std::size_t{8}, std::size_t{20}, bytes.size() - 1}) {
    EXPECT_THROW(io::SafetensorsFile(bytes.substr(0, cut), "t"), io::FormatError) << "cut at " << cut;
  }
  expect_format_error(bytes.substr(0, 5), "truncated");
  std::string beyond = bytes;
  const std::uint64_t big = bytes.size();
  std::memcpy(beyond.data(), &big, 8);
  expect_format_error(beyond, "truncated file");
  std::string hostile = bytes;
  const std::uint64_t huge = 1ull << 62;
  std::memcpy(hostile.data(), &huge, 8);
  expect_format_error(hostile, "at most 100000000");
  {
    const std::string text = "{\"a\": {\"dtype\": \"F32\",";
    const std::uint64_t n = text.size();
    expect_format_error(std::string(reinterpret_cast<const char*>(&n), 8) + text, "valid JSON");
  }
  {
    const std::string text = "[1, 2]";
    const std::uint64_t n = text.size();
    expect_format_error(std::string(reinterpret_cast<const char*>(&n), 8) + text, "JSON object");
  }
  {
    const std::string text = R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
    const std::uint64_t n = text.size();
    expect_format_error(std::string(reinterpret_cast<const char*>(&n), 8) + text + std::string(4, '\0'), "repeated");
  }
  {
    const std::string text = "{\"a\": [[[[[[1]]]]]]}";
    const std::uint64_t n = text.size();
    expect_format_error(std::string(reinterpret_cast<const char*>(&n), 8) + text, "nesting");
  }
  expect_format_error(serialize(good, [](auto& h) { h["a"]["data_offsets"] = {0, 12}; }), "tensor 'a'");
  expect_format_error(serialize(good, [](auto& h) { h["b"]["data_offsets"] = {8, 16}; }), "inside the 12-byte buffer");
  expect_format_error(serialize(good, [](auto& h) { h["b"]["data_offsets"] = {4, 8}; }), "overlapping");
  expect_format_error(serialize({{"a", f32({2}, {1, 2})}}, [](auto& h) { h["a"]["data_offsets"] = {0, 4}; h["a"]["shape"] = {1}; }) ,
                      "trailing data");
  expect_format_error(serialize(good, [](auto& h) { h["a"]["dtype"] = "F128"; }), "tensor 'a'");
  expect_format_error(serialize(good, [](auto& h) { h["a"]["shape"] = {-2}; }), "non-negative integer dimensions");
  expect_format_error(serialize(good, [](auto& h) { h["a"]["shape"] = {1.5}; }), "non-negative integer dimensions");
  expect_format_error(serialize(good, [](auto& h) { h["a"]["shape"] = {3}; }), "8 bytes in data_offsets");
  expect_format_error(serialize(good, [](auto& h) { h["a"]["shape"] = {1ll << 40, 1ll << 40}; }), "fits the file");
  expect_format_error(serialize(good, [](auto& h) { h["a"].erase("shape"); }), "exactly");
  expect_format_error(serialize(good, [](auto& h) { h["a"]["extra"] = 1; }), "exactly");
  expect_format_error(serialize(good, [](auto& h) { h["a"]["data_offsets"] = {4, 0}; }), "tensor 'a'");
  expect_format_error(serialize(good, [](auto& h) { h["__metadata__"] = {{"k", 1}}; }), "__metadata__");
  // A hole: b starts after a gap (the buffer is as long as the offsets claim).
  {
    std::string with_hole = serialize(good, [](auto& h) { h["b"]["data_offsets"] = {12, 16}; });
    with_hole += std::string(4, '\0');
    expect_format_error(with_hole, "no hole");
  }
  // Every prefix of a real PyTorch file is refused.
  const std::string real = fixture_bytes("sequential.safetensors");
  ASSERT_FALSE(real.empty());
  for (std::size_t cut = 0; cut < real.size(); cut += 7) EXPECT_THROW(io::SafetensorsFile(real.substr(0, cut), "t"), io::FormatError) << cut;
  EXPECT_THROW(io::read_safetensors("/nonexistent/bnorm.safetensors"), io::FileError);
}

TEST(Safetensors, DtypeErrorsNameTheTensor) {
  Tensors t{{"w", i64({2}, {1, 2})}, {"n", f32({}, {1})}, {"u", {"U16", {1}, std::string(2, '\0')}}};
  io::SafetensorsFile f(serialize(t), "test.safetensors");
  try {
    f.to_float("w");
    ADD_FAILURE();
  } catch (const io::FormatError& e) {
    EXPECT_EQ(e.argument(), "tensor 'w'");
    EXPECT_NE(e.received().find("I64"), std::string::npos) << e.what();
  }
  EXPECT_THROW(f.to_int64("n"), io::FormatError);
  EXPECT_THROW(f.to_float("u"), io::FormatError);
  EXPECT_THROW(f.to_int64("u"), io::FormatError);
  EXPECT_THROW(f.to_float("missing"), io::FormatError);
}

TEST(Safetensors, BatchNormLoaderRefusesBadStateDictsAndChangesNothing) {
  auto bn = nn::BatchNorm1d(3);
  const auto before_w = bn.weight()->vector(), before_m = bn.running_mean()->vector();
  auto unchanged = [&] {
    return bn.weight()->vector() == before_w && bn.running_mean()->vector() == before_m && bn.num_batches_tracked() == 0;
  };
  auto load = [&](const io::SafetensorsFile& f) { io::load_torch_batch_norm(bn, f, "bn."); };
  Tensors missing = batch_norm_dict("bn.", 3);
  missing.erase("bn.running_var");
  expect_format_error(serialize(missing), "tensor 'bn.running_var'", load);
  EXPECT_TRUE(unchanged());
  Tensors extra = batch_norm_dict("bn.", 3);
  extra["bn.unexpected"] = f32({1}, {0});
  expect_format_error(serialize(extra), "tensor 'bn.unexpected'", load);
  EXPECT_TRUE(unchanged());
  expect_format_error(serialize(batch_norm_dict("bn.", 4)), "shape (3,)", load);
  EXPECT_TRUE(unchanged());
  Tensors wrong_dtype = batch_norm_dict("bn.", 3);
  wrong_dtype["bn.running_mean"] = i64({3}, {0, 0, 0});
  expect_format_error(serialize(wrong_dtype), "tensor 'bn.running_mean'", load);
  EXPECT_TRUE(unchanged());
  Tensors float_counter = batch_norm_dict("bn.", 3);
  float_counter["bn.num_batches_tracked"] = f32({}, {4});
  expect_format_error(serialize(float_counter), "tensor 'bn.num_batches_tracked'", load);
  Tensors negative_counter = batch_norm_dict("bn.", 3);
  negative_counter["bn.num_batches_tracked"] = i64({}, {-1});
  expect_format_error(serialize(negative_counter), "count >= 0", load);
  EXPECT_TRUE(unchanged());
  // Keys of other modules are not this loader's business; a good dict loads.
  Tensors good = batch_norm_dict("bn.", 3);
  good["other.weight"] = f32({1}, {0});
  io::load_torch_batch_norm(bn, io::SafetensorsFile(serialize(good), "g"), "bn.");
  EXPECT_EQ(bn.num_batches_tracked(), 4);
  EXPECT_EQ(bn.weight()->vector(), std::vector<float>(3, 1.5f));
  auto lazy = nn::LazyBatchNorm1d();
  EXPECT_THROW(io::load_torch_batch_norm(lazy, io::SafetensorsFile(serialize(good), "g"), "bn."), bnorm::StateError);
}

TEST(Safetensors, LinearIsTransposedIntoDense) {
  nn::reset_unique_names();
  nn::Dense dense(2);
  Tensors t{{"fc.weight", f32({2, 3}, {1, 2, 3, 4, 5, 6})}, {"fc.bias", f32({2}, {7, 8})}};
  io::load_torch_linear(dense, io::SafetensorsFile(serialize(t), "g"), "fc.");
  ASSERT_TRUE(dense.built());
  EXPECT_EQ(dense.kernel()->value.shape(), (Shape{3, 2}));
  EXPECT_EQ(dense.kernel()->value.vector(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  EXPECT_EQ(dense.bias()->value.vector(), (std::vector<float>{7, 8}));
  const auto kernel = dense.kernel()->value.vector();
  auto load = [&](const io::SafetensorsFile& f) { io::load_torch_linear(dense, f, "fc."); };
  expect_format_error(serialize({{"fc.weight", f32({2, 4}, std::vector<float>(8))}, {"fc.bias", f32({2}, {0, 0})}}),
                      "tensor 'fc.weight'", load);
  expect_format_error(serialize({{"fc.weight", f32({2, 3}, std::vector<float>(6))}}), "tensor 'fc.bias'", load);
  expect_format_error(serialize({{"fc.weight", f32({2, 3}, std::vector<float>(6))}, {"fc.bias", f32({3}, {0, 0, 0})}}),
                      "tensor 'fc.bias'", load);
  EXPECT_EQ(dense.kernel()->value.vector(), kernel);
  nn::Dense no_bias(2, nn::DenseOptions{.use_bias = false});
  expect_format_error(serialize(t), "tensor 'fc.bias'", [&](const io::SafetensorsFile& f) { io::load_torch_linear(no_bias, f, "fc."); });
  EXPECT_FALSE(no_bias.built());
}

TEST(Safetensors, WholeModelMismatchesAreRefusedAndChangeNothing) {
  const std::string real = fixture_bytes("sequential.safetensors");
  ASSERT_FALSE(real.empty());
  const io::SafetensorsFile file(real, "test.safetensors");
  auto build = [](bool with_bn) {
    nn::reset_unique_names();
    std::vector<nn::LayerPtr> layers{std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{4}), std::make_shared<nn::Dense>(8)};
    if (with_bn) layers.push_back(std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.momentum = 0.9, .epsilon = 1e-5}));
    layers.push_back(std::make_shared<nn::Activation>("relu"));
    layers.push_back(std::make_shared<nn::Dense>(3));
    return std::make_unique<nn::Sequential>(layers);
  };
  auto without_bn = build(false);
  const auto before = without_bn->get_weights();
  try {
    io::load_torch_state_dict(*without_bn, file);
    ADD_FAILURE() << "module count mismatch accepted";
  } catch (const io::FormatError& e) {
    EXPECT_EQ(e.argument(), "modules") << e.what();
  }
  // Keys edited: the last Linear has 4 outputs, and a module with an unexpected key.
  Tensors tensors = file.tensors();
  tensors["3.weight"] = f32({4, 8}, std::vector<float>(32));
  tensors["3.bias"] = f32({4}, std::vector<float>(4));
  auto with_bn = build(true);
  const auto before_bn = with_bn->get_weights();
  expect_format_error(serialize(tensors), "tensor '3.weight'",
                      [&](const io::SafetensorsFile& f) { io::load_torch_state_dict(*with_bn, f); });
  Tensors extra = file.tensors();
  extra["1.extra"] = f32({1}, {0});
  expect_format_error(serialize(extra), "tensor '1.extra'",
                      [&](const io::SafetensorsFile& f) { io::load_torch_state_dict(*with_bn, f); });
  Tensors swapped = file.tensors();  // the BatchNorm's keys at module 0: kinds do not line up
  for (const auto& k : {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}) swapped["0." + std::string(k)] = swapped.at("1." + std::string(k));
  for (const auto& k : {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}) swapped.erase("1." + std::string(k));
  swapped["2.weight"] = file.tensors().at("0.weight");
  swapped["2.bias"] = file.tensors().at("0.bias");
  expect_format_error(serialize(swapped), "module '0.'", [&](const io::SafetensorsFile& f) { io::load_torch_state_dict(*with_bn, f); });
  const auto after = without_bn->get_weights(), after_bn = with_bn->get_weights();
  for (std::size_t i = 0; i < before.size(); ++i) EXPECT_EQ(before[i].vector(), after[i].vector());
  for (std::size_t i = 0; i < before_bn.size(); ++i) EXPECT_EQ(before_bn[i].vector(), after_bn[i].vector());
}
