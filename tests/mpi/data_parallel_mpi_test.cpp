// Data-parallel Model::fit over MPI (label mpi, mpiexec -np 2 and 3). Every rank trains a
// small Dense + BatchNormalization model on its shards of each batch; every rank also
// trains the same model alone on the whole batches (the reference). After about 100 steps
// (batches of 7 from 50 samples: each epoch ends with a one-row batch, which leaves
// ranks with empty shards) the weights and moving statistics must equal the reference's
// within relative 1e-5, and be the same bits on every rank. The distributed model starts
// from other weights on ranks other than 0: fit must broadcast rank 0's. The Dense layers
// have no bias, as usual before batch normalization: such a bias has a zero gradient in
// exact arithmetic, so what it learns is rounding noise (Adam scales noise up to steps of
// the learning rate), which no two summation orders share.
//
// With BNORM_TEST_FAULT=die or stall (tests/mpi/fault_test.cmake) the program instead
// makes rank 1 exit, or hang, at step 5 of a distributed fit, and the others must stop
// with a clear error (CommunicationError after the timeout, or mpiexec ending the job).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/mpi/mpi_communicator.hpp"
#include "mpi_test_util.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/optimizers.hpp"
#include "nn/test_util.hpp"

using namespace bnorm;

namespace {

std::shared_ptr<mpi::MpiCommunicator> g_comm;

std::unique_ptr<nn::Sequential> make_model(std::uint64_t seed, nn::KerasVersion version) {
  nn::reset_unique_names();
  auto model = std::make_unique<nn::Sequential>(std::vector<nn::LayerPtr>{
      std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{6}),
      std::make_shared<nn::Dense>(
          8,
          nn::DenseOptions{.use_bias = false, .kernel_initializer = nn::Initializer::glorot_uniform(seed)}),
      std::make_shared<nn::BatchNormalization>(
          nn::BatchNormalizationOptions{.momentum = 0.9, .version = version}),
      std::make_shared<nn::Activation>("relu"),
      std::make_shared<nn::Dense>(
          3, nn::DenseOptions{.use_bias = false,
                              .kernel_initializer = nn::Initializer::glorot_uniform(seed + 1)}),
      std::make_shared<nn::BatchNormalization>(
          nn::BatchNormalizationOptions{.momentum = 0.8, .version = version})});
  return model;
}

struct Data {
  Tensor x, y;
};

Data make_data() {
  Data d{test::random_tensor(Shape{50, 6}, 11, 1.0f, 0.5f), Tensor(Shape{50, 3})};
  for (std::int64_t i = 0; i < 50; ++i)  // a smooth target the model can fit
    for (std::int64_t j = 0; j < 3; ++j)
      d.y[i * 3 + j] = std::sin(d.x[i * 6 + j] * 2.0f) + d.x[i * 6 + j + 3];
  return d;
}

void expect_close(const Tensor& got, const Tensor& want, const std::string& what) {
  double scale = 0, worst = 0;
  for (std::int64_t i = 0; i < want.numel(); ++i)
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  for (std::int64_t i = 0; i < want.numel(); ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]));
  EXPECT_LE(worst, 1e-5 * scale) << what << " on rank " << g_comm->rank() << ": worst difference " << worst
                                 << " of " << scale;
}

void check_fit(const std::string& optimizer, nn::KerasVersion version) {
  const Data data = make_data();
  auto reference = make_model(1, version);
  auto distributed =
      make_model(g_comm->rank() == 0 ? 1 : 100 + static_cast<std::uint64_t>(g_comm->rank()), version);
  reference->compile(optimizer, "mse");
  distributed->compile(optimizer, "mse");
  const nn::FitOptions options{.batch_size = 7, .epochs = 13, .verbose = 0, .seed = 5};  // 8 steps per epoch
  reference->fit(data.x, data.y, options);
  nn::FitOptions dp = options;
  dp.communicator = g_comm;
  auto history = distributed->fit(data.x, data.y, dp);
  const auto want = reference->weights(), got = distributed->weights();
  ASSERT_EQ(want.size(), got.size());
  for (std::size_t k = 0; k < want.size(); ++k) {
    expect_close(got[k]->value, want[k]->value,
                 optimizer + " weight " + std::to_string(k) + " (" + got[k]->name + ")");
    // The same bits on every rank.
    std::vector<double> mine(got[k]->value.data(), got[k]->value.data() + got[k]->value.numel());
    std::vector<double> all(mine.size() * static_cast<std::size_t>(g_comm->size()));
    g_comm->all_gather(mine, all);
    for (int q = 0; q < g_comm->size(); ++q)
      for (std::size_t i = 0; i < mine.size(); ++i)
        ASSERT_EQ(all[static_cast<std::size_t>(q) * mine.size() + i], mine[i])
            << got[k]->name << " rank " << q;
  }
  // The communicators are detached again after fit.
  for (const auto& layer : distributed->layers())
    if (auto bn = std::dynamic_pointer_cast<nn::BatchNormalization>(layer)) {
      EXPECT_EQ(bn->communicator(), nullptr);
    }
}

TEST(DataParallelFit, EqualsSingleProcessTrainingOnWholeBatchesSGD) {
  check_fit("sgd", nn::KerasVersion::keras3);
}
TEST(DataParallelFit, EqualsSingleProcessTrainingOnWholeBatchesAdam) {
  check_fit("adam", nn::KerasVersion::keras3);
}
TEST(DataParallelFit, EqualsSingleProcessTrainingKeras2Convention) {
  check_fit("sgd", nn::KerasVersion::keras2);
}

// The logged metrics are the whole batch's on every rank, not each rank's shard's.
TEST(DataParallelFit, MetricsAreThoseOfTheWholeBatch) {
  const Data data = make_data();
  auto reference = make_model(1, nn::KerasVersion::keras3);
  auto distributed = make_model(1, nn::KerasVersion::keras3);
  reference->compile("sgd", "mse", {"categorical_accuracy"});
  distributed->compile("sgd", "mse", {"categorical_accuracy"});
  const nn::FitOptions options{.batch_size = 7, .epochs = 5, .verbose = 0, .seed = 5};
  auto want = reference->fit(data.x, data.y, options);
  nn::FitOptions dp = options;
  dp.communicator = g_comm;
  auto got = distributed->fit(data.x, data.y, dp);
  const std::vector<double>& w = want->history.at("categorical_accuracy");
  const std::vector<double>& g = got->history.at("categorical_accuracy");
  ASSERT_EQ(g.size(), w.size());
  std::vector<double> all(g.size() * static_cast<std::size_t>(g_comm->size()));
  g_comm->all_gather(g, all);
  for (std::size_t e = 0; e < g.size(); ++e) {
    // Weights agree within 1e-5, so at most a sample near a tie may be counted otherwise.
    EXPECT_NEAR(g[e], w[e], 1.0 / 50 + 1e-6) << "epoch " << e << " on rank " << g_comm->rank();
    for (int q = 0; q < g_comm->size(); ++q)
      EXPECT_EQ(all[static_cast<std::size_t>(q) * g.size() + e], g[e]) << "epoch " << e << ", rank " << q;
  }
}

// BNORM_TEST_FAULT: rank 1 dies (std::_Exit) or stalls (sleeps 120 s) at step 5.
class Fault : public nn::Callback {
 public:
  explicit Fault(std::string kind) : kind_(std::move(kind)) {}
  void on_train_batch_end(nn::Model&, std::int64_t step, const nn::Logs&) override {
    if (step != 5 || g_comm->rank() != 1) return;
    std::fprintf(stderr, "rank 1: simulated fault (%s) at step 5\n", kind_.c_str());
    if (kind_ == "die") std::_Exit(7);
    std::this_thread::sleep_for(std::chrono::seconds(120));
  }

 private:
  std::string kind_;
};

int run_fault(const std::string& kind) {
  // Every rank has started (a 60 s allowance, separate from the 3 s of the run itself:
  // a loaded machine may start the processes seconds apart).
  mpi::MpiCommunicator(mpi::MpiCommunicator::Options{std::chrono::milliseconds(60000)}).barrier();
  const Data data = make_data();
  auto model = make_model(1, nn::KerasVersion::keras3);
  model->compile("sgd", "mse");
  try {
    model->fit(data.x, data.y,
               {.batch_size = 7,
                .epochs = 13,
                .verbose = 0,
                .callbacks = {std::make_shared<Fault>(kind)},
                .communicator = g_comm});
  } catch (const CommunicationError& e) {
    std::fprintf(stderr, "rank %d: %s\n", g_comm->rank(), e.what());
    mpi::abort_job(3);  // ends every rank of the job, the stalled one included
  }
  std::fprintf(stderr, "rank %d: fit ended without an error\n", g_comm->rank());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  mpi::Environment env(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  const char* fault = std::getenv("BNORM_TEST_FAULT");
  using std::chrono::milliseconds;
  g_comm = std::make_shared<mpi::MpiCommunicator>(
      mpi::MpiCommunicator::Options{milliseconds(fault ? 3000 : 60000)});
  if (fault) return run_fault(fault);
  // The run fails when any rank failed.
  const int failed = bnorm::testing::any_rank_failed(RUN_ALL_TESTS(), *g_comm);
  g_comm.reset();
  return failed;
}
