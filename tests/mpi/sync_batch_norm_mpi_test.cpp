// Synchronized batch normalization over MPI (run under mpiexec -np P, P = 2, 3, 4; CTest
// label `mpi`). Every rank builds the whole batch itself, computes the plain layer on it
// as the reference, and checks that its shard of the synchronized layer's outputs and
// input gradients, the sum over the ranks of its gamma/beta gradients, and the moving
// statistics equal the reference within relative 1e-6 (of the largest reference value),
// and that the moving statistics are bitwise identical on every rank.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/mpi/mpi_communicator.hpp"
#include "mpi_test_util.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/torch_batch_norm.hpp"
#include "nn/test_util.hpp"

using namespace bnorm;

namespace {

std::shared_ptr<mpi::MpiCommunicator> g_comm;

// Rows [begin, end) of t along dimension 0.
Tensor rows(const Tensor& t, std::int64_t begin, std::int64_t end) {
  std::vector<std::int64_t> d = t.shape().dims();
  const std::int64_t row = d[0] > 0 ? t.numel() / d[0] : 0;
  d[0] = end - begin;
  Tensor out{Shape(d)};
  if (out.numel() > 0)
    std::memcpy(out.data(), t.data() + begin * row, static_cast<std::size_t>(out.numel()) * 4);
  return out;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (std::int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::fabs(static_cast<double>(t[i])));
  return m;
}

void expect_close(const Tensor& got, const Tensor& want, double scale, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const double tol = 1e-6 * std::max(scale, 1e-30);
  double worst = 0;
  for (std::int64_t i = 0; i < got.numel(); ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]));
  EXPECT_LE(worst, tol) << what << " on rank " << g_comm->rank() << ": worst difference " << worst
                        << " (scale " << scale << ")";
}

struct Layout {
  const char* name;
  std::vector<std::int64_t> shape_of_one;  // without the batch dimension
  std::vector<int> axis;
};

// Shard sizes of a batch over P ranks: unequal with a one-row and an empty shard, all on
// one rank, and equal.
std::vector<std::vector<std::int64_t>> splits(int P) {
  std::vector<std::vector<std::int64_t>> s(3, std::vector<std::int64_t>(static_cast<std::size_t>(P)));
  for (int r = 0; r < P; ++r) {
    s[0][static_cast<std::size_t>(r)] = r == 1 ? 1 : r == 2 ? 0 : 2 + 3 * r;
    s[1][static_cast<std::size_t>(r)] = r == P - 1 ? 9 : 0;
    s[2][static_cast<std::size_t>(r)] = 4;
  }
  return s;
}

void check(const Layout& layout, nn::KerasVersion version, float offset) {
  const int P = g_comm->size(), rank = g_comm->rank();
  std::uint32_t seed = 1;
  for (const auto& sizes : splits(P)) {
    std::vector<std::int64_t> begin(sizes.size() + 1, 0);
    for (std::size_t r = 0; r < sizes.size(); ++r) begin[r + 1] = begin[r] + sizes[r];
    const std::int64_t N = begin.back();
    std::vector<std::int64_t> dims{N};
    dims.insert(dims.end(), layout.shape_of_one.begin(), layout.shape_of_one.end());
    nn::BatchNormalizationOptions o;
    o.axis = layout.axis;
    o.momentum = 0.9;
    o.version = version;
    o.gamma_initializer = nn::Initializer::constant(1.5);
    o.beta_initializer = nn::Initializer::constant(-0.25);
    nn::BatchNormalization plain(o), sync(o);
    sync.set_communicator(g_comm);
    const std::string what = std::string(layout.name) +
                             (version == nn::KerasVersion::keras2 ? " keras2" : " keras3") + " offset " +
                             std::to_string(offset) + " shards of " + std::to_string(sizes[0]) + ", " +
                             std::to_string(sizes[1]) + ", ...";
    for (int step = 0; step < 2; ++step, ++seed) {  // two steps: the moving statistics move twice
      const Tensor x = test::random_tensor(Shape(dims), seed, 2.0f, offset);
      const Tensor dy = test::random_tensor(Shape(dims), seed + 1000, 1.0f);
      nn::BatchNormContext ref_ctx, ctx;
      const Tensor y_ref = plain.forward(x, true, &ref_ctx);
      const nn::BatchNormGradients g_ref = plain.backward(ref_ctx, dy);
      const auto r = static_cast<std::size_t>(rank);
      const Tensor xs = rows(x, begin[r], begin[r + 1]), dys = rows(dy, begin[r], begin[r + 1]);
      const Tensor y = sync.forward(xs, true, &ctx);
      const nn::BatchNormGradients g = sync.backward(ctx, dys);
      expect_close(y, rows(y_ref, begin[r], begin[r + 1]), max_abs(y_ref), what + ": y");
      expect_close(g.dx, rows(g_ref.dx, begin[r], begin[r + 1]), max_abs(g_ref.dx), what + ": dx");
      Tensor dgamma = *g.dgamma, dbeta = *g.dbeta;  // this rank's sums: add them up
      g_comm->all_reduce_sum(std::span<float>(dgamma.data(), static_cast<std::size_t>(dgamma.numel())));
      g_comm->all_reduce_sum(std::span<float>(dbeta.data(), static_cast<std::size_t>(dbeta.numel())));
      expect_close(dgamma, *g_ref.dgamma, max_abs(*g_ref.dgamma), what + ": dgamma");
      expect_close(dbeta, *g_ref.dbeta, max_abs(*g_ref.dbeta), what + ": dbeta");
      const Tensor& mm = sync.moving_mean()->value;
      const Tensor& mv = sync.moving_variance()->value;
      expect_close(mm, plain.moving_mean()->value, max_abs(plain.moving_mean()->value),
                   what + ": moving_mean");
      expect_close(mv, plain.moving_variance()->value, max_abs(plain.moving_variance()->value),
                   what + ": moving_variance");
      // The same bits on every rank.
      std::vector<double> mine;
      for (std::int64_t i = 0; i < mm.numel(); ++i) mine.push_back(mm[i]), mine.push_back(mv[i]);
      std::vector<double> all(mine.size() * static_cast<std::size_t>(P));
      g_comm->all_gather(mine, all);
      for (int q = 0; q < P; ++q)
        for (std::size_t i = 0; i < mine.size(); ++i)
          ASSERT_EQ(all[static_cast<std::size_t>(q) * mine.size() + i], mine[i]) << what << ": rank " << q;
    }
  }
}

const std::vector<Layout> kLayouts = {
    {"2-D (N, C)", {5}, {-1}},
    {"4-D channels-last (N, H, W, C)", {3, 2, 4}, {-1}},
    {"4-D channels-first (N, C, H, W)", {4, 3, 2}, {1}},
    {"3-D (N, L, C)", {3, 6}, {-1}},
};

TEST(SyncBatchNormalization, EqualsThePlainLayerOnTheConcatenatedBatch) {
  for (const auto& layout : kLayouts) {
    check(layout, nn::KerasVersion::keras3, 0.0f);
    check(layout, nn::KerasVersion::keras2, 0.0f);
  }
}

TEST(SyncBatchNormalization, EqualsThePlainLayerWithAnOffset) {
  // Data at 1e3 times its spread: the merge is Chan's, the shift carries the double mean.
  for (const auto& layout : kLayouts) check(layout, nn::KerasVersion::keras3, 2000.0f);
}

// PyTorch's convention (torch.nn.SyncBatchNorm): TorchBatchNorm with a communicator.
TEST(SyncBatchNormalization, TorchConventionEqualsThePlainModule) {
  const int P = g_comm->size(), rank = g_comm->rank();
  for (const auto& dims_of_one : {std::vector<std::int64_t>{5}, std::vector<std::int64_t>{4, 3, 2}}) {
    for (const auto& sizes : splits(P)) {
      std::vector<std::int64_t> begin(sizes.size() + 1, 0);
      for (std::size_t r = 0; r < sizes.size(); ++r) begin[r + 1] = begin[r] + sizes[r];
      std::vector<std::int64_t> dims{begin.back()};
      dims.insert(dims.end(), dims_of_one.begin(), dims_of_one.end());
      auto make = [&] { return dims.size() == 2 ? nn::BatchNorm1d(dims[1]) : nn::BatchNorm2d(dims[1]); };
      nn::TorchBatchNorm plain = make(), sync = make();
      sync.set_communicator(g_comm);
      const auto r = static_cast<std::size_t>(rank);
      for (std::uint32_t seed = 40; seed < 42; ++seed) {
        const Tensor x = test::random_tensor(Shape(dims), seed, 2.0f, 0.5f);
        const Tensor dy = test::random_tensor(Shape(dims), seed + 7);
        nn::BatchNormContext ref_ctx, ctx;
        const Tensor y_ref = plain.forward(x, &ref_ctx);
        const nn::BatchNormGradients g_ref = plain.backward(ref_ctx, dy);
        const Tensor y = sync.forward(rows(x, begin[r], begin[r + 1]), &ctx);
        const nn::BatchNormGradients g = sync.backward(ctx, rows(dy, begin[r], begin[r + 1]));
        const std::string what = "TorchBatchNorm " + Shape(dims).str();
        expect_close(y, rows(y_ref, begin[r], begin[r + 1]), max_abs(y_ref), what + ": y");
        expect_close(g.dx, rows(g_ref.dx, begin[r], begin[r + 1]), max_abs(g_ref.dx), what + ": dx");
        Tensor dweight = *g.dgamma;
        g_comm->all_reduce_sum(std::span<float>(dweight.data(), static_cast<std::size_t>(dweight.numel())));
        expect_close(dweight, *g_ref.dgamma, max_abs(*g_ref.dgamma), what + ": dweight");
        expect_close(*sync.running_mean(), *plain.running_mean(), max_abs(*plain.running_mean()),
                     what + ": running_mean");
        expect_close(*sync.running_var(), *plain.running_var(), max_abs(*plain.running_var()),
                     what + ": running_var");
        EXPECT_EQ(sync.num_batches_tracked(), plain.num_batches_tracked());
      }
    }
  }
}

TEST(SyncBatchNormalization, RefusesVariantsInTraining) {
  nn::BatchNormalizationOptions o;
  o.renorm = true;
  nn::BatchNormalization bn(o);
  bn.set_communicator(g_comm);
  const Tensor x = test::random_tensor(Shape{4, 3}, 7);
  EXPECT_THROW(bn.forward(x, true, nullptr), ArgumentError);
  EXPECT_NO_THROW(bn.forward(x, false, nullptr));  // inference is local
}

}  // namespace

int main(int argc, char** argv) {
  mpi::Environment env(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  g_comm =
      std::make_shared<mpi::MpiCommunicator>(mpi::MpiCommunicator::Options{std::chrono::milliseconds(60000)});
  // The run fails when any rank failed.
  const int failed = bnorm::testing::any_rank_failed(RUN_ALL_TESTS(), *g_comm);
  g_comm.reset();
  return failed;
}
