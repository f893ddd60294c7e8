// The worked numbers of shared/spec/SEMANTICS.md section 4.3 (float64 derivations):
// x = [[1,2],[3,6],[5,10]] (N=3, C=2), gamma = [1.5, 0.5], dy = [[.1,-.2],[.3,.5],[-.4,.2]].
#include <gtest/gtest.h>

#include <cmath>

#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/torch_batch_norm.hpp"

using bnorm::Shape;
using bnorm::Tensor;
namespace nn = bnorm::nn;

namespace {
const Tensor kX(Shape{3, 2}, std::vector<float>{1, 2, 3, 6, 5, 10});
const Tensor kDy(Shape{3, 2}, std::vector<float>{0.1f, -0.2f, 0.3f, 0.5f, -0.4f, 0.2f});

void expect_column(const Tensor& t, int c, std::vector<double> want, double rtol = 1e-5) {
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(t.at({i, c}), want[static_cast<std::size_t>(i)], 1e-7 + rtol * std::fabs(want[static_cast<std::size_t>(i)]))
        << "row " << i << " channel " << c;
  }
}
}  // namespace

TEST(WorkedNumbers, KerasTrainingStepThenInference) {
  nn::BatchNormalization bn({.name = "bn"});
  const Tensor y = bn.call(kX, true);
  expect_column(y, 0, {-1.2245152962941819, 0, 1.2245152962941819});
  expect_column(y, 1, {-1.224687465512062, 0, 1.224687465512062});
  EXPECT_NEAR(bn.moving_mean()->value[0], 0.03, 1e-7);
  EXPECT_NEAR(bn.moving_mean()->value[1], 0.06, 1e-7);
  EXPECT_NEAR(bn.moving_variance()->value[0], 1.0166666667, 1e-6);
  EXPECT_NEAR(bn.moving_variance()->value[1], 1.0966666667, 1e-6);
  const Tensor yi = bn.call(kX, false);
  expect_column(yi, 0, {0.9615435510964094, 2.9441075739756046, 4.926671596854799});
  expect_column(yi, 1, {1.8516823712528299, 5.6695841676504175, 9.487485964048004});
}

TEST(WorkedNumbers, PyTorchTrainingStepThenEval) {
  auto m = nn::BatchNorm1d(2);
  const Tensor y = m(kX);
  expect_column(y, 0, {-1.2247425750014138, 0, 1.2247425750014138});
  expect_column(y, 1, {-1.2247442972928344, 0, 1.2247442972928344});
  EXPECT_NEAR((*m.running_mean())[0], 0.3, 1e-7);
  EXPECT_NEAR((*m.running_mean())[1], 0.6, 1e-7);
  EXPECT_NEAR((*m.running_var())[0], 1.3, 1e-6);
  EXPECT_NEAR((*m.running_var())[1], 2.5, 1e-6);
  EXPECT_EQ(m.num_batches_tracked(), 1);
  m.eval();
  const Tensor ye = m(kX);
  expect_column(ye, 0, {0.6139382522184912, 2.368047544271324, 4.122156836324156});
  expect_column(ye, 1, {0.885435973976969, 3.4152530424825955, 5.945070110988222});
}

TEST(WorkedNumbers, TrainingGradientsAtBothEpsilons) {
  struct Want {
    double eps, dgamma0, dgamma1;
    std::vector<double> dx0, dx1;
  };
  const Want cases[] = {
      {1e-5, -0.6123712875007069, 0.4898977189171338,
       {-0.13778267854376533, 0.2755670793753181, -0.13778440083155283},
       {-0.02551553489851827, 0.05103101238720144, -0.025515477488683165}},
      {1e-3, -0.6122576481470909, 0.48987498620482484,
       {-0.13767190437624607, 0.2755159416661909, -0.13784403728994485},
       {-0.025517192290344107, 0.05102864439633593, -0.025511452105991813}},
  };
  for (const auto& w : cases) {
    nn::BatchNormalization bn({.epsilon = w.eps, .name = "bn"});
    bn.build(Shape{3, 2});
    bn.gamma()->value = Tensor(Shape{2}, std::vector<float>{1.5f, 0.5f});
    nn::BatchNormContext ctx;
    bn.forward(kX, true, &ctx);
    const auto g = bn.backward(ctx, kDy);
    // dx sums to ~0, so its entries are differences of O(0.1) terms: compare with an
    // absolute tolerance of a few float32 ulps of those terms.
    expect_column(g.dx, 0, w.dx0, 2e-5);
    expect_column(g.dx, 1, w.dx1, 2e-5);
    EXPECT_NEAR((*g.dgamma)[0], w.dgamma0, 1e-6);
    EXPECT_NEAR((*g.dgamma)[1], w.dgamma1, 1e-6);
    EXPECT_NEAR((*g.dbeta)[0], 0.0, 1e-6);
    EXPECT_NEAR((*g.dbeta)[1], 0.5, 1e-6);
  }
}
