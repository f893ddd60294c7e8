#include "bnorm/nn/recalibrate.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <utility>

#include "bnorm/core/error.hpp"
#include "bnorm/kernels/batch_norm.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "channel_view.hpp"
#include "dataset_passes.hpp"

namespace bnorm::nn {

using detail::distinct_built_batch_norms;
using detail::require_batch_size;
using detail::require_samples;
using detail::rows;

namespace {

// The moments of all of x, channels on `axes` (normalized): the reference kernel's two
// passes in double, on x in the kernels' (N, C, S) view.
ChannelMoments moments_of(const Tensor& x, const std::vector<int>& axes) {
  const detail::ChannelView view = detail::channel_view(x.shape(), axes);
  const Tensor xv = detail::in_view(x, view);
  const auto c = static_cast<std::size_t>(view.dims.C);
  std::vector<float> mean(c), var(c);       // (C) the float results, unused
  std::vector<double> mean_d(c), var_d(c);  // (C)
  kernels::moments(xv.data(), view.dims, mean.data(), var.data(), mean_d.data(), var_d.data(),
                   kernels::Impl::reference);
  return ChannelMoments::from_mean_var(mean_d, var_d, view.dims.count());
}

// The float tensor of `shape` holding `values`; NumericalError naming `what` and the first
// channel whose value is not finite once rounded to float.
Tensor finite_float(const std::vector<double>& values, const Shape& shape, const std::string& where,
                    const std::string& what) {
  Tensor t(shape);
  for (std::size_t c = 0; c < values.size(); ++c) {
    t[static_cast<std::int64_t>(c)] = static_cast<float>(values[c]);
    if (!std::isfinite(t[static_cast<std::int64_t>(c)])) {
      throw NumericalError(
          where, what,
          "finite statistics (is every sample finite, and do the activations stay within float range?)",
          detail::format_number(values[c]) + " in channel " + std::to_string(c));
    }
  }
  return t;
}

}  // namespace

std::vector<double> stored_variance(const ChannelMoments& moments, StoredVariance kind) {
  std::vector<double> v(moments.m2.size(), 0.0);
  if (moments.count == 0) return v;
  const double n = static_cast<double>(moments.count);
  const double divisor = kind == StoredVariance::biased ? n : (moments.count > 1 ? n - 1.0 : 1.0);
  for (std::size_t c = 0; c < v.size(); ++c) v[c] = moments.m2[c] / divisor;
  return v;
}

ChannelMoments population_moments(const Tensor& x, const std::vector<int>& channel_axes,
                                  std::int64_t batch_size) {
  const std::string where = "population_moments";
  require_batch_size(batch_size, where);
  if (x.rank() < 1) throw ShapeError(where, "x", "a tensor of rank >= 1", "rank 0");
  const std::vector<int> axes = detail::normalize_axes(channel_axes, x.rank(), where, "channel_axes");
  const std::int64_t n = x.dim(0);
  if (std::find(axes.begin(), axes.end(), 0) != axes.end() || n <= batch_size) return moments_of(x, axes);
  ChannelMoments total;
  for (std::int64_t begin = 0; begin < n; begin += batch_size) {
    total.merge(moments_of(rows(x, begin, std::min(n, begin + batch_size)), axes));
  }
  return total;
}

RecalibrationReport recalibrate(Model& model, const Tensor& x, const RecalibrateOptions& options) {
  const std::string where = "recalibrate(Model '" + model.name() + "')";
  require_batch_size(options.batch_size, where);
  require_samples(x, where);
  // The batch-normalization layers, in order; each must be built, and appear once.
  const auto layers = distinct_built_batch_norms(model, where);

  RecalibrationReport report;
  std::vector<std::pair<BatchNormalization*, std::array<Tensor, 3>>> renorm_before;  // restored on failure
  report.samples = x.dim(0);
  const std::int64_t n = x.dim(0);
  try {
    for (const auto& [path, bn] : layers) {
      const std::string layer = "BatchNormalization '" + bn->name() + "'";
      LayerRecalibration r;
      r.name = bn->name();
      r.index = path.front();
      r.epsilon = bn->options().epsilon;
      r.old_mean = bn->moving_mean()->value;
      r.old_variance = bn->moving_variance()->value;
      r.variance_kind = bn->options().version == KerasVersion::keras2 && bn->fused()
                            ? StoredVariance::unbiased
                            : StoredVariance::biased;
      if (options.skip_frozen && !bn->trainable()) {
        r.new_mean = r.old_mean;
        r.new_variance = r.old_variance;
        report.layers.push_back(std::move(r));
        continue;
      }
      const Shape& param = r.old_mean.shape();
      ChannelMoments total(param.numel());
      for (std::int64_t begin = 0; begin < n; begin += options.batch_size) {
        const Tensor input =
            model.layer_input(rows(x, begin, std::min(n, begin + options.batch_size)), path);
        bn->check_input(input);  // the shape the layer was built for, as its own call checks
        total.merge(moments_of(input, bn->axes()));
      }
      r.moments = std::move(total);
      r.new_mean = finite_float(r.moments.mean, param, where, layer + " moving_mean");
      r.new_variance =
          finite_float(stored_variance(r.moments, r.variance_kind), param, where, layer + " moving_variance");
      r.recalibrated = true;
      report.layers.push_back(std::move(r));
      // Assigned now: the layers after this one see its new statistics.
      bn->moving_mean()->value = report.layers.back().new_mean;
      bn->moving_variance()->value = report.layers.back().new_variance;
      // Batch renormalization keeps the variance as moving_stddev (moving_variance is
      // derived from it at every update) and its own averages of the batch statistics:
      // all set to the population's, so that training continues from them.
      if (bn->moving_stddev()) {
        renorm_before.push_back({bn, {bn->moving_stddev()->value, bn->renorm_mean()->value, bn->renorm_stddev()->value}});
        Tensor stddev = report.layers.back().new_variance;
        for (std::int64_t c = 0; c < stddev.numel(); ++c) {
          stddev[c] = static_cast<float>(std::sqrt(static_cast<double>(stddev[c]) + bn->options().epsilon));
        }
        bn->moving_stddev()->value = stddev;
        bn->renorm_mean()->value = report.layers.back().new_mean;
        bn->renorm_stddev()->value = stddev;
      }
    }
  } catch (...) {
    for (auto& [bn, values] : renorm_before) {
      bn->moving_stddev()->value = values[0];
      bn->renorm_mean()->value = values[1];
      bn->renorm_stddev()->value = values[2];
    }
    // report.layers[i] is layers[i] (skipped ones hold their own values); the copies
    // reuse the storage of same-shaped tensors.
    for (std::size_t i = 0; i < report.layers.size(); ++i) {
      BatchNormalization* bn = layers[i].second;
      bn->moving_mean()->value = report.layers[i].old_mean;
      bn->moving_variance()->value = report.layers[i].old_variance;
    }
    throw;
  }
  return report;
}

LayerRecalibration recalibrate(TorchBatchNorm& module, const Tensor& x, const RecalibrateOptions& options) {
  const std::string where = "recalibrate(TorchBatchNorm)";
  require_batch_size(options.batch_size, where);
  module.check_input(x);
  if (!module.initialized()) {
    throw StateError(where, "module", "an initialized module (call a lazy module once first)",
                     "a lazy module without num_features");
  }
  if (!module.has_running_stats()) {
    throw StateError(where, "module",
                     "a module with running statistics (track_running_stats at construction)",
                     "a module without running_mean and running_var");
  }
  LayerRecalibration r;
  r.recalibrated = true;
  r.variance_kind = StoredVariance::unbiased;
  r.epsilon = module.eps();
  r.old_mean = *module.running_mean();
  r.old_variance = *module.running_var();
  r.moments = population_moments(x, {1}, options.batch_size);
  if (r.moments.count < 2) {
    throw ShapeError(where, "x", "more than 1 value per channel (the unbiased variance divides by N - 1)",
                     "input size " + x.shape().str());
  }
  const Shape& param = r.old_mean.shape();
  r.new_mean = finite_float(r.moments.mean, param, where, "running_mean");
  r.new_variance =
      finite_float(stored_variance(r.moments, StoredVariance::unbiased), param, where, "running_var");
  *module.running_mean() = r.new_mean;
  *module.running_var() = r.new_variance;
  return r;
}

}  // namespace bnorm::nn
