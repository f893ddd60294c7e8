// libFuzzer target: bnorm's native checkpoint reader (io::load_checkpoint_bytes).
//
// Properties checked on every input, beyond "no crash, no sanitizer report":
//   * the only exception is io::FormatError (a typed error naming the file);
//   * after an error the model (weights, optimizer slots, iterations, Dropout generator,
//     epochs_completed) is unchanged;
//   * a version 2 file with an optimizer section that loads saves back to the same bytes.
// Inputs with the version 2 magic get their CRC-32 trailer recomputed first, so that the
// fuzzer reaches the sections behind the checksum (a wrong checksum is one easy branch).
//
// Seeds: run once with BNORM_FUZZ_WRITE_SEEDS=DIR to write a full checkpoint, a
// weights-only one and a version 1 file of the fuzz model into DIR, then
//   fuzz_checkpoint -max_total_time=60 CORPUS_DIR DIR
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <zlib.h>

#include "bnorm/io/checkpoint.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"

namespace nn = bnorm::nn;
namespace io = bnorm::io;

namespace {

std::unique_ptr<nn::Sequential> make_model() {
  nn::reset_unique_names();
  auto m = std::make_unique<nn::Sequential>(std::vector<nn::LayerPtr>{
      std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{3}), std::make_shared<nn::Dense>(4),
      std::make_shared<nn::BatchNormalization>(), std::make_shared<nn::Dropout>(0.5, 3), std::make_shared<nn::Dense>(2)});
  m->compile("adam", "mse");
  bnorm::Tensor x(bnorm::Shape{8, 3}), y(bnorm::Shape{8, 2});
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(i % 5) - 2.0f;
  for (std::int64_t i = 0; i < y.numel(); ++i) y[i] = static_cast<float>(i % 3);
  m->fit(x, y, {.batch_size = 4, .epochs = 1, .verbose = 0});
  return m;
}

struct Fixture {
  std::unique_ptr<nn::Sequential> model = make_model();
  std::string baseline = io::checkpoint_bytes(*model);
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("BNORM_FUZZ_WRITE_SEEDS")) {
    Fixture& f = fixture();
    std::ofstream(std::string(dir) + "/full.bnc", std::ios::binary) << f.baseline;
    std::ofstream(std::string(dir) + "/weights_only.bnc", std::ios::binary)
        << io::checkpoint_bytes(*f.model, {.include_optimizer = false});
    std::string v1("BNRMWTS", 8);  // version 1 layout (see checkpoint.hpp)
    auto put32 = [&](std::uint32_t v) { v1.append(reinterpret_cast<const char*>(&v), 4); };
    put32(1);
    const auto weights = f.model->weights();
    put32(static_cast<std::uint32_t>(weights.size()));
    for (const auto& layer : f.model->layers()) {
      for (auto* v : layer->weights()) {
        const std::string name = layer->name() + "/" + v->name;
        put32(static_cast<std::uint32_t>(name.size()));
        v1 += name;
        put32(static_cast<std::uint32_t>(v->value.rank()));
        for (auto d : v->value.shape().dims()) v1.append(reinterpret_cast<const char*>(&d), 8);
        v1.append(reinterpret_cast<const char*>(v->value.data()), static_cast<std::size_t>(v->value.numel()) * 4);
      }
    }
    std::ofstream(std::string(dir) + "/v1.bnw", std::ios::binary) << v1;
    std::printf("seeds written to %s\n", dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Fixture& f = fixture();
  std::string bytes(reinterpret_cast<const char*>(data), size);
  if (size >= 16 && std::memcmp(data, "BNRMCKPT", 8) == 0) {
    const auto crc = static_cast<std::uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(bytes.data()), size - 4));
    std::memcpy(bytes.data() + size - 4, &crc, 4);
  }
  try {
    io::load_checkpoint_bytes(*f.model, bytes, "fuzz.bnc");
  } catch (const io::FormatError&) {
    if (io::checkpoint_bytes(*f.model) != f.baseline) {
      std::fprintf(stderr, "a refused file changed the model\n");
      std::abort();
    }
    return 0;
  }
  // Loaded. A full version 2 file must save back to itself.
  std::uint32_t flags = 0;
  if (size >= 16) std::memcpy(&flags, bytes.data() + 12, 4);
  if (std::memcmp(bytes.data(), "BNRMCKPT", 8) == 0 && (flags & 1u) && io::checkpoint_bytes(*f.model) != bytes) {
    std::fprintf(stderr, "a loaded checkpoint does not save back to the same bytes\n");
    std::abort();
  }
  io::load_checkpoint_bytes(*f.model, f.baseline, "baseline");  // back to the fixed state
  return 0;
}
