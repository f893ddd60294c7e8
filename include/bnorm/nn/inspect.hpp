// bnorm/nn/inspect.hpp: what a batch-normalization layer holds, and what a user needs
// to be warned about before running it in inference mode (`bnorm inspect` prints this).
//
//   auto report = nn::inspect_batch_norm(model);      // one entry per BN layer, model order
//   for (const auto& layer : report)
//     for (const auto& w : layer.warnings) std::puts(w.message.c_str());
//
// Warnings (BatchNormWarning::kind):
//   initial_statistics  moving_mean and moving_variance are exactly the values their
//                       initializers give (mean 0, variance 1 by default): in inference
//                       the layer then normalizes with those, not with the data's
//                       statistics.
//   never_updated       the layer is trainable but its statistics were never updated:
//                       an update counter says 0, or (no counter) they are still at their
//                       initial values. A training step that updates them moves them
//                       away from 0 / 1 (an exact return to 0.0f / 1.0f in every channel
//                       is not a practical case).
//   short_memory        the moving average still remembers its initial value:
//                       momentum^updates (Keras convention, the weight of the initial
//                       value after that many updates) above InspectOptions::
//                       memory_threshold. Needs the number of updates: PyTorch-convention
//                       layers count them (num_batches_tracked); Keras's
//                       BatchNormalization does NOT (neither does Keras), so for it the
//                       count is known only as 0 when the statistics are still at their
//                       initial values, or estimated from InspectOptions::training_steps
//                       (e.g. the optimizer's iteration count) when given.
//   non_finite          NaN or infinite values in moving_mean, moving_variance, gamma or
//                       beta: inference outputs will be NaN.
//   negative_variance   moving_variance below 0: variance + epsilon may be <= 0, and the
//                       inverse square root is then NaN or infinite.
// Reading never changes the layer. A layer that was never built has no statistics: it
// is reported with built = false and no summaries or warnings.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/torch_batch_norm.hpp"

namespace bnorm::nn {

// min / mean / max over the finite elements (NaN when none), and how many are not finite.
struct ValueSummary {
  std::int64_t count = 0;       // elements
  std::int64_t non_finite = 0;  // NaN or +-inf, left out of min/mean/max
  double min = 0.0, mean = 0.0, max = 0.0;
};
ValueSummary summarize(std::span<const float> values);

enum class BatchNormWarningKind { initial_statistics, never_updated, short_memory, non_finite, negative_variance };
// "initial-statistics", "never-updated", "short-memory", "non-finite", "negative-variance".
std::string to_string(BatchNormWarningKind kind);

struct BatchNormWarning {
  BatchNormWarningKind kind;
  std::string message;  // one sentence, says what it means and what to do
};

enum class MomentumConvention {
  keras,    // momentum = weight of the OLD moving value (BatchNormalization)
  pytorch,  // momentum = weight of the NEW batch (TorchBatchNorm)
};
// "keras", "pytorch".
std::string to_string(MomentumConvention convention);

// How the number of updates was obtained.
enum class UpdateCount {
  unknown,    // the layer does not count them and nothing allows an estimate
  counted,    // the layer's own counter (PyTorch num_batches_tracked)
  initial,    // 0, because the statistics are still at their initial values
  // InspectOptions::training_steps (e.g. the optimizer's iteration count): an estimate,
  // not a bound. Frozen periods do not update (fewer), and recompiling a Keras model
  // (the fine-tuning recipe: freeze, compile, fit again) restarts the optimizer's count
  // while the statistics keep the earlier updates (more).
  estimated,
};
// "unknown", "counted", "initial values", "estimated from optimizer iterations".
std::string to_string(UpdateCount how);

struct BatchNormInspection {
  std::string name;
  std::string class_name;  // "BatchNormalization" or "TorchBatchNorm"
  MomentumConvention convention = MomentumConvention::keras;
  std::vector<int> axis;         // as configured (Keras: may be negative); PyTorch: {1}
  std::int64_t channels = 0;     // normalized features (0 when not built)
  std::optional<double> momentum;  // in the layer's convention; nullopt: PyTorch cumulative average
  // Weight of the old moving value per update (the Keras momentum; 1 - PyTorch momentum);
  // nullopt for a cumulative average (whose first update replaces the initial value).
  std::optional<double> retention;
  double epsilon = 0.0;
  bool center = true, scale = true;  // PyTorch: affine for both
  bool trainable = true;             // frozen = !trainable (PyTorch: track_running_stats)
  bool built = false;
  std::optional<std::int64_t> updates;  // see update_count
  UpdateCount update_count = UpdateCount::unknown;
  // momentum^updates: the share of the initial value still in the moving average (0 for
  // a cumulative average after one update); nullopt when the updates are unknown.
  std::optional<double> initial_weight;
  // Statistics exactly equal to their initializers' values; nullopt when the
  // initializer is random (not reproducible here).
  std::optional<bool> at_initial_values;
  ValueSummary moving_mean, moving_variance;
  std::optional<ValueSummary> gamma, beta;
  std::vector<BatchNormWarning> warnings;
};

struct InspectOptions {
  // short_memory is reported when momentum^updates is above this.
  double memory_threshold = 0.01;
  // Training steps the model is known to have taken (e.g. its optimizer's iterations):
  // the estimated updates of a trainable Keras layer whose statistics moved.
  std::optional<std::int64_t> training_steps{};
};

// Every BatchNormalization layer of the model, in model order (a shared layer once).
std::vector<BatchNormInspection> inspect_batch_norm(const Model& model, const InspectOptions& options = {});
BatchNormInspection inspect_batch_norm(const BatchNormalization& layer, const InspectOptions& options = {});
// A PyTorch-convention module (it has no name of its own: give one).
BatchNormInspection inspect_batch_norm(const TorchBatchNorm& module, const std::string& name,
                                       const InspectOptions& options = {});

// Updates after which momentum^updates <= threshold: ceil(log(threshold) / log(retention));
// nullopt when retention is 1 (never forgets); 1 when retention is 0.
std::optional<std::int64_t> updates_to_forget(double retention, double threshold);

}  // namespace bnorm::nn
