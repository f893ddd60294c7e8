// bnorm/nn/torch_batch_norm.hpp: batch normalization with the PyTorch convention
// (torch.nn.BatchNorm1d / 2d / 3d, LazyBatchNorm*), shared/spec/SEMANTICS.md section 2.
//
// MOMENTUM CONVENTION: PyTorch. `momentum` is the weight of the NEW batch:
//     running_mean = (1 - momentum) * running_mean + momentum * batch_mean
//     running_var  = (1 - momentum) * running_var  + momentum * unbiased_batch_var
// (default 0.1, which is Keras momentum 0.9). momentum = nullopt means a cumulative
// average with equal weight per batch: factor = 1 / num_batches_tracked.
// For the Keras convention use bnorm::nn::BatchNormalization.
//
// Semantics:
// * The channel axis is dim 1. Accepted input ranks: Rank::d1 2-D (N, C) or 3-D
//   (N, C, L); Rank::d2 4-D; Rank::d3 5-D; Rank::any any rank >= 2.
// * Mode is the module's state, set explicitly by train() / eval(); a new module is in
//   training mode, as in PyTorch.
// * Normalization always uses the biased batch variance; running_var stores the
//   unbiased one (N/(N-1)).
// * Training: num_batches_tracked += 1 and running statistics updated when
//   track_running_stats is on and the buffers exist. Eval: running statistics are used,
//   or batch statistics when the buffers were never created (track_running_stats false
//   at construction). Turning track_running_stats off later keeps the buffers and
//   stops updates; eval then still uses them.
// * Errors (state unchanged, including the counter, where PyTorch would already have
//   incremented it): ShapeError for a wrong rank ("expected 2D or 3D input (got 4D
//   input)"), a wrong channel count, or a single value per channel in training;
//   ArgumentError for eps <= 0 in training or eps < 0; NumericalError for non-finite
//   batch statistics unless nan_policy = propagate.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "bnorm/core/tensor.hpp"
#include "bnorm/nn/batch_normalization.hpp"  // NanPolicy, BatchNormContext, BatchNormGradients

namespace bnorm::nn {

struct TorchBatchNormOptions {
  std::int64_t num_features = 0;  // C; 0 = lazy: taken from the first input's dim 1
  double eps = 1e-5;
  std::optional<double> momentum = 0.1;  // PyTorch convention: weight of the NEW batch
  bool affine = true;                    // weight (ones) and bias (zeros)
  bool track_running_stats = true;       // running_mean, running_var, num_batches_tracked
  NanPolicy nan_policy = NanPolicy::reject;
};

class TorchBatchNorm {
 public:
  enum class Rank { d1, d2, d3, any };

  TorchBatchNorm(Rank rank, TorchBatchNormOptions options);

  // forward(x) in the current mode (module(x) in PyTorch).
  Tensor operator()(const Tensor& x) { return forward(x, nullptr); }
  Tensor forward(const Tensor& x, BatchNormContext* context = nullptr);
  BatchNormGradients backward(const BatchNormContext& context, const Tensor& dy) const;
  // ShapeError unless x is an input this module accepts: its rank class (above) and, once
  // initialized, num_features channels on dim 1 (what forward checks first).
  void check_input(const Tensor& x) const;

  void train(bool mode = true) noexcept { training_ = mode; }
  void eval() noexcept { training_ = false; }
  bool is_training() const noexcept { return training_; }

  std::int64_t num_features() const noexcept { return num_features_; }
  bool initialized() const noexcept { return num_features_ > 0; }
  double eps() const noexcept { return options_.eps; }
  std::optional<double> momentum() const noexcept { return options_.momentum; }
  void set_momentum(std::optional<double> momentum);
  bool affine() const noexcept { return options_.affine; }
  bool track_running_stats() const noexcept { return track_running_stats_; }
  // PyTorch `module.track_running_stats = value`: buffers are kept either way.
  void set_track_running_stats(bool value) noexcept { track_running_stats_ = value; }
  bool has_running_stats() const noexcept { return running_mean_.has_value(); }

  // Parameters and buffers (null when absent or not yet initialized).
  Tensor* weight() noexcept { return opt(weight_); }
  Tensor* bias() noexcept { return opt(bias_); }
  Tensor* running_mean() noexcept { return opt(running_mean_); }
  Tensor* running_var() noexcept { return opt(running_var_); }
  const Tensor* weight() const noexcept { return opt(weight_); }
  const Tensor* bias() const noexcept { return opt(bias_); }
  const Tensor* running_mean() const noexcept { return opt(running_mean_); }
  const Tensor* running_var() const noexcept { return opt(running_var_); }
  std::int64_t num_batches_tracked() const noexcept { return num_batches_tracked_; }
  void set_num_batches_tracked(std::int64_t n) noexcept { num_batches_tracked_ = n; }

  // torch.nn.SyncBatchNorm: with a communicator of size > 1 attached, training calls
  // normalize with the statistics of every rank's batch and the running statistics get
  // their update from them (Bessel's correction with the global count; the single-value
  // check is on the global count too), exactly as BatchNormalization's synchronized calls
  // (batch_normalization.hpp). Null or size 1: this module, bit for bit.
  void set_communicator(std::shared_ptr<Communicator> communicator) {
    communicator_ = std::move(communicator);
  }
  const std::shared_ptr<Communicator>& communicator() const noexcept { return communicator_; }
  bool synchronizing() const noexcept { return communicator_ && communicator_->size() > 1; }

  // running stats to 0 / 1, counter to 0.
  void reset_running_stats();
  // also weight to 1, bias to 0.
  void reset_parameters();

 private:
  void materialize(std::int64_t num_features);
  static Tensor* opt(std::optional<Tensor>& t) noexcept { return t ? &*t : nullptr; }
  static const Tensor* opt(const std::optional<Tensor>& t) noexcept { return t ? &*t : nullptr; }

  Rank rank_;
  TorchBatchNormOptions options_;
  std::int64_t num_features_ = 0;
  bool training_ = true;
  bool track_running_stats_ = true;
  std::optional<Tensor> weight_, bias_, running_mean_, running_var_;
  std::int64_t num_batches_tracked_ = 0;
  std::shared_ptr<Communicator> communicator_;  // SyncBatchNorm when size > 1
};

// The PyTorch module names.
TorchBatchNorm BatchNorm1d(std::int64_t num_features, TorchBatchNormOptions options = {});
TorchBatchNorm BatchNorm2d(std::int64_t num_features, TorchBatchNormOptions options = {});
TorchBatchNorm BatchNorm3d(std::int64_t num_features, TorchBatchNormOptions options = {});
// Lazy variants: num_features from the first input (LazyBatchNorm1d/2d/3d).
TorchBatchNorm LazyBatchNorm1d(TorchBatchNormOptions options = {});
TorchBatchNorm LazyBatchNorm2d(TorchBatchNormOptions options = {});
TorchBatchNorm LazyBatchNorm3d(TorchBatchNormOptions options = {});

}  // namespace bnorm::nn
