// libFuzzer target: bnorm's reader of Keras model configurations (the config.json of a
// .keras archive, the model_config attribute of a legacy .h5), the part of the Keras
// readers that bnorm itself parses. The input is the JSON text; both styles are tried.
//
// Properties checked on every input, beyond "no crash, no sanitizer report":
//   * the only exceptions are bnorm's typed errors (io::FormatError naming the file);
//   * a model that is built can be saved back as a configuration (keras3 and legacy
//     styles), and that configuration builds a model with the same layers.
// Seeds: the config.json members of tests/fixtures/models/*.keras and the model_config
// attributes of *.legacy.h5, written by BNORM_FUZZ_WRITE_SEEDS=DIR (see fuzz/README.md).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "bnorm/io/model_file.hpp"
#include "io/keras_config.hpp"  // internal (src/io): the configuration reader itself

namespace nn = bnorm::nn;
namespace io = bnorm::io;
using nlohmann::json;

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_keras_config: %s\n", what);
  std::abort();
}

// The configurations of the fixture models, one file each.
void write_seeds(const std::string& dir) {
  const std::string models = std::string(BNORM_FIXTURES_DIR) + "/models/";
  int n = 0;
  for (const char* name : {"mlp", "functional", "frozen_bn", "bn_center_scale", "bn_nhwc", "bn_nchw"}) {
    for (const char* suffix : {".keras", ".legacy.h5"}) {
      try {
        auto model = io::load_model(models + name + suffix);
        const auto style = std::string(suffix) == ".keras" ? io::keras::Style::keras3 : io::keras::Style::legacy;
        std::ofstream(dir + "/config_" + std::to_string(n++) + ".json") << io::keras::model_to_config(*model, style).dump();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "seed %s%s: %s\n", name, suffix, e.what());
      }
    }
  }
}

// Sizes over 2^16: a model that large is valid (the reader's own limit is 2^28 values per
// variable, tested in tests/io/keras_files_test.cpp) but would make each run allocate
// and fill gigabytes; the fuzzer explores the structure, not the size limit.
bool has_large_number(const json& j) {
  if (j.is_number()) return !(j.get<double>() <= 65536.0);
  if (j.is_structured()) {
    for (const auto& v : j) {
      if (has_large_number(v)) return true;
    }
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("BNORM_FUZZ_WRITE_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  json config;
  try {
    config = json::parse(reinterpret_cast<const char*>(data), reinterpret_cast<const char*>(data) + size);
  } catch (const json::exception&) {
    return 0;  // load_model reports this as a FormatError; nothing of bnorm's to test
  }
  if (has_large_number(config)) return 0;
  for (const auto version : {nn::KerasVersion::keras3, nn::KerasVersion::keras2}) {
    std::unique_ptr<nn::Model> model;
    try {
      model = io::keras::model_from_config(config, "fuzz.keras", version);
    } catch (const bnorm::Error&) {
      continue;
    }
    for (const auto style : {io::keras::Style::keras3, io::keras::Style::legacy}) {
      json again;
      try {
        again = io::keras::model_to_config(*model, style);
      } catch (const bnorm::Error&) {
        continue;  // e.g. a layer class Keras files cannot hold: refused, typed
      }
      std::unique_ptr<nn::Model> back;
      try {
        back = io::keras::model_from_config(again, "fuzz.keras (written back)", version);
      } catch (const bnorm::Error& e) {
        std::fprintf(stderr, "%s\n", e.what());
        fail("a configuration bnorm wrote does not read back");
      }
      if (back->layers().size() != model->layers().size()) fail("layers lost in the round trip");
      for (std::size_t i = 0; i < back->layers().size(); ++i) {
        if (back->layers()[i]->name() != model->layers()[i]->name() ||
            back->layers()[i]->class_name() != model->layers()[i]->class_name()) {
          fail("a layer changed in the round trip");
        }
      }
    }
  }
  return 0;
}
