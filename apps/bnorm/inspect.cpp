// `bnorm inspect MODEL`: every batch-normalization layer of a saved model, its settings
// and moving statistics, and the warnings of nn::inspect_batch_norm (statistics still at
// their initial values, a moving average that has not forgotten them, trainable but never
// updated, NaN/Inf). Warnings are findings, not failures: the exit status stays 0.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "bnorm/core/text.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/inspect.hpp"
#include "commands.hpp"

namespace bnorm::cli {

namespace {

struct InspectCommandOptions {
  std::string model;
  bool json = false;
  double memory_threshold = 0.01;
};

std::string num(double v) {
  if (std::isnan(v)) return "nan";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string axis_text(const std::vector<int>& axis) {
  if (axis.size() == 1) return std::to_string(axis.front());
  std::string s = "[";
  for (std::size_t i = 0; i < axis.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(axis[i]);
  }
  return s + "]";
}

std::string updates_text(const nn::BatchNormInspection& r) {
  if (!r.updates) return "?";
  const std::string n = std::to_string(*r.updates);
  return r.update_count == nn::UpdateCount::estimated ? "~" + n : n;
}

std::string summary_text(const nn::ValueSummary& s) {
  std::string t = num(s.min) + " / " + num(s.mean) + " / " + num(s.max);
  if (s.non_finite) t += " (+" + std::to_string(s.non_finite) + " NaN/Inf)";
  return t;
}

nlohmann::json summary_json(const nn::ValueSummary& s) {
  auto finite_or_null = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  return {{"count", s.count},
          {"non_finite", s.non_finite},
          {"min", finite_or_null(s.min)},
          {"mean", finite_or_null(s.mean)},
          {"max", finite_or_null(s.max)}};
}

nlohmann::json to_json(const std::string& path, const nn::Model& model,
                       const std::vector<nn::BatchNormInspection>& report, const nn::InspectOptions& options) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& r : report) {
    nlohmann::json l{{"name", r.name},
                     {"class_name", r.class_name},
                     {"convention", nn::to_string(r.convention)},
                     {"axis", r.axis},
                     {"built", r.built},
                     {"channels", r.channels},
                     {"momentum", r.momentum ? nlohmann::json(*r.momentum) : nlohmann::json(nullptr)},
                     {"epsilon", r.epsilon},
                     {"center", r.center},
                     {"scale", r.scale},
                     {"trainable", r.trainable},
                     {"frozen", !r.trainable},
                     {"updates", r.updates ? nlohmann::json(*r.updates) : nlohmann::json(nullptr)},
                     {"updates_source", nn::to_string(r.update_count)},
                     {"initial_weight", r.initial_weight ? nlohmann::json(*r.initial_weight) : nlohmann::json(nullptr)},
                     {"at_initial_values",
                      r.at_initial_values ? nlohmann::json(*r.at_initial_values) : nlohmann::json(nullptr)}};
    if (r.built) {
      l["moving_mean"] = summary_json(r.moving_mean);
      l["moving_variance"] = summary_json(r.moving_variance);
      if (r.gamma) l["gamma"] = summary_json(*r.gamma);
      if (r.beta) l["beta"] = summary_json(*r.beta);
    }
    nlohmann::json warnings = nlohmann::json::array();
    for (const auto& w : r.warnings) warnings.push_back({{"kind", nn::to_string(w.kind)}, {"message", w.message}});
    l["warnings"] = warnings;
    layers.push_back(l);
  }
  return {{"format", "bnorm-inspect"},
          {"version", 1},
          {"model", path},
          {"model_name", model.name()},
          {"memory_threshold", options.memory_threshold},
          // The optimizer's iteration count the "~N" estimates come from ("training_steps"
          // kept for readers of version 1 files; both hold the same number).
          {"optimizer_iterations",
           options.training_steps ? nlohmann::json(*options.training_steps) : nlohmann::json(nullptr)},
          {"training_steps", options.training_steps ? nlohmann::json(*options.training_steps) : nlohmann::json(nullptr)},
          {"batch_normalization_layers", layers}};
}

void print_table(const std::string& path, const nn::Model& model, const std::vector<nn::BatchNormInspection>& report,
                 const nn::InspectOptions& options) {
  // Names and paths come from the file and the command line: escaped, so that a name cannot
  // forge lines or send terminal escapes (the JSON output escapes them itself).
  std::printf("%s: model \"%s\", %zu layers, %zu batch-normalization layer%s\n", printable(path, 0).c_str(),
              printable(model.name(), 0).c_str(),
              model.layers().size(), report.size(), report.size() == 1 ? "" : "s");
  if (report.empty()) return;
  std::size_t w = 5;
  for (const auto& r : report) w = std::max(w, printable(r.name, 0).size());
  const int name_width = static_cast<int>(w);
  std::printf("\n %-*s  %-10s %5s %8s %8s %8s  %-6s %-6s %-6s %7s\n", name_width, "layer", "convention", "axis",
              "channels", "momentum", "epsilon", "center", "scale", "frozen", "updates");
  for (const auto& r : report) {
    std::printf(" %-*s  %-10s %5s %8lld %8s %8s  %-6s %-6s %-6s %7s\n", name_width, printable(r.name, 0).c_str(),
                nn::to_string(r.convention).c_str(), axis_text(r.axis).c_str(), static_cast<long long>(r.channels),
                r.momentum ? num(*r.momentum).c_str() : "cumul.", num(r.epsilon).c_str(), r.center ? "yes" : "no",
                r.scale ? "yes" : "no", r.trainable ? "no" : "yes", r.built ? updates_text(r).c_str() : "-");
  }
  std::printf("\n %-*s  %-32s %s\n", name_width, "layer", "moving_mean min / mean / max",
              "moving_variance min / mean / max");
  for (const auto& r : report) {
    if (!r.built) {
      std::printf(" %-*s  (not built: no statistics yet)\n", name_width, printable(r.name, 0).c_str());
      continue;
    }
    std::printf(" %-*s  %-32s %s\n", name_width, printable(r.name, 0).c_str(), summary_text(r.moving_mean).c_str(),
                summary_text(r.moving_variance).c_str());
  }
  bool unknown = false, estimated = false;
  std::size_t warnings = 0;
  for (const auto& r : report) {
    unknown |= r.built && !r.updates;
    estimated |= r.update_count == nn::UpdateCount::estimated;
    warnings += r.warnings.size();
  }
  if (unknown || estimated) std::printf("\n");
  if (unknown) {
    std::printf(
        "updates ?: Keras's BatchNormalization does not count its updates; the count is known only\n"
        "  when the statistics are still at their initial values (0), so whether the moving averages\n"
        "  have forgotten their initial values (momentum^updates < %s) cannot be checked.\n",
        num(options.memory_threshold).c_str());
  }
  if (estimated) {
    // An estimate, not a bound: recompiling (the freeze-and-fine-tune recipe: freeze,
    // compile, fit again) starts a new optimizer whose count begins at 0, while the
    // statistics keep the earlier updates; a layer frozen for part of the training had
    // fewer.
    std::printf(
        "updates ~N: estimated from the optimizer's %lld iterations; recompiling resets that count, so a\n"
        "  layer may have had more updates (or fewer, if it was frozen for part of the training).\n",
        static_cast<long long>(*options.training_steps));
  }
  std::printf("\n");
  if (warnings == 0) {
    std::printf("no warnings\n");
    return;
  }
  std::printf("%zu warning%s:\n", warnings, warnings == 1 ? "" : "s");
  for (const auto& r : report) {
    for (const auto& wn : r.warnings) {
      std::printf("  %s [%s]: %s\n", printable(r.name, 0).c_str(), nn::to_string(wn.kind).c_str(),
                  printable(wn.message, 0).c_str());
    }
  }
}

int run_inspect(const InspectCommandOptions& o) {
  const std::string command = "bnorm inspect";
  const auto model = load_model_argument(o.model, command, "MODEL");
  nn::InspectOptions options{.memory_threshold = o.memory_threshold};
  // A model saved with its optimizer knows how many training steps it took: each one
  // updated every trainable batch-normalization layer once.
  if (model->compiled() && model->optimizer()->iterations() > 0) {
    options.training_steps = model->optimizer()->iterations();
  } else {
    std::optional<std::int64_t> steps;
    try {
      steps = io::saved_optimizer_iterations(o.model);  // what Keras recorded in the file
    } catch (const Error&) {
      rethrow_for_argument(command, "MODEL", o.model);
    }
    if (steps && *steps > 0) options.training_steps = *steps;
  }
  const auto report = nn::inspect_batch_norm(*model, options);
  if (o.json) {
    std::printf("%s\n", to_json(o.model, *model, report, options).dump(1).c_str());
  } else {
    print_table(o.model, *model, report, options);
  }
  return 0;
}

}  // namespace

Runner add_inspect_command(CLI::App& app) {
  auto o = std::make_shared<InspectCommandOptions>();
  CLI::App* cmd = app.add_subcommand(
      "inspect", "List the batch-normalization layers of a saved model, their moving statistics, and warnings");
  cmd->footer(
      "\nFor each BatchNormalization layer: momentum convention, axis, channels, momentum, epsilon,\n"
      "center/scale, whether it is frozen (trainable off: inference mode even in training), the\n"
      "number of statistic updates when known, and min / mean / max of the moving mean and\n"
      "variance. Warnings: statistics still exactly at their initial values (mean 0, variance 1),\n"
      "trainable but never updated, a moving average that still remembers its initial value\n"
      "(momentum^updates above --memory-threshold), NaN or infinite values, negative variances.\n"
      "Warnings do not change the exit status (0); an unreadable model does (1).\n"
      "\nExamples:\n"
      "  bnorm inspect model.keras\n"
      "  bnorm inspect legacy_model.h5 --json > report.json");
  cmd->add_option("MODEL", o->model, "Model file (.keras, or legacy .h5)")->required();
  cmd->add_flag("--json", o->json, "Machine-readable output (format bnorm-inspect, version 1)");
  cmd->add_option("--memory-threshold", o->memory_threshold,
                  "Warn when momentum^updates, the initial value's weight in the moving average, is above this")
      ->check(real_in(0.0, 1.0, true, true))
      ->capture_default_str();
  return [cmd, o]() -> int {
    if (!cmd->parsed()) return -1;
    return run_inspect(*o);
  };
}

}  // namespace bnorm::cli
