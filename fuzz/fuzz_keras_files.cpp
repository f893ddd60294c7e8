// libFuzzer target: bnorm's Keras file readers (io::load_model_bytes and
// io::load_weights_bytes: .keras zip archives, Keras 3 .weights.h5, legacy tf.keras .h5).
//
// Properties checked on every input, beyond "no crash, no sanitizer report":
//   * the only exceptions are bnorm's typed errors (io::FormatError for bad contents);
//   * after an error, the model the weights were loading into is unchanged;
//   * a model that loads predicts finite-or-not without throwing anything untyped.
// Seeds: the Keras-written files of tests/fixtures/models/ (the CTest short run passes
// them). Note that a malformed HDF5 file is parsed by libhdf5 itself: a crash inside
// libhdf5 is a libhdf5 bug to report upstream, and the input is saved as crash-*.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"

namespace nn = bnorm::nn;
namespace io = bnorm::io;

namespace {

// The architecture of tests/fixtures/models/mlp.*: Input(10) -> Dense(16) -> BN -> relu
// -> Dropout -> Dense(3).
std::unique_ptr<nn::Sequential> mlp() {
  nn::reset_unique_names();
  nn::DenseOptions d_in;
  d_in.name = "d_in";
  nn::DenseOptions d_out;
  d_out.name = "d_out";
  return std::make_unique<nn::Sequential>(
      std::vector<nn::LayerPtr>{std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{10}),
                                std::make_shared<nn::Dense>(16, d_in),
                                std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.name = "bn"}),
                                std::make_shared<nn::Activation>("relu", "act"), std::make_shared<nn::Dropout>(0.2, 0, "drop"),
                                std::make_shared<nn::Dense>(3, d_out)},
      "mlp");
}

std::vector<std::vector<float>> snapshot(nn::Model& model) {
  std::vector<std::vector<float>> s;
  for (const auto& t : model.get_weights()) s.push_back(t.vector());
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static std::unique_ptr<nn::Sequential> target = mlp();
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    auto model = io::load_model_bytes(bytes, "fuzz.keras");
    if (model->input_shape() && model->input_shape()->rank() == 2 && (*model->input_shape())[1] <= 4096) {
      bnorm::Tensor x(bnorm::Shape{2, (*model->input_shape())[1]}, 0.5f);
      try {
        (void)model->predict(x);
      } catch (const bnorm::Error&) {
        // e.g. a Flatten/BN axis the input does not fit: a typed refusal is fine
      }
    }
  } catch (const bnorm::Error&) {
  }
  const auto before = snapshot(*target);
  try {
    io::load_weights_bytes(*target, bytes, "fuzz.weights.h5");
  } catch (const bnorm::Error&) {
    const auto after = snapshot(*target);
    for (std::size_t i = 0; i < after.size(); ++i) {
      if (after[i].size() != before[i].size() ||
          (!after[i].empty() && std::memcmp(after[i].data(), before[i].data(), after[i].size() * 4) != 0)) {
        std::fprintf(stderr, "a refused weights file changed the model\n");
        std::abort();
      }
    }
  }
  return 0;
}
