// Data-parallel training step time (docs/distributed.md): run under
//   mpiexec -np P build-bench/bench/bench_data_parallel [--batch 256] [--steps 40]
// for P = 1, 2, 3, 4. Trains an MLP 784-256-128-10 (Dense without bias -> BatchNormalization
// -> ReLU, softmax cross-entropy, SGD) on synthetic data with Model::fit, each global batch
// split across the ranks, and prints on rank 0 the median and best of 5 epochs of `steps`
// steps each (after one warm-up epoch), in ms per step, with the bytes each rank exchanges
// per step (from the model's sizes: see the docs). P = 1 runs fit without a communicator.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/mpi/mpi_communicator.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/model.hpp"

using namespace bnorm;

int main(int argc, char** argv) {
  mpi::Environment env(&argc, &argv);
  std::int64_t batch = 256, steps = 40;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--batch") == 0) batch = std::atoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--steps") == 0) steps = std::atoll(argv[i + 1]);
  }
  auto comm = std::make_shared<mpi::MpiCommunicator>();
  const int P = comm->size();
  nn::Sequential model({std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{784}),
                        std::make_shared<nn::Dense>(256, nn::DenseOptions{.use_bias = false}),
                        std::make_shared<nn::BatchNormalization>(), std::make_shared<nn::Activation>("relu"),
                        std::make_shared<nn::Dense>(128, nn::DenseOptions{.use_bias = false}),
                        std::make_shared<nn::BatchNormalization>(), std::make_shared<nn::Activation>("relu"),
                        std::make_shared<nn::Dense>(10, nn::DenseOptions{.activation = "softmax"})});
  model.compile("sgd", "sparse_categorical_crossentropy");
  const std::int64_t n = batch * steps;
  Tensor x(Shape{n, 784}), y(Shape{n});
  std::uint64_t s = 12345;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    x[i] = static_cast<float>(static_cast<double>(s >> 40) / 16777216.0);
  }
  for (std::int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(i % 10);
  nn::FitOptions options{.batch_size = batch, .epochs = 1, .verbose = 0};
  if (P > 1) options.communicator = comm;
  std::vector<double> ms;
  for (int epoch = 0; epoch < 6; ++epoch) {
    comm->barrier();
    const auto t0 = std::chrono::steady_clock::now();
    model.fit(x, y, options);
    comm->barrier();
    const std::chrono::duration<double, std::milli> dt = std::chrono::steady_clock::now() - t0;
    if (epoch > 0) ms.push_back(dt.count() / static_cast<double>(steps));
  }
  std::sort(ms.begin(), ms.end());
  // Bytes per step and rank: per BN layer (C channels) forward all-gather of (1 + 2C)
  // doubles from every rank, backward all-reduce of 2C doubles; the gradients
  // (4 bytes per trainable weight) and one presence flag (8 bytes) per trainable variable
  // all-reduced, and the loss (8 bytes).
  std::int64_t weights = 0, variables = 0;
  for (nn::Variable* v : model.trainable_weights()) weights += v->value.numel(), ++variables;
  const std::int64_t bn_bytes = (1 + 2 * 256) * 8 * P + 2 * 256 * 8 + (1 + 2 * 128) * 8 * P + 2 * 128 * 8;
  const std::int64_t grad_bytes = 4 * weights + 8 * variables + 8;
  if (comm->rank() == 0) {
    std::printf(
        "P=%d batch=%lld steps=%lld: median %.2f ms/step, best %.2f ms/step, %.0f samples/s; "
        "per step and rank: batch norm %lld B (gathered), gradients %lld B (all-reduced)\n",
        P, static_cast<long long>(batch), static_cast<long long>(steps), ms[ms.size() / 2], ms.front(),
        static_cast<double>(batch) / ms[ms.size() / 2] * 1000.0, static_cast<long long>(P > 1 ? bn_bytes : 0),
        static_cast<long long>(P > 1 ? grad_bytes : 0));
  }
  return 0;
}
