// Internal: the kernel calls both layer conventions (Keras, PyTorch) share.
#pragma once

#include "bnorm/nn/batch_normalization.hpp"
#include "channel_view.hpp"

namespace bnorm::nn::detail {

// Normalizes x with its own batch statistics, which are returned in `context` fields
// mean, var (biased), invstd (each of `param_shape`), and, when `moments` is not null,
// in double there (assigned). With `relu`, the output is relu(y) from the fused kernel
// (kernels::forward_training_relu: the same statistics, y bit for bit max(y, 0)).
// Touches no layer state.
Tensor normalize_with_batch(const Tensor& x, const ChannelView& view, const Shape& param_shape,
                            const float* gamma, const float* beta, double epsilon, BatchNormContext& context,
                            ChannelMoments* moments = nullptr, bool relu = false);

// Normalizes x with given statistics (moving / running ones); records them in context.
Tensor normalize_with(const Tensor& x, const ChannelView& view, const Tensor& mean, const Tensor& var,
                      const float* gamma, const float* beta, double epsilon, BatchNormContext& context);

// Gradients of sum(y * dy) for the forward recorded in context (with context.relu_output
// set: y is the ReLU's output, and dy is masked by relu_output > 0 first).
BatchNormGradients backward(const BatchNormContext& context, const ChannelView& view, const Tensor& dy,
                            const float* gamma, double epsilon, bool want_dgamma, bool want_dbeta,
                            const Shape& param_shape, const std::string& where);

// Throws NumericalError naming `what` when a value is not finite.
void require_finite(const Tensor& t, const std::string& where, const std::string& what);

}  // namespace bnorm::nn::detail
