#include "batch_norm_common.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/kernels/activation.hpp"
#include "bnorm/kernels/batch_norm.hpp"

namespace bnorm::nn::detail {

Tensor normalize_with_batch(const Tensor& x, const ChannelView& view, const Shape& param_shape,
                            const float* gamma, const float* beta, double epsilon, BatchNormContext& context,
                            ChannelMoments* moments, bool relu) {
  context.mean = Tensor(param_shape);
  context.var = Tensor(param_shape);
  context.invstd = Tensor(param_shape);
  context.used_batch_statistics = true;
  context.x = x;
  context.global_count = 0;
  context.communicator.reset();
  std::vector<double> mean_d, var_d;  // (C)
  if (moments != nullptr) {
    mean_d.resize(static_cast<std::size_t>(param_shape.numel()));
    var_d.resize(mean_d.size());
  }
  Tensor y = run_in_view(x, view, [&](const float* xv, float* yv) {
    double* const md = moments ? mean_d.data() : nullptr;
    double* const vd = moments ? var_d.data() : nullptr;
    const auto eps = static_cast<float>(epsilon);
    if (relu) {
      kernels::forward_training_relu(xv, view.dims, gamma, beta, eps, yv, context.mean.data(),
                                     context.var.data(), context.invstd.data(), md, vd);
    } else {
      kernels::forward_training(xv, view.dims, gamma, beta, eps, yv, context.mean.data(), context.var.data(),
                                context.invstd.data(), md, vd);
    }
  });
  if (moments != nullptr) *moments = ChannelMoments::from_mean_var(mean_d, var_d, view.dims.count());
  return y;
}

Tensor normalize_synchronized(const Tensor& x, const ChannelView& view, const Shape& param_shape,
                              const float* gamma, const float* beta, double epsilon,
                              const std::shared_ptr<Communicator>& communicator, BatchNormContext& context,
                              ChannelMoments& moments) {
  const std::int64_t C = param_shape.numel();
  const auto uC = static_cast<std::size_t>(C);
  const Tensor xv = in_view(x, view);
  // This rank's moments, packed as (count, mean (C), m2 (C)).
  std::vector<float> mean_f(uC), var_f(uC);
  std::vector<double> mean_d(uC), var_d(uC);
  kernels::moments(xv.data(), view.dims, mean_f.data(), var_f.data(), mean_d.data(), var_d.data());
  const ChannelMoments mine = ChannelMoments::from_mean_var(mean_d, var_d, view.dims.count());
  const std::size_t K = 1 + 2 * uC;
  std::vector<double> packed(K);
  packed[0] = static_cast<double>(mine.count);
  std::copy(mine.mean.begin(), mine.mean.end(), packed.begin() + 1);
  std::copy(mine.m2.begin(), mine.m2.end(), packed.begin() + 1 + static_cast<std::ptrdiff_t>(uC));
  const auto P = static_cast<std::size_t>(communicator->size());
  std::vector<double> all(K * P);
  communicator->all_gather(packed, all);
  ChannelMoments total(C);
  for (std::size_t r = 0; r < P; ++r) {  // rank order: the same merge on every rank
    const double* part = all.data() + r * K;
    ChannelMoments m;
    m.count = static_cast<std::int64_t>(part[0]);
    m.mean.assign(part + 1, part + 1 + uC);
    m.m2.assign(part + 1 + uC, part + K);
    total.merge(m);
  }
  const std::vector<double> var = total.variance();
  context = BatchNormContext();
  context.x = x;
  context.used_batch_statistics = true;
  context.global_count = total.count;
  context.communicator = communicator;
  context.mean = Tensor(param_shape);
  context.var = Tensor(param_shape);
  context.invstd = Tensor(param_shape);
  // The elementwise pass is forward_inference's centred form with center = the float mean
  // and beta replaced by the training kernel's shift, which carries the double mean.
  const auto eps = static_cast<float>(epsilon);
  std::vector<float> shift(uC);
  for (std::size_t c = 0; c < uC; ++c) {
    const auto i = static_cast<std::int64_t>(c);
    context.mean[i] = static_cast<float>(total.mean[c]);
    context.var[i] = static_cast<float>(var[c]);
    // forward_inference's invstd: from the float variance, in double, rounded once.
    context.invstd[i] =
        static_cast<float>(1.0 / std::sqrt(static_cast<double>(context.var[i]) + static_cast<double>(eps)));
    const float alpha = context.invstd[i] * (gamma ? gamma[c] : 1.0f);
    const double below = total.mean[c] - static_cast<double>(context.mean[i]);
    const float b = beta ? beta[c] : 0.0f;
    shift[c] = static_cast<float>(static_cast<double>(b) - below * static_cast<double>(alpha));
  }
  moments = std::move(total);
  return run_in_view(x, view, [&](const float* in, float* out) {
    kernels::forward_inference(in, view.dims, context.mean.data(), context.var.data(), gamma, shift.data(),
                               eps, out);
  });
}

Tensor normalize_with(const Tensor& x, const ChannelView& view, const Tensor& mean, const Tensor& var,
                      const float* gamma, const float* beta, double epsilon, BatchNormContext& context) {
  context.mean = mean;
  context.var = var;
  context.invstd = Tensor(var.shape());
  for (std::int64_t c = 0; c < var.numel(); ++c) {
    context.invstd[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[c]) + epsilon));
  }
  context.used_batch_statistics = false;
  context.x = x;
  context.global_count = 0;
  context.communicator.reset();
  return run_in_view(x, view, [&](const float* xv, float* yv) {
    kernels::forward_inference(xv, view.dims, mean.data(), var.data(), gamma, beta,
                               static_cast<float>(epsilon), yv);
  });
}

BatchNormGradients backward(const BatchNormContext& context, const ChannelView& view, const Tensor& dy,
                            const float* gamma, double epsilon, bool want_dgamma, bool want_dbeta,
                            const Shape& param_shape, const std::string& where) {
  if (dy.shape() != context.x.shape()) {
    throw ShapeError(where, "dy", "the shape of the forward input " + context.x.shape().str(),
                     dy.shape().str());
  }
  BatchNormGradients g;
  Tensor dgamma(param_shape), dbeta(param_shape);
  const Tensor xv = in_view(context.x, view);
  const Tensor dyv = in_view(dy, view);
  Tensor dxv(xv.shape());
  Tensor masked;
  const float* dyp = dyv.data();
  if (context.relu && context.used_batch_statistics && !context.communicator) {
    // The pair's backward in one kernel: g = (y > 0 ? dy : 0), then backward_training.
    const Tensor yv = in_view(context.relu_output, view);
    kernels::backward_training_relu(dyv.data(), xv.data(), yv.data(), view.dims, context.mean.data(),
                                    context.invstd.data(), gamma, dxv.data(), dgamma.data(), dbeta.data());
  } else {
    if (context.relu) {
      // The ReLU's gradient first (the activation kernel's dy * (y > 0)), then the
      // batch normalization's below.
      masked = Tensor(dyv.shape());
      const Tensor yv = in_view(context.relu_output, view);
      kernels::activation_backward(kernels::Activation::relu, nullptr, yv.data(), dyv.data(), 1, masked.numel(),
                                   masked.data());
      dyp = masked.data();
    }
    if (context.communicator) {
      // Local sums (backward_inference's dgamma is invstd * sum dy (x - mean), i.e. the sum
      // of dy * xhat), all-reduced in double, then the elementwise dx over every rank's count.
      kernels::backward_inference(dyp, xv.data(), view.dims, context.mean.data(), context.var.data(), nullptr,
                                  static_cast<float>(epsilon), nullptr, dgamma.data(), dbeta.data());
      const auto uC = static_cast<std::size_t>(dgamma.numel());
      std::vector<double> sums(2 * uC);
      for (std::size_t c = 0; c < uC; ++c) {
        sums[c] = dbeta[static_cast<std::int64_t>(c)];
        sums[uC + c] = dgamma[static_cast<std::int64_t>(c)];
      }
      context.communicator->all_reduce_sum(sums);
      kernels::backward_training_dx(dyp, xv.data(), view.dims, context.mean.data(), context.invstd.data(), gamma,
                                    sums.data(), sums.data() + uC, context.global_count, dxv.data());
    } else if (context.used_batch_statistics) {
      kernels::backward_training(dyp, xv.data(), view.dims, context.mean.data(), context.invstd.data(), gamma,
                                 dxv.data(), dgamma.data(), dbeta.data());
    } else {
      kernels::backward_inference(dyp, xv.data(), view.dims, context.mean.data(), context.var.data(), gamma,
                                  static_cast<float>(epsilon), dxv.data(), dgamma.data(), dbeta.data());
    }
  }
  g.dx = view.perm.empty() ? std::move(dxv) : permute(dxv, view.inverse);
  if (want_dgamma) g.dgamma = std::move(dgamma);
  if (want_dbeta) g.dbeta = std::move(dbeta);
  return g;
}

void require_finite(const Tensor& t, const std::string& where, const std::string& what) {
  for (std::int64_t c = 0; c < t.numel(); ++c) {
    if (!std::isfinite(t[c])) {
      throw NumericalError(where, what, "finite values (is the input finite?)",
                           std::to_string(t[c]) + " in channel " + std::to_string(c));
    }
  }
}

}  // namespace bnorm::nn::detail
