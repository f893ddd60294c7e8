#include "bnorm/nn/gap.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/inspect.hpp"
#include "bnorm/nn/recalibrate.hpp"
#include "bnorm/nn/updates.hpp"
#include "channel_view.hpp"
#include "dataset_passes.hpp"

namespace bnorm::nn {

namespace {

// Takes the statistic updates of a training-mode call and drops them: the model's
// moving statistics stay as they were.
class DiscardUpdates : public UpdateSink {
 public:
  void record(BatchNormalization&, const StatisticsUpdate&) override {}
};

}  // namespace

GapReport measure_gap(Model& model, const Tensor& x, const GapOptions& options) {
  const std::string where = "measure_gap(Model '" + model.name() + "')";
  detail::require_batch_size(options.batch_size, where);
  detail::require_samples(x, where);
  // The passes below run the layers one after the other: a chain.
  for (std::size_t k = 0; k < model.nodes().size(); ++k) {
    const auto& node = model.nodes()[k];
    if (node.inputs.size() != 1 || node.inputs[0] != static_cast<int>(k) || k >= model.layers().size() ||
        model.layers()[k] != node.layer) {
      throw ArgumentError(where, "model", "a model whose layers form one chain (graphs are not measured yet)",
                          "a graph with a branch or merge at layer '" + node.layer->name() + "'");
    }
  }
  // layer index -> position in report.layers (or -1 for other layers).
  const auto& layers = model.layers();
  std::vector<int> slot(layers.size(), -1);
  std::vector<BatchNormalization*> bns;
  for (const auto& [path, bn] : detail::distinct_built_batch_norms(model, where)) {
    if (path.size() != 1) {
      throw ArgumentError(where, "BatchNormalization '" + bn->name() + "'", "a layer of the model itself",
                          "a layer of a nested model (not measured yet)");
    }
    const std::size_t index = path.front();
    slot[index] = static_cast<int>(bns.size());
    bns.push_back(bn);
  }

  GapReport report;
  report.samples = x.dim(0);
  report.batch_size = options.batch_size;
  std::vector<ChannelMoments> moments(bns.size());
  for (std::size_t k = 0; k < bns.size(); ++k)
    moments[k] = ChannelMoments(bns[k]->moving_mean()->value.numel());

  // One pass per batch in inference mode (the population moments of every layer's input
  // and the inference outputs), one with batch statistics (the training-mode outputs).
  double sum_abs = 0.0, max_abs = 0.0;
  double y_mean = 0.0, y_m2 = 0.0;  // Welford over every output value
  std::int64_t values = 0, rows_out = 0, agree = 0, width = 0;
  DiscardUpdates discard;
  const std::int64_t n = x.dim(0);
  for (std::int64_t begin = 0; begin < n; begin += options.batch_size) {
    const Tensor batch = detail::rows(x, begin, std::min(n, begin + options.batch_size));
    Tensor y = model.layer_input(batch, 0);  // checks x against the model's input
    for (std::size_t i = 0; i < layers.size(); ++i) {
      if (slot[i] >= 0) {
        BatchNormalization* bn = bns[static_cast<std::size_t>(slot[i])];
        bn->check_input(y);  // the shape the layer was built for, as its own call checks
        ChannelMoments m = population_moments(y, bn->axes(), std::max<std::int64_t>(1, y.dim(0)));
        moments[static_cast<std::size_t>(slot[i])].merge(m);
      }
      y = layers[i]->forward(y, false, nullptr, nullptr);
    }
    Tensor t = batch;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      t = layers[i]->forward(t, slot[i] >= 0, nullptr, slot[i] >= 0 ? &discard : nullptr);
    }
    const std::int64_t r = y.rank() == 0 ? 1 : y.dim(0);
    width = r > 0 ? y.numel() / r : 0;
    for (std::int64_t j = 0; j < y.numel(); ++j) {
      const double d = std::abs(static_cast<double>(t[j]) - static_cast<double>(y[j]));
      sum_abs += d;
      max_abs = std::max(max_abs, d);
      ++values;
      const double delta = static_cast<double>(y[j]) - y_mean;
      y_mean += delta / static_cast<double>(values);
      y_m2 += delta * (static_cast<double>(y[j]) - y_mean);
    }
    if (width > 1) {
      for (std::int64_t row = 0; row < r; ++row) {
        const float* py = y.data() + row * width;
        const float* pt = t.data() + row * width;
        agree += std::max_element(py, py + width) - py == std::max_element(pt, pt + width) - pt;
      }
    }
    rows_out += r;
  }
  OutputGap& o = report.outputs;
  o.rows = rows_out;
  o.values = values;
  o.mean_abs_difference = values ? sum_abs / static_cast<double>(values) : 0.0;
  o.max_abs_difference = max_abs;
  o.output_spread = values ? std::sqrt(y_m2 / static_cast<double>(values)) : 0.0;
  o.relative_difference = o.output_spread > 0.0 ? o.mean_abs_difference / o.output_spread
                                                : std::numeric_limits<double>::quiet_NaN();
  if (width > 1) o.argmax_agreement = static_cast<double>(agree) / static_cast<double>(rows_out);

  const InspectOptions inspect{.memory_threshold = options.memory_threshold,
                               .training_steps = options.training_steps};
  for (std::size_t k = 0; k < bns.size(); ++k) {
    const BatchNormalization& bn = *bns[k];
    LayerGap g;
    g.name = bn.name();
    g.index =
        static_cast<std::size_t>(std::find(slot.begin(), slot.end(), static_cast<int>(k)) - slot.begin());
    g.epsilon = bn.options().epsilon;
    g.moments = std::move(moments[k]);
    g.channels = g.moments.channels();
    const auto kind = bn.options().version == KerasVersion::keras2 && bn.fused() ? StoredVariance::unbiased
                                                                                 : StoredVariance::biased;
    g.population_mean = g.moments.mean;
    g.population_variance = stored_variance(g.moments, kind);
    const Tensor& mm = bn.moving_mean()->value;
    const Tensor& mv = bn.moving_variance()->value;
    const Variable* gamma = bn.gamma();
    const auto c = static_cast<std::size_t>(g.channels);
    g.moving_mean.resize(c), g.moving_variance.resize(c), g.shift.resize(c), g.variance_ratio.resize(c);
    g.stale.assign(c, false), g.dead.assign(c, false), g.collapsed.assign(c, false);
    g.ratio_min = c ? std::numeric_limits<double>::infinity() : 0.0;
    g.ratio_max = c ? -std::numeric_limits<double>::infinity() : 0.0;
    for (std::size_t ch = 0; ch < c; ++ch) {
      const auto i = static_cast<std::int64_t>(ch);
      g.moving_mean[ch] = mm[i];
      g.moving_variance[ch] = mv[i];
      const double pv = g.population_variance[ch];
      g.shift[ch] = (g.population_mean[ch] - g.moving_mean[ch]) / std::sqrt(pv + g.epsilon);
      g.variance_ratio[ch] = (pv + g.epsilon) / (g.moving_variance[ch] + g.epsilon);
      const double a = std::abs(g.shift[ch]);
      g.stale[ch] = a > options.shift_threshold || !(g.variance_ratio[ch] >= options.ratio_low) ||
                    !(g.variance_ratio[ch] <= options.ratio_high);
      g.dead[ch] = pv <= options.dead_variance;
      g.collapsed[ch] = gamma != nullptr && std::abs(gamma->value[i]) < options.collapsed_gamma;
      g.stale_count += g.stale[ch], g.dead_count += g.dead[ch], g.collapsed_count += g.collapsed[ch];
      g.mean_abs_shift += a / static_cast<double>(c);
      g.max_abs_shift = std::max(g.max_abs_shift, a);
      g.ratio_min = std::min(g.ratio_min, g.variance_ratio[ch]);
      g.ratio_max = std::max(g.ratio_max, g.variance_ratio[ch]);
    }
    for (const auto& w : inspect_batch_norm(bn, inspect).warnings) {
      if (w.kind == BatchNormWarningKind::initial_statistics ||
          w.kind == BatchNormWarningKind::never_updated || w.kind == BatchNormWarningKind::short_memory) {
        g.unconverged = true;
        if (g.unconverged_reason.empty()) g.unconverged_reason = w.message;
      }
    }
    report.layers.push_back(std::move(g));
  }
  return report;
}

}  // namespace bnorm::nn

namespace bnorm::nn {

GapMonitor::GapMonitor(Tensor x, GapMonitorOptions options) : x_(std::move(x)), options_(std::move(options)) {
  const std::string where = "GapMonitor";
  if (x_.rank() < 1 || x_.dim(0) < 1) {
    throw ArgumentError(where, "x", "at least one sample", x_.shape().str());
  }
  if (!(options_.growth_factor >= 1.0) || !std::isfinite(options_.growth_factor)) {
    throw ArgumentError(where, "growth_factor", "a finite value >= 1",
                        detail::format_number(options_.growth_factor));
  }
  if (!(options_.gap_floor >= 0.0)) {
    throw ArgumentError(where, "gap_floor", "a value >= 0", detail::format_number(options_.gap_floor));
  }
}

namespace {

std::string short_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

}  // namespace

void GapMonitor::warn(const std::string& line) {
  warnings_.push_back(line);
  if (options_.sink) {
    options_.sink(line);
  } else {
    std::fprintf(stderr, "bnorm: warning: %s\n", line.c_str());
    std::fflush(stderr);
  }
}

void GapMonitor::on_epoch_end(Model& model, int epoch, const Logs&) {
  const GapReport g = measure_gap(model, x_, options_.gap);
  GapEpoch e;
  e.epoch = epoch + 1;
  e.output_gap = g.outputs.relative_difference;
  e.mean_abs_difference = g.outputs.mean_abs_difference;
  const LayerGap* worst = nullptr;
  for (const auto& l : g.layers) {
    e.layers.push_back({.name = l.name,
                        .mean_abs_shift = l.mean_abs_shift,
                        .max_abs_shift = l.max_abs_shift,
                        .ratio_min = l.ratio_min,
                        .ratio_max = l.ratio_max,
                        .stale_count = l.stale_count});
    if (!worst || l.max_abs_shift > worst->max_abs_shift) worst = &l;
  }
  const std::string prefix = "epoch " + std::to_string(e.epoch) + ": ";
  if (!history_.empty()) {
    const double before = history_.back().output_gap;
    if (e.output_gap > options_.gap_floor && e.output_gap > options_.growth_factor * before) {
      warn(prefix + "the train/inference gap grew from " + short_number(before) + " to " +
           short_number(e.output_gap) + " (mean |training - inference output| / output std; more than " +
           short_number(options_.growth_factor) + "x and above " + short_number(options_.gap_floor) + ")");
    }
  }
  if (worst && worst->max_abs_shift > options_.gap.shift_threshold) {
    warn(prefix + "layer '" + worst->name + "' has a moving mean " + short_number(worst->max_abs_shift) +
         " standard deviations off its population mean (" + std::to_string(worst->stale_count) + " of " +
         std::to_string(worst->channels) + " channels stale; threshold " +
         short_number(options_.gap.shift_threshold) + ")");
  }
  history_.push_back(std::move(e));
}

}  // namespace bnorm::nn
