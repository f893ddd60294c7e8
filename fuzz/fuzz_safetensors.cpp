// libFuzzer target: the safetensors reader (io::SafetensorsFile) and the PyTorch
// state_dict loaders behind it.
//
// Properties checked on every input, beyond "no crash, no sanitizer report, no
// unbounded allocation" (run with -rss_limit_mb=2048 -malloc_limit_mb=512):
//   * parsing and loading throw only io::FormatError;
//   * every tensor of a parsed file converts (to_float / to_int64) or is refused by name;
//   * a refused state_dict leaves the target model and TorchBatchNorm unchanged.
//
// Seeds: the PyTorch fixture files,
//   fuzz_safetensors -max_total_time=60 CORPUS_DIR tests/fixtures/torch
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "bnorm/io/safetensors.hpp"
#include "bnorm/nn/batch_normalization.hpp"

namespace nn = bnorm::nn;
namespace io = bnorm::io;

namespace {

// The model of tests/fixtures/torch/sequential.safetensors.
struct Targets {
  std::unique_ptr<nn::Sequential> model;
  nn::TorchBatchNorm bn = nn::BatchNorm1d(8);
  Targets() {
    nn::reset_unique_names();
    model = std::make_unique<nn::Sequential>(std::vector<nn::LayerPtr>{
        std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{4}), std::make_shared<nn::Dense>(8),
        std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.momentum = 0.9, .epsilon = 1e-5}),
        std::make_shared<nn::Activation>("relu"), std::make_shared<nn::Dense>(3)});
  }
  std::vector<std::vector<float>> snapshot() const {
    std::vector<std::vector<float>> s;
    for (const auto& t : model->get_weights()) s.push_back(t.vector());
    s.push_back(bn.weight()->vector());
    s.push_back(bn.bias()->vector());
    s.push_back(bn.running_mean()->vector());
    s.push_back(bn.running_var()->vector());
    s.push_back({static_cast<float>(bn.num_batches_tracked())});
    return s;
  }
};

void check_unchanged(const Targets& t, const std::vector<std::vector<float>>& before) {
  const auto now = t.snapshot();
  for (std::size_t i = 0; i < now.size(); ++i) {
    if (now[i].size() != before[i].size() || (!now[i].empty() && std::memcmp(now[i].data(), before[i].data(), now[i].size() * 4) != 0)) {
      std::fprintf(stderr, "a refused state_dict changed the target\n");
      std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Targets targets;
  std::unique_ptr<io::SafetensorsFile> file;
  try {
    file = std::make_unique<io::SafetensorsFile>(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
  } catch (const io::FormatError&) {
    return 0;
  }
  for (const auto& [name, tensor] : file->tensors()) {
    try {
      (void)file->to_float(name);
    } catch (const io::FormatError&) {
    }
    try {
      (void)file->to_int64(name);
    } catch (const io::FormatError&) {
    }
  }
  const auto before = targets.snapshot();
  try {
    io::load_torch_state_dict(*targets.model, *file);
  } catch (const io::FormatError&) {
    check_unchanged(targets, before);
  }
  const auto before_bn = targets.snapshot();
  try {
    io::load_torch_batch_norm(targets.bn, *file, "1.");
  } catch (const io::FormatError&) {
    check_unchanged(targets, before_bn);
  }
  return 0;
}
