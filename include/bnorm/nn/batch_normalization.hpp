// bnorm/nn/batch_normalization.hpp: the Keras BatchNormalization layer.
//
// MOMENTUM CONVENTION: Keras. `momentum` is the weight of the OLD moving value:
//     moving_mean     = moving_mean     * momentum + batch_mean     * (1 - momentum)
//     moving_variance = moving_variance * momentum + batch_variance * (1 - momentum)
// (default 0.99). PyTorch's momentum is the weight of the NEW batch: for that
// convention use bnorm::nn::TorchBatchNorm (torch_batch_norm.hpp); PyTorch momentum 0.1
// corresponds to Keras momentum 0.9.
//
// Semantics (shared/spec/SEMANTICS.md section 1), Keras 3 by default:
// * call(x, training): training unset (std::nullopt) means INFERENCE, as a bare Keras
//   `layer(x)` / `model(x)`. Batch statistics are used, and the moving statistics
//   updated, only when `training && trainable()`; otherwise the layer normalizes with
//   moving_mean / moving_variance and changes nothing.
//     training: y = gamma * (x - batch_mean) / sqrt(batch_var + epsilon) + beta
//     inference: y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta
//   batch_var is always the biased batch variance.
// * trainable(false) (the TF2 fine-tuning rule): inference mode even when called with
//   training = true, no statistic update, gamma/beta frozen (not in trainable_weights).
// * Weights in order gamma, beta, moving_mean, moving_variance (gamma only when
//   scale, beta only when center), created by build() from the first input shape.
// * axis: int or list, negative allowed; the other axes are reduced.
// * version keras2 (tf_keras, TF2 eager): the moving update is written
//   V <- V - (V - v) * (1 - momentum); with fused resolution (rank 4 with axis 1 or 3,
//   rank 5 with axis 1 or 4, single axis) the fused kernel's convention applies: the
//   STORED variance is the unbiased N/(N-1) * batch_var (N-1 taken as 1 when N == 1),
//   V <- (1-f) V + f N/(N-1) var with f = 1 - momentum.
//
// Variants (SEMANTICS.md 1.9-1.11), training calls only (inference is the formula above):
// * renorm (batch renormalization; tf_keras, and Keras 3 >= 3.14: the same formulas,
//   moving averages written in each version's EMA form below). Per channel, from the
//   batch statistics (mean, var) and the PRE-update renorm_mean / renorm_stddev:
//     s = sqrt(var + epsilon),  rs = max(renorm_stddev, sqrt(epsilon))
//     r = clip(s / rs, rmin, rmax),  d = clip((mean - renorm_mean) / rs, -dmax, dmax)
//     (only the bounds given in renorm_clipping), r and d constant for gradients
//     y = ((x - mean) / s * r + d) * gamma + beta      (gamma = 1 / beta = 0 when absent)
//   then renorm_mean <- EMA(renorm_mean, mean, renorm_momentum),
//        renorm_stddev <- EMA(renorm_stddev, s, renorm_momentum),
//        moving_mean <- EMA(moving_mean, mean, momentum),
//        moving_stddev <- EMA(moving_stddev, s, momentum),
//        moving_variance <- max(moving_stddev^2 - epsilon, 0)
//   with EMA(a, b, m) = a*m + b*(1-m) (keras3) or a - (a-b)*(1-m) (keras2). Three more
//   weights, after the four: moving_stddev, renorm_mean, renorm_stddev (initialized to
//   sqrt(moving_variance_initializer), moving_mean_initializer, sqrt(...)).
// * virtual_batch_size (ghost batch normalization, keras2 only): a batch of B examples
//   forms G = B / virtual_batch_size ghost batches, example b in ghost batch b mod G
//   (tf_keras reshapes to [vbs, G, ...]: strided, not contiguous). Each ghost batch is
//   normalized with its own mean and biased variance; the moving statistics get ONE
//   update with the average over ghost batches of their means and of their variances
//   (with renorm, r and d come from those averages). A batch size not divisible by
//   virtual_batch_size is refused in training (ShapeError; tf_keras's reshape fails with
//   InvalidArgumentError), inference takes any batch size. The parameters have tf_keras's
//   shape: rank R+1, (1, 1, C) for 2-D input. axis may not include 0.
// * mask (forward_masked / call(x, training, mask)): shape (d0, ..., d_{R-2}), one
//   dimension less than x, each dimension equal to x's or 1 (broadcast); it is expanded
//   on x's LAST axis. Statistics over the unmasked positions only, per channel:
//     keras3: m = (mask != 0); mean = sum(m x) / (count + 1e-7),
//             var = sum(m (x - mean)^2) / (count + 1e-7), count + 1e-7 rounded to float
//     keras2: w = mask;  mean = sum(w x) / sum(w),  var = sum(w (x - mean)^2) / sum(w)
//             (0 when sum(w) == 0, tf.nn.weighted_moments); ignored on the fused path.
//   A fully masked batch gives mean 0 and var 0, and, as in Keras, the moving statistics
//   still move toward them. Outputs at masked positions are still transformed. Not with
//   virtual_batch_size (ArgumentError).
//
// Synchronized batch normalization (Keras synchronized=True, PyTorch SyncBatchNorm), with
// a communicator of size P > 1 attached (set_communicator; bnorm/nn/communicator.hpp).
// Each rank holds a shard of the batch (any sizes, empty included). A training call:
//   forward: each rank's per-channel (count, mean, m2) in double, all-gathered and merged
//     in rank order with Chan's formula (ChannelMoments): every rank gets the statistics
//     of the concatenated batch, the same bits on every rank, then normalizes its shard
//     with them; the moving statistics get ONE update from them (count = the global
//     count), identical on every rank.
//   backward: the local sums of dy and dy * xhat are all-reduced (one reduction order) and
//     dx uses them with the global count (kernels::backward_training_dx). dgamma and dbeta
//     are this rank's own sums (as PyTorch's SyncBatchNorm): their sum over the ranks is
//     the gradient of the concatenated batch, which a data-parallel step forms.
//   Bytes exchanged per call and rank: forward (1 + 2C) * 8 * P gathered, backward 2C * 8
//   all-reduced (docs/distributed.md).
// Outputs, gradients and moving statistics equal the plain layer's on the concatenated
// batch within float rounding (tested to relative 1e-6 with P = 2, 3, 4). Not with renorm,
// ghost batches or a mask in training (ArgumentError). Inference is local, as always.
//
// Errors (all leave weights, moving statistics and counters unchanged):
//   ArgumentError: momentum outside [0, 1], epsilon <= 0 or not finite, axis out of
//     range or repeated, fused = yes with an unfusable configuration.
//   ShapeError: input rank or channel sizes different from the built ones.
//   ArgumentError also: renorm_momentum outside [0, 1]; keras3 renorm_clipping with
//     rmax < rmin or dmax < 0 (Keras 3's checks); virtual_batch_size with keras3, <= 0, with
//     fused = yes, or with axis 0; renorm with fused = yes; a mask with virtual_batch_size.
//   ShapeError also: a mask of the wrong rank or shape; a training batch size not divisible
//     by virtual_batch_size.
//   NumericalError: non-finite batch statistics in training (unless
//     nan_policy = propagate, Keras's own behaviour).
// An empty batch (no element per channel) in training returns an empty output and
// changes nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bnorm/core/tensor.hpp"
#include "bnorm/nn/channel_moments.hpp"
#include "bnorm/nn/communicator.hpp"
#include "bnorm/nn/initializers.hpp"
#include "bnorm/nn/layer.hpp"
#include "bnorm/nn/regularizers.hpp"
#include "bnorm/nn/variable.hpp"

namespace bnorm::nn {

enum class KerasVersion { keras3, keras2 };
// keras2 only: Keras's `fused` argument. automatic = Keras's resolution in build().
enum class Fused { automatic, yes, no };
// What happens when training statistics are not finite (NaN/Inf input).
enum class NanPolicy {
  reject,     // throw NumericalError, nothing changes (bnorm's default)
  propagate,  // Keras/PyTorch behaviour: NaN flows into the output and moving statistics
};

// Keras renorm_clipping: the bounds given (a missing one does not clip that side).
struct RenormClipping {
  std::optional<double> rmax, rmin, dmax;
  friend bool operator==(const RenormClipping&, const RenormClipping&) = default;
};

struct BatchNormalizationOptions {
  std::vector<int> axis{-1};
  double momentum = 0.99;  // Keras convention: weight of the OLD moving value
  double epsilon = 1e-3;
  bool center = true;      // create beta
  bool scale = true;       // create gamma
  Initializer beta_initializer = Initializer::zeros();
  Initializer gamma_initializer = Initializer::ones();
  Initializer moving_mean_initializer = Initializer::zeros();
  Initializer moving_variance_initializer = Initializer::ones();
  Regularizer beta_regularizer{};
  Regularizer gamma_regularizer{};
  Constraint beta_constraint{};
  Constraint gamma_constraint{};
  bool trainable = true;
  KerasVersion version = KerasVersion::keras3;
  Fused fused = Fused::automatic;
  NanPolicy nan_policy = NanPolicy::reject;
  bool renorm = false;                 // batch renormalization (see the header comment)
  RenormClipping renorm_clipping{};    // used only with renorm
  double renorm_momentum = 0.99;       // momentum of renorm_mean / renorm_stddev
  std::optional<std::int64_t> virtual_batch_size{};  // ghost batch size (keras2 only)
  // Keras `synchronized`: batch statistics over every replica of a data-parallel run. The
  // layer synchronizes when a communicator is attached (set_communicator); a data-parallel
  // fit attaches one to the synchronized layers (FitOptions::sync_batch_norm).
  bool synchronized = false;
  std::string name{};      // empty: automatic ("batch_normalization", "batch_normalization_1", ...)

  friend bool operator==(const BatchNormalizationOptions&, const BatchNormalizationOptions&) = default;
};

// What a training call contributes to the moving statistics: the batch statistics and
// the number of elements per channel they were taken over.
struct StatisticsUpdate {
  Tensor batch_mean;      // (C) parameter shape: the batch mean, rounded to float
  Tensor batch_variance;  // (C) biased, rounded to float
  std::int64_t count = 0;
  // The same statistics in double as the kernel accumulated them (count, mean, and
  // m2 = count * biased variance per channel, flattened as the parameter). Merges
  // (merge_update, UpdateCollection) combine these, so that merged micro-batches are as
  // accurate as one call on the whole batch; apply_update() uses the float fields.
  // Training calls fill it. An update built by hand may leave it empty (no channels):
  // a merge then starts from the float fields. When present it is authoritative for
  // merges: an update whose float fields are changed by hand should clear it.
  ChannelMoments moments{};
};

// What backward() needs from a forward call.
struct BatchNormContext {
  Tensor x;                    // the input, as called
  Tensor mean;                 // (C) mean used to normalize (batch or moving)
  Tensor var;                  // (C) variance used to normalize (biased batch, or moving)
  Tensor invstd;               // (C) 1/sqrt(var + epsilon)
  bool used_batch_statistics = false;
  // Training calls with a variant (renorm, ghost batches, a mask) fill these, and then
  // mean / var / invstd are left empty: the statistics are per ghost batch.
  bool variant = false;
  Tensor r, d;                 // (C) renorm corrections; empty without renorm
  std::int64_t groups = 1;     // ghost batches (1: none)
  Tensor group_mean, group_var;  // (groups * C) statistics each ghost batch was normalized with
  Tensor weights;              // x's shape: the mask's weights; empty without a mask
  // forward_relu: the call ended with a ReLU; relu_output is its output (x's shape), and
  // backward takes dy of the ReLU's output.
  bool relu = false;
  Tensor relu_output;
  // Synchronized training calls (see "Synchronized batch normalization"): the statistics
  // are those of every rank's batch together, global_count elements per channel, and the
  // backward all-reduces its channel sums through `communicator` (null otherwise).
  std::int64_t global_count = 0;
  std::shared_ptr<Communicator> communicator;
};

struct BatchNormGradients {
  Tensor dx;                   // assigned, x's shape
  std::optional<Tensor> dgamma;  // assigned, parameter shape; absent without scale
  std::optional<Tensor> dbeta;   // assigned, parameter shape; absent without center
};

class BatchNormalization : public Layer {
 public:
  // Validates the options (ArgumentError naming the option).
  explicit BatchNormalization(BatchNormalizationOptions options = {});

  std::string class_name() const override { return "BatchNormalization"; }

  // Creates the weights for inputs of this shape (dimension 0, the batch, is ignored;
  // pass -1 for unknown dimensions that are not channel axes). Called by the first
  // call() when not called before. Throws on an axis that does not fit the rank.
  void build(const Shape& input_shape) override;
  bool built() const noexcept override { return built_; }
  Shape compute_output_shape(const Shape& input_shape) const override { return input_shape; }
  using Layer::operator();

  // Keras `layer(x, training=...)`.
  Tensor operator()(const Tensor& x, std::optional<bool> training = std::nullopt) {
    return call(x, training);
  }
  Tensor call(const Tensor& x, std::optional<bool> training = std::nullopt);
  // Keras `layer(x, training=..., mask=mask)`: see "mask" above.
  Tensor operator()(const Tensor& x, std::optional<bool> training, const Tensor& mask) {
    return forward_masked(x, &mask, training, nullptr);
  }
  Tensor call(const Tensor& x, std::optional<bool> training, const Tensor& mask) {
    return forward_masked(x, &mask, training, nullptr);
  }
  // forward() with a mask (null: none).
  Tensor forward_masked(const Tensor& x, const Tensor* mask, std::optional<bool> training,
                        BatchNormContext* context);
  // Same as call, and records what backward() needs in *context (when not null).
  Tensor forward(const Tensor& x, std::optional<bool> training, BatchNormContext* context);
  // Gradients of sum(y * dy) for the call recorded in `context`: the training-mode
  // formula when batch statistics were used, else the inference formula.
  BatchNormGradients backward(const BatchNormContext& context, const Tensor& dy) const;

  // Training-mode forward WITHOUT touching the moving statistics: the update is
  // returned instead, for the caller to apply (TF1 UPDATE_OPS style) or discard.
  Tensor forward_collect(const Tensor& x, StatisticsUpdate& update, BatchNormContext* context = nullptr,
                         const Tensor* mask = nullptr);
  // Applies an update with this layer's momentum convention (with renorm: the renorm
  // statistics, moving_stddev and moving_variance as above, from the update's mean and
  // variance). Throws ShapeError for a
  // wrong-size update, NumericalError for non-finite statistics (nan_policy reject).
  void apply_update(const StatisticsUpdate& update);

  // The Layer interface (models, tape): forward with an explicit mode; with `updates`
  // and training, the statistic update is recorded there instead of applied.
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                 UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;

  // The layer followed by a ReLU (Keras Activation('relu'), or a ReLU layer with default
  // arguments: y = max(v, 0)) in one call, as models run a BatchNormalization whose only
  // consumer is such a ReLU (Model::fused_pairs). The same as forward() then the ReLU,
  // bit for bit: outputs, statistics, moving-statistic updates (applied, or recorded in
  // `updates`, as forward() does) and the gradients of backward() on the returned context,
  // which takes dy of the ReLU's output. With batch statistics (training, trainable, no
  // renorm / ghost batches) the fused kernels run (kernels::forward_training_relu, and
  // backward_training_relu in backward); otherwise the ReLU is applied in place after
  // the normalization. Errors as forward(); on error nothing changes.
  Tensor forward_relu(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                      UpdateSink* updates);
  // Whether a model may fuse this layer with a following ReLU: false with renorm or
  // virtual_batch_size (their variants have no fused kernel; the pair then runs unfused).
  bool fusable_with_relu() const noexcept { return !options_.renorm && !options_.virtual_batch_size; }
  // Synchronized batch normalization: with a communicator of size > 1 attached, training
  // calls normalize with the statistics of every rank's batch (see the header comment);
  // null or size 1: the plain layer, bit for bit. The same layer on every rank must make
  // the same calls (each training forward and backward is a collective).
  void set_communicator(std::shared_ptr<Communicator> communicator) {
    communicator_ = std::move(communicator);
  }
  const std::shared_ptr<Communicator>& communicator() const noexcept { return communicator_; }
  bool synchronizing() const noexcept { return communicator_ && communicator_->size() > 1; }

  // Keras attributes.
  const std::string& name() const noexcept override { return name_; }
  bool trainable() const noexcept override { return trainable_; }
  void set_trainable(bool trainable) override;
  const BatchNormalizationOptions& options() const noexcept { return options_; }
  // Keras get_config()/from_config(): the options, with the resolved name.
  BatchNormalizationOptions get_config() const;
  static BatchNormalization from_config(const BatchNormalizationOptions& config) {
    return BatchNormalization(config);
  }
  // Channel axes, non-negative, sorted (valid after build).
  const std::vector<int>& axes() const noexcept { return axes_; }
  // Rank of the inputs the layer was built for (0 before build).
  int built_rank() const noexcept { return input_shape_.rank(); }
  // keras2: whether the fused kernel's convention is in effect (valid after build).
  bool fused() const noexcept { return fused_; }

  // Variables (null before build, or when absent).
  Variable* gamma() noexcept { return slot(gamma_); }
  Variable* beta() noexcept { return slot(beta_); }
  Variable* moving_mean() noexcept { return slot(moving_mean_); }
  Variable* moving_variance() noexcept { return slot(moving_variance_); }
  const Variable* gamma() const noexcept { return slot(gamma_); }
  const Variable* beta() const noexcept { return slot(beta_); }
  const Variable* moving_mean() const noexcept { return slot(moving_mean_); }
  const Variable* moving_variance() const noexcept { return slot(moving_variance_); }
  // renorm only (null otherwise).
  Variable* moving_stddev() noexcept { return slot(moving_stddev_); }
  Variable* renorm_mean() noexcept { return slot(renorm_mean_); }
  Variable* renorm_stddev() noexcept { return slot(renorm_stddev_); }
  const Variable* moving_stddev() const noexcept { return slot(moving_stddev_); }
  const Variable* renorm_mean() const noexcept { return slot(renorm_mean_); }
  const Variable* renorm_stddev() const noexcept { return slot(renorm_stddev_); }

  // Keras order: gamma, beta, moving_mean, moving_variance (present ones only), then with
  // renorm moving_stddev, renorm_mean, renorm_stddev.
  // trainable_weights(): gamma, beta unless frozen; get/set_weights, losses() (one per
  // active regularizer) and apply_constraints() come from Layer.
  std::vector<Variable*> weights() override;
  using Layer::weights;

  // Throws ShapeError (naming the layer, the axis, what it was built for and what x is)
  // unless x has the rank and channel sizes this built layer takes; what every call checks
  // first, for tools that compute statistics of a layer's input themselves (recalibrate,
  // the gap report).
  void check_input(const Tensor& x) const;

 private:
  // Normalizes x with batch statistics (fills `update`, touches no state) or with the
  // moving statistics.
  Tensor run(const Tensor& x, bool batch_statistics, StatisticsUpdate& update, BatchNormContext* context,
             const Tensor* mask = nullptr) const;
  // run(), then max(y, 0) (the fused kernel on the plain batch path); `relu` false: run().
  Tensor run(const Tensor& x, bool batch_statistics, StatisticsUpdate& update, BatchNormContext* context,
             const Tensor* mask, bool relu) const;
  // forward(x, training, context, updates) and forward_relu.
  Tensor forward_layer(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                       UpdateSink* updates, bool relu);
  // Training with renorm / ghost batches / a mask (weights: x's shape, or empty).
  Tensor run_variant(const Tensor& x, const Tensor& weights, StatisticsUpdate& update,
                     BatchNormContext& context) const;
  Tensor mask_weights(const Tensor& x, const Tensor& mask) const;
  Tensor collect(const Tensor& x, StatisticsUpdate& update, BatchNormContext* context, const Tensor* mask,
                 bool relu);
  Tensor forward_impl(const Tensor& x, const Tensor* mask, std::optional<bool> training,
                      BatchNormContext* context, bool relu);
  BatchNormGradients backward_variant(const BatchNormContext& context, const Tensor& dy) const;
  Variable* slot(std::optional<Variable>& v) noexcept { return v ? &*v : nullptr; }
  const Variable* slot(const std::optional<Variable>& v) const noexcept { return v ? &*v : nullptr; }

  BatchNormalizationOptions options_;
  std::string name_;
  bool trainable_ = true;
  bool built_ = false;
  bool fused_ = false;
  std::vector<int> axes_;         // channel axes, sorted
  Shape input_shape_;             // as built (batch dimension ignored)
  Shape param_shape_;             // (C) or Keras 2's broadcast shape for several axes
  std::optional<Variable> gamma_, beta_, moving_mean_, moving_variance_;
  std::optional<Variable> moving_stddev_, renorm_mean_, renorm_stddev_;  // renorm only
  std::shared_ptr<Communicator> communicator_;  // synchronized training when size > 1
};

}  // namespace bnorm::nn
