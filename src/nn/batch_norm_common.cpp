#include "batch_norm_common.hpp"

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
  const bool relu = context.relu;
  if (relu && context.used_batch_statistics) {
    // The pair's backward in one kernel: g = (y > 0 ? dy : 0), then backward_training.
    const Tensor yv = in_view(context.relu_output, view);
    kernels::backward_training_relu(dyv.data(), xv.data(), yv.data(), view.dims, context.mean.data(),
                                    context.invstd.data(), gamma, dxv.data(), dgamma.data(), dbeta.data());
  } else if (relu) {
    // Inference statistics: the ReLU's gradient (the activation kernel's dy * (y > 0)),
    // then backward_inference.
    Tensor masked(dyv.shape());
    const Tensor yv = in_view(context.relu_output, view);
    kernels::activation_backward(kernels::Activation::relu, nullptr, yv.data(), dyv.data(), 1, masked.numel(),
                                 masked.data());
    kernels::backward_inference(masked.data(), xv.data(), view.dims, context.mean.data(), context.var.data(),
                                gamma, static_cast<float>(epsilon), dxv.data(), dgamma.data(), dbeta.data());
  } else if (context.used_batch_statistics) {
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
