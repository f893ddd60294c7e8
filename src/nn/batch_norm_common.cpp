#include "batch_norm_common.hpp"

#include <cmath>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/kernels/batch_norm.hpp"

namespace bnorm::nn::detail {

Tensor normalize_with_batch(const Tensor& x, const ChannelView& view, const Shape& param_shape,
                            const float* gamma, const float* beta, double epsilon, BatchNormContext& context,
                            ChannelMoments* moments) {
  context.mean = Tensor(param_shape);
  context.var = Tensor(param_shape);
  context.invstd = Tensor(param_shape);
  context.used_batch_statistics = true;
  context.x = x;
  std::vector<double> mean_d, var_d;  // (C)
  if (moments != nullptr) {
    mean_d.resize(static_cast<std::size_t>(param_shape.numel()));
    var_d.resize(mean_d.size());
  }
  Tensor y = run_in_view(x, view, [&](const float* xv, float* yv) {
    kernels::forward_training(xv, view.dims, gamma, beta, static_cast<float>(epsilon), yv,
                              context.mean.data(), context.var.data(), context.invstd.data(),
                              moments ? mean_d.data() : nullptr, moments ? var_d.data() : nullptr);
  });
  if (moments != nullptr) *moments = ChannelMoments::from_mean_var(mean_d, var_d, view.dims.count());
  return y;
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
  if (context.used_batch_statistics) {
    kernels::backward_training(dyv.data(), xv.data(), view.dims, context.mean.data(), context.invstd.data(),
                               gamma, dxv.data(), dgamma.data(), dbeta.data());
  } else {
    kernels::backward_inference(dyv.data(), xv.data(), view.dims, context.mean.data(), context.var.data(),
                                gamma, static_cast<float>(epsilon), dxv.data(), dgamma.data(), dbeta.data());
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
