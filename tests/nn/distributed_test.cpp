// Single-process parts of distributed training: LocalCommunicator, the split backward
// kernel (backward_training_dx against backward_training), and a layer with a size-1
// communicator attached, which must be the plain layer bit for bit. The multi-process
// tests run under mpiexec (tests/mpi/, label mpi).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/kernels/batch_norm.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/communicator.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/torch_batch_norm.hpp"
#include "test_util.hpp"

using namespace bnorm;

namespace {

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() &&
         (a.numel() == 0 || std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.numel()) * 4) == 0);
}

TEST(LocalCommunicator, IsOneRankAndTheIdentity) {
  nn::LocalCommunicator comm;
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.size(), 1);
  std::vector<double> d{1.5, -2.0};
  comm.all_reduce_sum(d);
  EXPECT_EQ(d, (std::vector<double>{1.5, -2.0}));
  std::vector<float> f{3.0f};
  comm.all_reduce_sum(f);
  comm.broadcast(f, 0);
  EXPECT_EQ(f[0], 3.0f);
  std::vector<double> all(2);
  comm.all_gather(d, all);
  EXPECT_EQ(all, d);
  comm.barrier();
}

TEST(LocalCommunicator, RejectsABadRootOrGatherSize) {
  nn::LocalCommunicator comm;
  std::vector<float> f{1.0f};
  EXPECT_THROW(comm.broadcast(f, 1), ArgumentError);
  std::vector<std::byte> b(3);
  EXPECT_THROW(comm.broadcast(b, -1), ArgumentError);
  std::vector<double> mine{1.0, 2.0}, all(3);
  try {
    comm.all_gather(mine, all);
    FAIL() << "expected ArgumentError";
  } catch (const ArgumentError& e) {
    EXPECT_EQ(e.argument(), "all");
    EXPECT_NE(std::string(e.what()).find("received 3 values"), std::string::npos) << e.what();
  }
}

// backward_training_dx with backward_training's own sums and count is its dx (both
// implementations, every layout), and with a larger count it follows the formula.
TEST(BackwardTrainingDx, EqualsBackwardTrainingWithItsOwnSums) {
  for (auto dims : {kernels::BatchNormDims{37, 5, 1}, kernels::BatchNormDims{6, 4, 9},
                    kernels::BatchNormDims{1, 3, 1}, kernels::BatchNormDims{0, 3, 4}}) {
    const auto n = static_cast<std::size_t>(dims.numel()), C = static_cast<std::size_t>(dims.C);
    const Tensor x = test::random_tensor(Shape{dims.numel()}, 3, 2.0f, 5.0f);
    const Tensor dy = test::random_tensor(Shape{dims.numel()}, 4);
    const Tensor gamma = test::random_tensor(Shape{dims.C}, 5, 0.5f, 1.0f);
    std::vector<float> mean(C), var(C), invstd(C), y(n);
    kernels::forward_training(x.data(), dims, gamma.data(), nullptr, 1e-3f, y.data(), mean.data(), var.data(),
                              invstd.data());
    for (auto impl : {kernels::Impl::cpu, kernels::Impl::reference}) {
      std::vector<float> dx(n), dgamma(C), dbeta(C), dx_split(n, -7.0f);
      kernels::backward_training(dy.data(), x.data(), dims, mean.data(), invstd.data(), gamma.data(),
                                 dx.data(), dgamma.data(), dbeta.data(), impl);
      const std::vector<double> sum_dy(dbeta.begin(), dbeta.end()), sum_dy_xhat(dgamma.begin(), dgamma.end());
      kernels::backward_training_dx(dy.data(), x.data(), dims, mean.data(), invstd.data(), gamma.data(),
                                    sum_dy.data(), sum_dy_xhat.data(), dims.count(), dx_split.data(), impl);
      double scale = 0;
      for (float v : dx) scale = std::max(scale, std::fabs(static_cast<double>(v)));
      for (std::size_t i = 0; i < n; ++i) EXPECT_NEAR(dx_split[i], dx[i], 1e-6 * scale) << "element " << i;
    }
  }
}

// The Layer-interface calls of a training step: forward (with context), backward.
struct Step {
  Tensor y, dx, dgamma, dbeta, moving_mean, moving_variance;
};

Step step(nn::BatchNormalization& bn, const Tensor& x, const Tensor& dy) {
  nn::BatchNormContext ctx;
  Step s;
  s.y = bn.forward(x, true, &ctx);
  nn::BatchNormGradients g = bn.backward(ctx, dy);
  s.dx = g.dx;
  s.dgamma = *g.dgamma;
  s.dbeta = *g.dbeta;
  s.moving_mean = bn.moving_mean()->value;
  s.moving_variance = bn.moving_variance()->value;
  return s;
}

TEST(SyncBatchNormalization, OneProcessIsThePlainLayerBitForBit) {
  struct Case {
    Shape shape;
    std::vector<int> axis;
    nn::KerasVersion version;
  };
  for (const Case& c : {Case{Shape{16, 5}, {-1}, nn::KerasVersion::keras3},
                        Case{Shape{4, 3, 5, 6}, {-1}, nn::KerasVersion::keras3},
                        Case{Shape{4, 6, 3, 5}, {1}, nn::KerasVersion::keras2},
                        Case{Shape{0, 5}, {-1}, nn::KerasVersion::keras3}}) {
    nn::BatchNormalizationOptions o;
    o.axis = c.axis;
    o.version = c.version;
    o.synchronized = true;
    nn::BatchNormalization plain(o), sync(o);
    sync.set_communicator(std::make_shared<nn::LocalCommunicator>());
    EXPECT_FALSE(sync.synchronizing());
    for (std::uint32_t seed = 1; seed <= 3; ++seed) {
      const Tensor x = test::random_tensor(c.shape, seed, 3.0f, 1.0f),
                   dy = test::random_tensor(c.shape, seed + 9);
      const Step a = step(plain, x, dy), b = step(sync, x, dy);
      EXPECT_TRUE(bitwise_equal(a.y, b.y));
      EXPECT_TRUE(bitwise_equal(a.dx, b.dx));
      EXPECT_TRUE(bitwise_equal(a.dgamma, b.dgamma));
      EXPECT_TRUE(bitwise_equal(a.dbeta, b.dbeta));
      EXPECT_TRUE(bitwise_equal(a.moving_mean, b.moving_mean));
      EXPECT_TRUE(bitwise_equal(a.moving_variance, b.moving_variance));
    }
  }
}

TEST(SyncBatchNormalization, OneProcessTorchModuleIsThePlainModuleBitForBit) {
  nn::TorchBatchNorm plain = nn::BatchNorm2d(4), sync = nn::BatchNorm2d(4);
  sync.set_communicator(std::make_shared<nn::LocalCommunicator>());
  for (std::uint32_t seed = 1; seed <= 3; ++seed) {
    const Tensor x = test::random_tensor(Shape{3, 4, 5, 2}, seed, 2.0f, 3.0f);
    const Tensor dy = test::random_tensor(Shape{3, 4, 5, 2}, seed + 5);
    nn::BatchNormContext a, b;
    EXPECT_TRUE(bitwise_equal(plain.forward(x, &a), sync.forward(x, &b)));
    const nn::BatchNormGradients ga = plain.backward(a, dy), gb = sync.backward(b, dy);
    EXPECT_TRUE(bitwise_equal(ga.dx, gb.dx));
    EXPECT_TRUE(bitwise_equal(*ga.dgamma, *gb.dgamma));
    EXPECT_TRUE(bitwise_equal(*plain.running_mean(), *sync.running_mean()));
    EXPECT_TRUE(bitwise_equal(*plain.running_var(), *sync.running_var()));
  }
}

// Keras 3's `synchronized` (a file written by real Keras 3.15.1,
// tests/fixtures/generate_sync_bn.py) is read and written back.
TEST(SyncBatchNormalization, KerasSynchronizedRoundTrips) {
  const std::string path = std::string(BNORM_FIXTURES_DIR) + "/models/bn_synchronized.keras";
  auto model = io::load_model(path);
  auto bn = model->get_layer<nn::BatchNormalization>("bn");
  EXPECT_TRUE(bn->options().synchronized);
  EXPECT_EQ(bn->options().momentum, 0.9);
  EXPECT_EQ(bn->communicator(), nullptr);  // loading attaches nothing: fit does
  const auto out = std::filesystem::temp_directory_path() / "bnorm_sync_bn_roundtrip.keras";
  io::save_model(*model, out.string());
  auto again = io::load_model(out.string());
  EXPECT_TRUE(again->get_layer<nn::BatchNormalization>("bn")->options().synchronized);
  // And false stays false.
  bn->set_communicator(nullptr);
  nn::BatchNormalizationOptions o = bn->get_config();
  o.synchronized = false;
  auto inp = nn::Input({3});
  nn::Model plain(inp, (*std::make_shared<nn::BatchNormalization>(o))(inp));
  io::save_model(plain, out.string());
  EXPECT_FALSE(io::load_model(out.string())->get_layer<nn::BatchNormalization>("bn")->options().synchronized);
  std::filesystem::remove(out);
}

}  // namespace
