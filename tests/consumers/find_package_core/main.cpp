// Links bnorm::core only: one Keras BatchNormalization call in training mode.
#include <cmath>
#include <cstdio>
#include <vector>

#include "bnorm/nn/batch_normalization.hpp"

int main() {
  namespace nn = bnorm::nn;
  using bnorm::Shape;
  using bnorm::Tensor;

  // x: (N=4, C=2); channel 0 holds 1, 2, 3, 4 (mean 2.5, biased variance 1.25), channel 1
  // is constant.
  Tensor x(Shape{4, 2}, std::vector<float>{1, 10, 2, 10, 3, 10, 4, 10});
  nn::BatchNormalization bn({.momentum = 0.9, .epsilon = 1e-3});
  Tensor y = bn(x, /*training=*/true);

  const double y00 = (1.0 - 2.5) / std::sqrt(1.25 + 1e-3);   // (x - mean) / sqrt(var + eps)
  const double moving00 = 0.9 * 0.0 + 0.1 * 2.5;              // momentum * old + (1 - momentum) * mean
  const float moving = bn.moving_mean()->value[0];
  if (std::fabs(y[0] - y00) > 1e-5 || y[1] != 0.0f || std::fabs(moving - moving00) > 1e-6) {
    std::fprintf(stderr, "consumer_core: y[0,0] = %.7f (expected %.7f), y[0,1] = %g, moving_mean[0] = %.7f (expected %.7f)\n",
                 y[0], y00, y[1], moving, moving00);
    return 1;
  }
  std::printf("consumer_core: y[0,0] = %.6f, moving_mean[0] = %.3f: as Keras computes them\n", y[0], moving);
  return 0;
}
