#include "bnorm/nn/inspect.hpp"

#include <cmath>
#include <cstdio>
#include <limits>
#include <set>

#include "bnorm/core/text.hpp"

namespace bnorm::nn {

namespace {

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

// True when every element equals what the initializer writes; nullopt for random ones.
std::optional<bool> equals_initial(const Tensor& value, const Initializer& init) {
  using Kind = Initializer::Kind;
  if (init.kind() != Kind::zeros && init.kind() != Kind::ones && init.kind() != Kind::constant) return std::nullopt;
  Tensor expected(value.shape());
  init.fill(expected);
  return value.vector() == expected.vector();
}

std::string initial_values_text(const Initializer& mean, const Initializer& variance) {
  auto text = [](const Initializer& i) {
    switch (i.kind()) {
      case Initializer::Kind::zeros: return std::string("0");
      case Initializer::Kind::ones: return std::string("1");
      default: return number(static_cast<double>(i.a()));
    }
  };
  return "mean " + text(mean) + ", variance " + text(variance);
}

// The warnings every convention shares, from the filled-in facts of `r`.
void add_warnings(BatchNormInspection& r, const std::string& initial_text, const InspectOptions& options) {
  auto warn = [&](BatchNormWarningKind kind, std::string message) {
    r.warnings.push_back({kind, std::move(message)});
  };
  std::int64_t non_finite = r.moving_mean.non_finite + r.moving_variance.non_finite;
  if (r.gamma) non_finite += r.gamma->non_finite;
  if (r.beta) non_finite += r.beta->non_finite;
  if (non_finite > 0) {
    std::string where;
    auto add = [&](const char* name, const ValueSummary& s) {
      if (s.non_finite) where += std::string(where.empty() ? "" : ", ") + name + " " + std::to_string(s.non_finite);
    };
    add("moving_mean", r.moving_mean);
    add("moving_variance", r.moving_variance);
    if (r.gamma) add("gamma", *r.gamma);
    if (r.beta) add("beta", *r.beta);
    warn(BatchNormWarningKind::non_finite,
         "NaN or infinite values (" + where +
             "): inference outputs will be NaN; the training that wrote them diverged (lower the learning rate)");
  }
  if (r.moving_variance.count > r.moving_variance.non_finite && r.moving_variance.min < 0.0) {
    warn(BatchNormWarningKind::negative_variance,
         "moving_variance has negative values (min " + number(r.moving_variance.min) +
             "): variance + epsilon can be <= 0 and its inverse square root NaN; the file or the code that set "
             "them is wrong");
  }
  if (r.at_initial_values.value_or(false)) {
    warn(BatchNormWarningKind::initial_statistics,
         "the moving statistics are exactly at their initial values (" + initial_text +
             "): in inference this layer normalizes with them instead of the data's statistics");
  }
  const bool never = r.updates ? *r.updates == 0 : false;
  if (r.trainable && never) {
    const std::string how = r.update_count == UpdateCount::counted
                                ? "its update counter is 0"
                                : "estimated: " + r.class_name +
                                      " does not count its updates, and its statistics never moved";
    warn(BatchNormWarningKind::never_updated,
         "trainable but never updated (" + how +
             "): train the model with training=True (fit, train_on_batch) before inference");
  }
  if (r.updates && *r.updates > 0 && r.initial_weight && *r.initial_weight > options.memory_threshold) {
    const auto needed = r.retention ? updates_to_forget(*r.retention, options.memory_threshold) : std::nullopt;
    std::string message = "the moving average has seen " + std::to_string(*r.updates) + " update" +
                          (*r.updates == 1 ? "" : "s") +
                          (r.update_count == UpdateCount::estimated
                               ? " (estimated from the optimizer's iterations; recompiling resets that count, so "
                                 "there may have been more)"
                               : "") +
                          ": momentum^updates = " + number(*r.initial_weight) +
                          " of it is still the initial value (" + initial_text + ")";
    message += needed ? "; it needs about " + count_of(*needed, "update") + " to fall below " +
                            number(options.memory_threshold) + " (train longer, or lower the momentum)"
                      : "; with momentum 1 it never forgets it";
    warn(BatchNormWarningKind::short_memory, message);
  }
}

void set_updates(BatchNormInspection& r, std::optional<std::int64_t> updates, UpdateCount how) {
  r.updates = updates;
  r.update_count = updates ? how : UpdateCount::unknown;
  if (!updates) return;
  if (!r.retention) {
    r.initial_weight = *updates > 0 ? 0.0 : 1.0;  // cumulative average
  } else {
    r.initial_weight = std::pow(*r.retention, static_cast<double>(*updates));
  }
}

}  // namespace

ValueSummary summarize(std::span<const float> values) {
  ValueSummary s;
  s.count = static_cast<std::int64_t>(values.size());
  double sum = 0.0;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  std::int64_t finite = 0;
  for (const float v : values) {
    if (!std::isfinite(v)) {
      ++s.non_finite;
      continue;
    }
    ++finite;
    sum += v;
    lo = std::min(lo, static_cast<double>(v));
    hi = std::max(hi, static_cast<double>(v));
  }
  if (finite == 0) {
    s.min = s.mean = s.max = std::numeric_limits<double>::quiet_NaN();
  } else {
    s.min = lo;
    s.max = hi;
    s.mean = sum / static_cast<double>(finite);
  }
  return s;
}

std::string to_string(BatchNormWarningKind kind) {
  switch (kind) {
    case BatchNormWarningKind::initial_statistics: return "initial-statistics";
    case BatchNormWarningKind::never_updated: return "never-updated";
    case BatchNormWarningKind::short_memory: return "short-memory";
    case BatchNormWarningKind::non_finite: return "non-finite";
    case BatchNormWarningKind::negative_variance: return "negative-variance";
  }
  return "unknown";
}

std::string to_string(MomentumConvention convention) {
  return convention == MomentumConvention::keras ? "keras" : "pytorch";
}

std::string to_string(UpdateCount how) {
  switch (how) {
    case UpdateCount::unknown: return "unknown";
    case UpdateCount::counted: return "counted";
    case UpdateCount::initial: return "initial values";
    case UpdateCount::estimated: return "estimated from optimizer iterations";
  }
  return "unknown";
}

std::optional<std::int64_t> updates_to_forget(double retention, double threshold) {
  if (!(retention < 1.0) || !(threshold > 0.0)) return std::nullopt;
  if (retention <= 0.0 || threshold >= 1.0) return 1;
  return static_cast<std::int64_t>(std::ceil(std::log(threshold) / std::log(retention) - 1e-9));
}

BatchNormInspection inspect_batch_norm(const BatchNormalization& layer, const InspectOptions& options) {
  const BatchNormalizationOptions& o = layer.options();
  BatchNormInspection r;
  r.name = layer.name();
  r.class_name = layer.class_name();
  r.convention = MomentumConvention::keras;
  r.axis = o.axis;
  r.momentum = o.momentum;
  r.retention = o.momentum;
  r.epsilon = o.epsilon;
  r.center = o.center;
  r.scale = o.scale;
  r.trainable = layer.trainable();
  r.built = layer.built();
  if (!r.built) return r;
  const Variable* mm = layer.moving_mean();
  const Variable* mv = layer.moving_variance();
  r.channels = mm->value.numel();
  r.moving_mean = summarize(mm->value.values());
  r.moving_variance = summarize(mv->value.values());
  if (const Variable* g = layer.gamma()) r.gamma = summarize(g->value.values());
  if (const Variable* b = layer.beta()) r.beta = summarize(b->value.values());
  const auto mean_initial = equals_initial(mm->value, o.moving_mean_initializer);
  const auto var_initial = equals_initial(mv->value, o.moving_variance_initializer);
  if (mean_initial && var_initial) r.at_initial_values = *mean_initial && *var_initial;
  // Keras's BatchNormalization keeps no update counter: the count is known only when the
  // statistics never moved, or estimated from the training steps given (an estimate,
  // not a bound: see UpdateCount::estimated).
  if (r.at_initial_values.value_or(false)) {
    set_updates(r, 0, UpdateCount::initial);
  } else if (options.training_steps && r.trainable) {
    set_updates(r, *options.training_steps, UpdateCount::estimated);
  }
  add_warnings(r, initial_values_text(o.moving_mean_initializer, o.moving_variance_initializer), options);
  return r;
}

BatchNormInspection inspect_batch_norm(const TorchBatchNorm& module, const std::string& name,
                                       const InspectOptions& options) {
  BatchNormInspection r;
  r.name = name;
  r.class_name = "TorchBatchNorm";
  r.convention = MomentumConvention::pytorch;
  r.axis = {1};
  r.momentum = module.momentum();
  if (r.momentum) r.retention = 1.0 - *r.momentum;
  r.epsilon = module.eps();
  r.center = r.scale = module.affine();
  r.trainable = module.track_running_stats();
  r.built = module.initialized() && module.has_running_stats();
  if (!r.built) return r;
  const Tensor& mm = *module.running_mean();
  const Tensor& mv = *module.running_var();
  r.channels = mm.numel();
  r.moving_mean = summarize(mm.values());
  r.moving_variance = summarize(mv.values());
  if (module.affine()) {
    r.gamma = summarize(module.weight()->values());
    r.beta = summarize(module.bias()->values());
  }
  r.at_initial_values = equals_initial(mm, Initializer::zeros()).value_or(false) &&
                        equals_initial(mv, Initializer::ones()).value_or(false);
  set_updates(r, module.num_batches_tracked(), UpdateCount::counted);
  add_warnings(r, "mean 0, variance 1", options);
  return r;
}

std::vector<BatchNormInspection> inspect_batch_norm(const Model& model, const InspectOptions& options) {
  std::vector<BatchNormInspection> out;
  for (const auto& [path, layer] : model.flattened_layers()) {
    if (const auto* bn = dynamic_cast<const BatchNormalization*>(layer.get())) {
      out.push_back(inspect_batch_norm(*bn, options));
    }
  }
  return out;
}

}  // namespace bnorm::nn
