// Links bnorm::io: a model with a batch-normalization layer saved as a Keras 3 .keras file
// and loaded again, and a .npy file read.
//   consumer_io NPY_FILE OUT_DIR
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/io/array_file.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/model.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: consumer_io NPY_FILE OUT_DIR\n");
    return 2;
  }
  namespace io = bnorm::io;
  namespace nn = bnorm::nn;
  using bnorm::Shape;
  using bnorm::Tensor;

  const Tensor array = io::read_npy(argv[1]);
  std::printf("consumer_io: %s holds %lld values\n", argv[1], static_cast<long long>(array.numel()));

  auto bn = std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.momentum = 0.9});
  nn::Sequential model({std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{2}), bn});
  const Tensor x(Shape{4, 2}, std::vector<float>{1, 10, 2, 20, 3, 30, 4, 40});
  (*bn)(x, /*training=*/true);   // moving statistics move off their initial values
  const Tensor before = model.predict(x);

  const std::string path = std::string(argv[2]) + "/consumer.keras";
  io::save_model(model, path);
  const auto loaded = io::load_model(path);
  const Tensor after = loaded->predict(x);
  for (std::int64_t i = 0; i < before.numel(); ++i) {
    if (before[i] != after[i]) {
      std::fprintf(stderr, "consumer_io: output %lld is %g after loading %s, %g before saving\n",
                   static_cast<long long>(i), after[i], path.c_str(), before[i]);
      return 1;
    }
  }
  std::printf("consumer_io: %s loaded back, the same %lld outputs\n", path.c_str(),
              static_cast<long long>(before.numel()));
  return 0;
}
