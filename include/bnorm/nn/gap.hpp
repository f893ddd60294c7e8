// bnorm/nn/gap.hpp: the gap between training and inference of a model's batch
// normalization, measured on data (`bnorm inspect MODEL --data X` prints it).
//
//   nn::GapReport g = nn::measure_gap(model, x, {.batch_size = 256});
//   for (const auto& l : g.layers) std::printf("%s %g\n", l.name.c_str(), l.max_abs_shift);
//
// Per BatchNormalization layer and channel c, with the layer's input taken as inference
// feeds it (the model as it is, every layer in inference mode, on all of x; the same
// moments as recalibrate() computes, but without changing anything):
//   population_mean_c     = mean of the input over x            (ChannelMoments, double)
//   population_variance_c = the variance the layer would store for that population:
//                           M2 / N, or M2 / (N - 1) for a Keras 2 fused layer
//                           (stored_variance, as recalibrate stores)
//   shift_c          = (population_mean_c - moving_mean_c) / sqrt(population_variance_c + epsilon)
//                      the error of the inference-mode mean, in standard deviations of
//                      the input (0 after recalibrate on the same x)
//   variance_ratio_c = (population_variance_c + epsilon) / (moving_variance_c + epsilon)
//                      the factor by which inference's variance is off (1 after
//                      recalibrate); epsilon on both sides because the normalization
//                      divides by sqrt(variance + epsilon), and so that a dead channel
//                      gives a finite ratio.
// Flags per channel (thresholds in GapOptions, defaults in brackets):
//   stale      |shift_c| > shift_threshold [0.5], or variance_ratio_c outside
//              [ratio_low, ratio_high] [0.5, 2]: the moving statistics do not describe x
//   dead       population_variance_c <= dead_variance [1e-6, absolute]: the channel is
//              (nearly) constant on x; its output is beta plus noise amplified by
//              1/sqrt(epsilon)
//   collapsed  the layer has a scale and |gamma_c| < collapsed_gamma [1e-3]: the channel
//              outputs (nearly) beta whatever its input
// Per layer, `unconverged`: inspect_batch_norm (bnorm/nn/inspect.hpp) reports
// initial_statistics, never_updated or short_memory for it (momentum^updates above
// memory_threshold, updates known or estimated from training_steps).
//
// Model outputs, training against inference: x is cut in batches of batch_size rows
// (the last one shorter); on each batch the model runs once in inference mode and once
// with its batch-normalization layers in TRAINING mode (batch statistics; frozen layers
// stay in inference mode, as in Keras) and every other layer in inference mode (so a
// Dropout does not count as a gap). The training-mode pass collects its statistic updates
// and discards them: measure_gap leaves the model exactly as it was (tested). Over all
// outputs y (inference) and t (training):
//   mean_abs_difference = mean |t - y|, max_abs_difference = max |t - y|
//   output_spread       = standard deviation of y over all its values
//   relative_difference = mean_abs_difference / output_spread (NaN when the spread is 0)
//   argmax_agreement    = the fraction of rows whose largest value is at the same index
//                         in t and y (rows of more than one value only)
// The training-mode outputs depend on batch_size (the batch statistics do); the
// population statistics do not (the batches' moments merge exactly).
//
// Errors (nothing changed): ArgumentError for batch_size < 1, x without a sample, a
// batch-normalization layer appearing twice (shared); ShapeError for x not fitting the
// model; StateError for a batch-normalization layer not built yet. Non-finite values
// in x give non-finite statistics (the command line refuses such data first).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "bnorm/core/tensor.hpp"
#include "bnorm/nn/callbacks.hpp"
#include "bnorm/nn/channel_moments.hpp"
#include "bnorm/nn/model.hpp"

namespace bnorm::nn {

struct GapOptions {
  std::int64_t batch_size = 256;                 // samples per pass; ArgumentError when < 1
  double shift_threshold = 0.5;                  // stale: |shift| above this
  double ratio_low = 0.5, ratio_high = 2.0;      // stale: variance ratio outside [low, high]
  double dead_variance = 1e-6;                   // dead: population variance at or below this
  double collapsed_gamma = 1e-3;                 // collapsed: |gamma| below this
  double memory_threshold = 0.01;                // unconverged: momentum^updates above this
  std::optional<std::int64_t> training_steps{};  // as InspectOptions::training_steps
};

struct LayerGap {
  std::string name;
  std::size_t index = 0;  // position in model.layers()
  std::int64_t channels = 0;
  double epsilon = 0.0;
  ChannelMoments moments{};  // (C) population moments of the layer's input over x
  // (C) each, channel order of the layer's parameters (flattened for several axes).
  std::vector<double> population_mean, population_variance;
  std::vector<double> moving_mean, moving_variance;
  std::vector<double> shift, variance_ratio;
  std::vector<bool> stale, dead, collapsed;
  std::int64_t stale_count = 0, dead_count = 0, collapsed_count = 0;
  double mean_abs_shift = 0.0, max_abs_shift = 0.0;
  double ratio_min = 0.0, ratio_max = 0.0;
  bool unconverged = false;
  std::string unconverged_reason;  // the inspect warning's message, empty when converged
};

struct OutputGap {
  std::int64_t rows = 0, values = 0;
  double mean_abs_difference = 0.0, max_abs_difference = 0.0;
  double output_spread = 0.0, relative_difference = 0.0;
  std::optional<double> argmax_agreement;  // rows of more than one value only
};

struct GapReport {
  std::int64_t samples = 0, batch_size = 0;
  std::vector<LayerGap> layers;  // every BatchNormalization layer, in model order
  OutputGap outputs;
};

// Measures the gap on x (rows: the model's input shape, as for predict). Non-const
// because layers are called, but the model is left unchanged. See above.
GapReport measure_gap(Model& model, const Tensor& x, const GapOptions& options = {});

// The gap during training: a Callback for Model::fit that calls measure_gap(model, x,
// options.gap) at the end of every epoch and records a GapEpoch.
//
//   auto monitor = std::make_shared<nn::GapMonitor>(x_monitor, nn::GapMonitorOptions{});
//   model.fit(x, y, {.epochs = 10, .callbacks = {monitor}});
//   for (const auto& e : monitor->history()) std::printf("%d %g\n", e.epoch, e.output_gap);
//
// Warnings, at most one of each kind per epoch, each one line "epoch E: ..." kept in
// warnings() and passed to options.sink (default: "bnorm: warning: " + line on stderr):
//   growing gap  output_gap > gap_floor and output_gap > growth_factor * the previous
//                epoch's output_gap ("the train/inference gap grew from X to Y")
//   stale layer  a layer's max_abs_shift > options.gap.shift_threshold (the layer with
//                the largest one is named)
// x is the caller's choice (a subset of held-out data, e.g. 1000 samples, keeps it cheap).
// The model is left exactly as it was (measure_gap's guarantee) and fit's results do not
// change (tested bitwise). History accumulates over several fits; the records' epoch is
// 1-based (fit's epoch index + 1, as the progress bar shows it). Errors: measure_gap's,
// thrown from on_epoch_end; ArgumentError from the constructor for x without a sample,
// growth_factor < 1 or a negative gap_floor.
struct GapMonitorOptions {
  GapOptions gap{};            // batch size and thresholds of measure_gap
  double growth_factor = 1.5;  // growing gap: output_gap above this times the previous one
  double gap_floor = 0.05;     // ... and above this (relative_difference)
  std::function<void(const std::string&)> sink{};  // empty: stderr, "bnorm: warning: " prefix
};

struct LayerGapSummary {
  std::string name;
  double mean_abs_shift = 0.0, max_abs_shift = 0.0;
  double ratio_min = 0.0, ratio_max = 0.0;
  std::int64_t stale_count = 0;
};

struct GapEpoch {
  int epoch = 0;                        // 1-based
  std::vector<LayerGapSummary> layers;  // every BatchNormalization layer, in model order
  double output_gap = 0.0;              // outputs.relative_difference
  double mean_abs_difference = 0.0;     // outputs.mean_abs_difference
};

class GapMonitor : public Callback {
 public:
  explicit GapMonitor(Tensor x, GapMonitorOptions options = {});
  void on_epoch_end(Model& model, int epoch, const Logs& logs) override;
  const std::vector<GapEpoch>& history() const noexcept { return history_; }
  const std::vector<std::string>& warnings() const noexcept { return warnings_; }

 private:
  void warn(const std::string& line);
  Tensor x_;
  GapMonitorOptions options_;
  std::vector<GapEpoch> history_;
  std::vector<std::string> warnings_;
};

}  // namespace bnorm::nn
