// bnorm/nn/recalibrate.hpp: recalibration ("precise batch normalization"): replace the
// moving statistics of every batch-normalization layer by the exact population
// statistics of its input over a dataset.
//
//   nn::RecalibrationReport r = nn::recalibrate(model, x_train, {.batch_size = 256});
// computes, in Keras terms:
//   for bn in batch-normalization layers of model, in order:
//       z = keras.Model(model.input, bn.input).predict(x_train)   # inference mode
//       bn.moving_mean = z.mean(reduced axes)
//       bn.moving_variance = z.var(reduced axes)                  # / (N-1) for Keras 2 fused
//
// Why. A moving average with momentum 0.99 weighs about the last 100 batches, taken while
// the weights were still changing, and starts from (0, 1): after a short training, or
// with a large momentum, inference normalizes with stale statistics (Ioffe & Szegedy 2015
// used population statistics for inference; Wu & Johnson 2021, "Rethinking 'Batch' in
// BatchNorm", call recomputing them "precise BN"). Recalibration fixes the statistics
// without changing any trained weight.
//
// Algorithm. For each BatchNormalization layer of model.layers(), in order: the model runs
// in INFERENCE mode on x, in batches of `batch_size` samples, up to that layer's input
// (Model::layer_input), so each layer sees its input normalized by the layers before it
// with their already-recalibrated statistics (what inference will feed it). The per-channel
// moments of each batch (count, mean, M2 = sum (x - mean)^2, in double: the reference
// kernel's two passes) are merged with Chan's exact formula (ChannelMoments), so the result
// does not depend on the batch size beyond double rounding: the stored values are within
// a relative 1e-6 of a double two-pass computation over the whole layer input (tested,
// batch sizes that do not divide the sample count, data at 1e3 times its spread). One
// pass of the layers before each batch-normalization layer over the data: L passes for L
// such layers, memory bounded by one batch's activations.
//
// What is stored, with N = the samples of x times the size of the layer's reduced axes
// other than the batch (elements per channel), mean_c = (1/N) sum x, M2_c = sum (x - mean_c)^2:
//   moving_mean_c     = mean_c                        (every convention)
//   moving_variance_c = M2_c / N        Keras 3; Keras 2 non-fused (biased)
//   moving_variance_c = M2_c / (N - 1)  Keras 2 fused; PyTorch running_var (unbiased)
// i.e. the value the layer's own moving average converges to when every batch is the
// whole population: the Keras 3 and Keras 2 non-fused updates average biased batch
// variances, the Keras 2 fused kernel and PyTorch average Bessel-corrected N/(N-1) ones
// (docs/conventions.md, "Stored variance"; N - 1 taken as 1 when N == 1, as the fused
// kernel does). Inference then normalizes exactly as training mode would on the whole of
// x at once (Keras 3, Keras 2 non-fused), or with the variance larger by N/(N-1).
// Float rounding: the double statistics are rounded once to float.
//
// Frozen layers (trainable() false) are recalibrated too by default: inference uses their
// statistics like any other layer's, and Keras's fine-tuning rule (a frozen layer runs in
// inference mode) only stops TRAINING from moving them. skip_frozen = true leaves them as
// they are (e.g. to keep a pretrained backbone's statistics while recalibrating a new
// head); the layers after them then see inputs normalized with those kept statistics.
// Nothing else changes: gamma, beta, the other layers' weights, the optimizer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bnorm/core/tensor.hpp"
#include "bnorm/nn/channel_moments.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/torch_batch_norm.hpp"

namespace bnorm::nn {

struct RecalibrateOptions {
  // Samples per inference pass: memory and speed only (the batches' moments merge
  // exactly; the layers before run in inference mode, where a sample's activations do
  // not depend on the others). ArgumentError when < 1.
  std::int64_t batch_size = 256;
  // Leave layers with trainable() false unchanged (reported as skipped).
  bool skip_frozen = false;
};

// The variance a layer stores for population moments: M2 / N, or M2 / (N - 1) with
// N - 1 taken as 1 when N <= 1 (the fused kernel's rule; M2 is then 0).
enum class StoredVariance { biased, unbiased };
// Per channel, from moments with count >= 0 (0 for count 0).
std::vector<double> stored_variance(const ChannelMoments& moments, StoredVariance kind);

// What recalibration did to one batch-normalization layer.
struct LayerRecalibration {
  std::string name;
  std::size_t index = 0;      // position in model.layers()
  bool recalibrated = false;  // false: skipped (frozen, with skip_frozen)
  StoredVariance variance_kind = StoredVariance::biased;
  double epsilon = 0.0;       // the layer's epsilon (to express shifts in its standard deviations)
  ChannelMoments moments{};  // (C) population moments of the layer's input; empty when skipped
  // Parameter shape (C), or Keras 2's broadcast shape for several axes. Equal when skipped.
  Tensor old_mean, old_variance;  // the moving statistics before
  Tensor new_mean, new_variance;  // after: mean and stored_variance(moments), rounded to float
};

struct RecalibrationReport {
  std::int64_t samples = 0;                // rows of x
  std::vector<LayerRecalibration> layers;  // every BatchNormalization layer, in model order
};

// Recalibrates every BatchNormalization layer of `model` on the samples x (rows: the
// model's input shape, as for predict). Returns what changed; a model without
// batch-normalization layers is returned unchanged with an empty report.
//
// Errors (the model is then exactly as before: statistics set so far are restored):
//   ArgumentError: batch_size < 1; x with no sample (rank 0 or dim 0 == 0); a
//     batch-normalization layer that appears twice in model.layers() (shared: its two
//     inputs have two populations).
//   ShapeError: x's shape does not fit the model's input (from the model), or a layer's
//     input does not fit its built channels.
//   StateError: a batch-normalization layer not built yet (there is no trained
//     statistic to replace: call or fit the model first).
//   NumericalError: a layer's statistics are not finite in float (a NaN or infinity in x,
//     or activations that overflow), naming the layer and the channel. Whatever the
//     layer's nan_policy: recalibration never stores a non-finite statistic.
RecalibrationReport recalibrate(Model& model, const Tensor& x, const RecalibrateOptions& options = {});

// The PyTorch convention, for a TorchBatchNorm used outside a model: x is the module's
// input over the population (N, C, ...), channels on dim 1. Sets running_mean = mean and
// running_var = M2 / (N - 1) (unbiased, as PyTorch's running average stores), N = count
// of elements per channel; weight, bias, num_batches_tracked, momentum and mode are left
// alone. x is read in slices of batch_size rows (options.skip_frozen does not apply).
// Errors, the module unchanged: ShapeError for an input the module does not accept (rank,
// channels) or fewer than 2 elements per channel (PyTorch refuses to train on one);
// StateError for a lazy module not yet initialized or one without running statistics
// (track_running_stats false at construction); ArgumentError for batch_size < 1;
// NumericalError for non-finite statistics.
LayerRecalibration recalibrate(TorchBatchNorm& module, const Tensor& x,
                               const RecalibrateOptions& options = {});

// The population moments of x per channel, channels on `channel_axes` (non-negative,
// distinct; flattened row-major as a layer's parameter), reduced over every other axis,
// read in slices of `batch_size` rows of axis 0 merged exactly. With axis 0 among the
// channel axes there is no batch axis to slice: x is taken whole. The building block of
// recalibrate. ArgumentError for bad axes or batch_size < 1.
ChannelMoments population_moments(const Tensor& x, const std::vector<int>& channel_axes,
                                  std::int64_t batch_size = 256);

}  // namespace bnorm::nn
