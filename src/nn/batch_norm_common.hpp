// Internal: the kernel calls both layer conventions (Keras, PyTorch) share.
#pragma once

#include <memory>

#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/communicator.hpp"
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
// set: y is the ReLU's output, and dy is masked by relu_output > 0 first). For a synchronized
// forward (context.communicator set): the local sums of dy and dy * xhat are all-reduced
// and dx uses them with context.global_count; dgamma and dbeta are THIS rank's sums
// (PyTorch's SyncBatchNorm: the data-parallel step sums them over the ranks).
BatchNormGradients backward(const BatchNormContext& context, const ChannelView& view, const Tensor& dy,
                            const float* gamma, double epsilon, bool want_dgamma, bool want_dbeta,
                            const Shape& param_shape, const std::string& where);

// Synchronized training forward (a communicator of size > 1): x's own moments in double
// (ChannelMoments: count, mean, m2), all-gathered and merged in rank order (Chan's
// formula: the same bits on every rank, exact for empty and one-row shards), then one
// elementwise pass with the merged statistics in the training kernel's centred form
// (center = float mean, alpha = invstd * gamma, shift = beta - (mean_d - center) * alpha).
// context: mean, var (biased), invstd of the whole batch, global_count, communicator.
// *moments <- the merged moments.
Tensor normalize_synchronized(const Tensor& x, const ChannelView& view, const Shape& param_shape,
                              const float* gamma, const float* beta, double epsilon,
                              const std::shared_ptr<Communicator>& communicator, BatchNormContext& context,
                              ChannelMoments& moments);

// Throws NumericalError naming `what` when a value is not finite.
void require_finite(const Tensor& t, const std::string& where, const std::string& what);

}  // namespace bnorm::nn::detail
