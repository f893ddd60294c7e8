// `bnorm inspect MODEL`: every batch-normalization layer of a saved model, its settings
// and moving statistics, and the warnings of nn::inspect_batch_norm (statistics still at
// their initial values, a moving average that has not forgotten them, trainable but never
// updated, NaN/Inf). Warnings are findings, not failures: the exit status stays 0.
// With --data X: the gap between training and inference on X (nn::measure_gap): per layer
// and channel the shift of the population mean from the moving mean and the variance
// ratio, flagged channels, and the model's outputs with batch statistics against
// inference; --plots DIR draws it with gnuplot.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "bnorm/core/text.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/gap.hpp"
#include "bnorm/nn/inspect.hpp"
#include "commands.hpp"
#include "file_checks.hpp"
#include "gnuplot.hpp"

namespace bnorm::cli {

namespace {

struct InspectCommandOptions {
  std::string model;
  bool json = false;
  double memory_threshold = 0.01;
  std::string data;   // empty: no gap report
  std::string plots;  // empty: no figures
  std::int64_t batch_size = 256;
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

// --- the gap report (--data) ---------------------------------------------------------

const std::string kCommand = "bnorm inspect";

nlohmann::json gap_json(const std::string& data, const nn::GapReport& g, const nn::GapOptions& options) {
  auto finite_or_null = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  auto finite_all = [&](const std::vector<double>& v) {
    nlohmann::json a = nlohmann::json::array();
    for (double x : v) a.push_back(finite_or_null(x));
    return a;
  };
  auto channels_where = [](const std::vector<bool>& flags) {
    std::vector<std::int64_t> c;
    for (std::size_t i = 0; i < flags.size(); ++i)
      if (flags[i]) c.push_back(static_cast<std::int64_t>(i));
    return c;
  };
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : g.layers) {
    layers.push_back({{"name", l.name},
                      {"channels", l.channels},
                      {"count", l.moments.count},
                      {"mean_abs_shift", finite_or_null(l.mean_abs_shift)},
                      {"max_abs_shift", finite_or_null(l.max_abs_shift)},
                      {"variance_ratio_min", finite_or_null(l.ratio_min)},
                      {"variance_ratio_max", finite_or_null(l.ratio_max)},
                      {"stale", l.stale_count},
                      {"dead", l.dead_count},
                      {"collapsed", l.collapsed_count},
                      {"stale_channels", channels_where(l.stale)},
                      {"dead_channels", channels_where(l.dead)},
                      {"collapsed_channels", channels_where(l.collapsed)},
                      {"unconverged", l.unconverged},
                      {"unconverged_reason", l.unconverged_reason},
                      {"shift", finite_all(l.shift)},
                      {"variance_ratio", finite_all(l.variance_ratio)},
                      {"population_mean", finite_all(l.population_mean)},
                      {"population_variance", finite_all(l.population_variance)}});
  }
  const auto& o = g.outputs;
  return {{"data", data},
          {"samples", g.samples},
          {"batch_size", g.batch_size},
          {"thresholds",
           {{"shift", options.shift_threshold},
            {"variance_ratio", {options.ratio_low, options.ratio_high}},
            {"dead_variance", options.dead_variance},
            {"collapsed_gamma", options.collapsed_gamma}}},
          {"layers", layers},
          {"outputs",
           {{"rows", o.rows},
            {"mean_abs_difference", finite_or_null(o.mean_abs_difference)},
            {"max_abs_difference", finite_or_null(o.max_abs_difference)},
            {"output_spread", finite_or_null(o.output_spread)},
            {"relative_difference", finite_or_null(o.relative_difference)},
            {"argmax_agreement",
             o.argmax_agreement ? finite_or_null(*o.argmax_agreement) : nlohmann::json(nullptr)}}}};
}

void print_gap(const std::string& data, const nn::GapReport& g, const nn::GapOptions& options,
               const std::vector<std::string>& figures, const std::optional<std::string>& plot_problem) {
  std::printf("\ngap on %s: %lld samples, batches of %lld: the population statistics of each layer's input\n"
              "  (inference mode, the model as it is) against its moving statistics\n",
              printable(data, 0).c_str(), static_cast<long long>(g.samples), static_cast<long long>(g.batch_size));
  std::size_t w = 5;
  for (const auto& l : g.layers) w = std::max(w, printable(l.name, 0).size());
  const int name_width = static_cast<int>(w);
  std::printf("\n %-*s  %8s  %19s  %19s\n", name_width, "", "", "|mean shift| in std", "variance ratio");
  std::printf(" %-*s  %8s  %9s %9s  %9s %9s  %5s %5s %9s\n", name_width, "layer", "channels", "average", "largest",
              "smallest", "largest", "stale", "dead", "collapsed");
  for (const auto& l : g.layers) {
    std::printf(" %-*s  %8lld  %9.4f %9.4f  %9.4g %9.4g  %5lld %5lld %9lld\n", name_width,
                printable(l.name, 0).c_str(), static_cast<long long>(l.channels), l.mean_abs_shift,
                l.max_abs_shift, l.ratio_min, l.ratio_max, static_cast<long long>(l.stale_count),
                static_cast<long long>(l.dead_count), static_cast<long long>(l.collapsed_count));
  }
  std::printf(
      "shift = (population mean - moving mean) / sqrt(population variance + epsilon); variance ratio =\n"
      "  (population variance + epsilon) / (moving variance + epsilon). Flags: stale |shift| > %s or ratio\n"
      "  outside [%s, %s]; dead: population variance <= %s; collapsed: |gamma| < %s.\n",
      num(options.shift_threshold).c_str(), num(options.ratio_low).c_str(), num(options.ratio_high).c_str(),
      num(options.dead_variance).c_str(), num(options.collapsed_gamma).c_str());
  std::string unconverged;
  for (const auto& l : g.layers)
    if (l.unconverged) unconverged += (unconverged.empty() ? "" : ", ") + printable(l.name, 0);
  if (!unconverged.empty()) {
    std::printf("unconverged (the moving average still weighs its initial values; see the warnings): %s\n",
                unconverged.c_str());
  }
  const auto& o = g.outputs;
  std::printf("\noutputs with batch statistics (training mode) against inference, same batches:\n");
  std::printf("  mean |difference| %s (%s of the outputs' standard deviation %s), largest %s\n",
              num(o.mean_abs_difference).c_str(), num(o.relative_difference).c_str(), num(o.output_spread).c_str(),
              num(o.max_abs_difference).c_str());
  if (o.argmax_agreement) {
    std::printf("  the largest output is at the same index in %.2f%% of the %lld rows\n",
                100.0 * *o.argmax_agreement, static_cast<long long>(o.rows));
  }
  if (!figures.empty() || plot_problem) std::printf("\n");
  for (const auto& f : figures) std::printf("wrote %s\n", printable(f, 0).c_str());
  if (plot_problem) std::printf("figures not drawn: %s\n", printable(*plot_problem, 0).c_str());
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  f.close();
  if (!f) throw io::FileError(kCommand, "--plots " + path.string(), "a writable file", std::strerror(errno));
}

// gnuplot's string literal in single quotes: a quote doubles.
std::string gp_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("''") : std::string(1, c);
  return q + "'";
}

// gap.csv, shifts.csv, gap.gp, shifts.gp in dir, then gap.png and shifts.png by gnuplot.
// Returns the files written; *problem says why there are no figures.
std::vector<std::string> write_plots(const std::filesystem::path& dir, const std::string& model_path,
                                     const nn::GapReport& g, const nn::GapOptions& options,
                                     std::optional<std::string>& problem) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    throw io::FileError(kCommand, "--plots", "a folder that can be created",
                        "'" + dir.string() + "' (" + (ec ? ec.message() : "not a folder") + ")");
  }
  std::vector<std::string> written;
  std::ostringstream gap, shifts;
  gap << "layer,name,mean_abs_shift,max_abs_shift,variance_ratio_min,variance_ratio_max,stale,dead,collapsed\n";
  shifts << "layer,channel,shift,variance_ratio,stale,dead,collapsed\n";
  double lo = 0, hi = 0;
  for (std::size_t i = 0; i < g.layers.size(); ++i) {
    const auto& l = g.layers[i];
    std::string label;  // a CSV field: no commas or quotes
    for (char c : l.name) label += (c == ',' || c == '"' || static_cast<unsigned char>(c) < 32) ? '_' : c;
    gap << i << ',' << label << ',' << l.mean_abs_shift << ',' << l.max_abs_shift << ',' << l.ratio_min << ','
        << l.ratio_max << ',' << l.stale_count << ',' << l.dead_count << ',' << l.collapsed_count << '\n';
    for (std::size_t c = 0; c < l.shift.size(); ++c) {
      shifts << i << ',' << c << ',' << l.shift[c] << ',' << l.variance_ratio[c] << ',' << l.stale[c] << ','
             << l.dead[c] << ',' << l.collapsed[c] << '\n';
      if (std::isfinite(l.shift[c])) lo = std::min(lo, l.shift[c]), hi = std::max(hi, l.shift[c]);
    }
  }
  std::string model_name = fs::path(model_path).filename().string();
  for (char& c : model_name)
    if (static_cast<unsigned char>(c) < 32) c = '_';
  const std::string subtitle = model_name + ", " + std::to_string(g.samples) + " samples";
  std::ostringstream gp;
  gp << "# gnuplot script written by `bnorm inspect --plots`; run `gnuplot gap.gp` in this folder.\n"
     << png_terminal(900, 560) << "set output 'gap.png'\n"
     << "set datafile separator ','\n"
     << "set title \"Batch statistics against moving statistics, per layer\\n{/*0.85 \" . " << gp_quote(subtitle)
     << " . \"}\"\n"
     << "set ylabel '|population mean - moving mean| / population std'\n"
     << "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8 border -1\n"
     << "set boxwidth 0.9\nset grid ytics\nset yrange [0:*]\nset offsets 0, 0, graph 0.05, 0\nset key top left box opaque\n"
     << "set xtics rotate by -30 noenhanced\n"
     << "plot 'gap.csv' skip 1 using 3:xtic(2) lc rgb '#1f77b4' title 'average over channels', \\\n"
     << "     '' skip 1 using 4 lc rgb '#d62728' title 'largest', \\\n"
     << "     " << options.shift_threshold << " with lines dt 2 lc rgb '#555555' title 'stale threshold'\n";
  const double span = std::max(hi - lo, 1e-3);
  const double bin = span / 40.0;
  std::ostringstream hp;
  hp << "# gnuplot script written by `bnorm inspect --plots`; run `gnuplot shifts.gp` in this folder.\n"
     << png_terminal(900, 560) << "set output 'shifts.png'\n"
     << "set datafile separator ','\n"
     << "set title \"Per-channel shift of the population mean from the moving mean, all layers\\n{/*0.85 \" . "
     << gp_quote(subtitle) << " . \"}\"\n"
     << "set xlabel '(population mean - moving mean) / population std'\n"
     << "set ylabel 'channels'\n"
     << "bin = " << bin << "\n"
     << "set boxwidth bin * 0.9\nset style fill solid 0.8 border -1\nset grid ytics\nset yrange [0:*]\nset offsets 0, 0, graph 0.05, 0\n"
     << "set xrange [" << lo - bin << ":" << hi + bin << "]\n"
     << "set arrow from " << -options.shift_threshold << ", graph 0 to " << -options.shift_threshold
     << ", graph 1 nohead front dt 2 lc rgb '#555555'\n"
     << "set arrow from " << options.shift_threshold << ", graph 0 to " << options.shift_threshold
     << ", graph 1 nohead front dt 2 lc rgb '#555555'\n"
     << "unset key\n"
     << "plot 'shifts.csv' skip 1 using (bin * floor($3 / bin) + bin / 2):(1.0) smooth frequency with boxes "
        "lc rgb '#1f77b4'\n";
  for (const auto& [name, text] : {std::pair<std::string, std::string>{"gap.csv", gap.str()},
                                   {"shifts.csv", shifts.str()}, {"gap.gp", gp.str()}, {"shifts.gp", hp.str()}}) {
    write_text(dir / name, text);
    written.push_back((dir / name).string());
  }
  for (const char* png : {"gap.png", "shifts.png"}) fs::remove(dir / png, ec);  // no stale figures
  const auto gnuplot = find_on_path("gnuplot");
  if (!gnuplot) {
    problem = kNoGnuplot;
    return written;
  }
  for (const std::string script : {"gap", "shifts"}) {
    const std::string failed = run_gnuplot(*gnuplot, dir, script + ".gp");
    if (!failed.empty()) {
      problem = failed;
      break;
    }
    if (!fs::exists(dir / (script + ".png"))) {
      problem = "gnuplot " + script + ".gp wrote no " + script + ".png";
      break;
    }
    written.push_back((dir / (script + ".png")).string());
  }
  return written;
}

int run_inspect(const InspectCommandOptions& o) {
  const std::string command = "bnorm inspect";
  // The figures' folder first: that it writes over no input, that it can be written.
  const std::vector<std::string> plot_files{"gap.csv", "shifts.csv", "gap.gp", "shifts.gp", "gap.png",
                                            "shifts.png", "gnuplot.log"};
  if (!o.plots.empty()) {
    std::vector<NamedInput> inputs{{o.model, "the MODEL file"}};
    if (!o.data.empty()) inputs.push_back({o.data, "the --data file"});
    require_distinct_output(command, "--plots", o.plots, inputs);
    for (const auto& f : plot_files)
      require_distinct_output(command, "--plots", (std::filesystem::path(o.plots) / f).string(), inputs);
    require_writable_folder(command, "--plots", o.plots);
  }
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
  std::optional<nn::GapReport> gap;
  const nn::GapOptions gap_options{.batch_size = o.batch_size,
                                   .memory_threshold = o.memory_threshold,
                                   .training_steps = options.training_steps};
  std::vector<std::string> figures;
  std::optional<std::string> plot_problem;
  if (!o.data.empty()) {
    const Tensor x = read_model_input(o.data, *model, command, "--data");
    require_finite(x, command, "--data " + printable(o.data, 0), false);
    gap = nn::measure_gap(*model, x, gap_options);
    if (!o.plots.empty()) figures = write_plots(o.plots, o.model, *gap, gap_options, plot_problem);
  }
  if (o.json) {
    nlohmann::json j = to_json(o.model, *model, report, options);
    if (gap) {
      j["gap"] = gap_json(o.data, *gap, gap_options);
      if (!o.plots.empty()) {
        j["gap"]["files"] = figures;
        j["gap"]["plot_problem"] = plot_problem ? nlohmann::json(*plot_problem) : nlohmann::json(nullptr);
      }
    }
    std::printf("%s\n", j.dump(1).c_str());
  } else {
    print_table(o.model, *model, report, options);
    if (gap) print_gap(o.data, *gap, gap_options, figures, plot_problem);
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
      "\nWith --data X (.npy or CSV, one sample per row): the gap between training and inference on\n"
      "X. Per layer and channel, the population mean and variance of the layer's input (the model\n"
      "in inference mode, as it is) against its moving statistics: shift = (population mean -\n"
      "moving mean) / sqrt(population variance + epsilon), variance ratio = (population variance +\n"
      "epsilon) / (moving variance + epsilon); channels flagged stale (|shift| > 0.5 or ratio outside\n"
      "[0.5, 2]), dead (population variance <= 1e-6), collapsed (|gamma| < 1e-3); layers whose\n"
      "moving average still remembers its initial value (unconverged); and the model's outputs with\n"
      "batch statistics (training mode, the same batches) against inference. The model file is not\n"
      "changed. --plots DIR writes gap.png (per-layer shift) and shifts.png (histogram of the\n"
      "channels' shifts) with gnuplot, and the CSV files and scripts behind them.\n"
      "\nExamples:\n"
      "  bnorm inspect model.keras\n"
      "  bnorm inspect legacy_model.h5 --json > report.json\n"
      "  bnorm inspect model.keras --data x_test.npy --plots gap/");
  cmd->add_option("MODEL", o->model, "Model file (.keras, or legacy .h5)")->required();
  cmd->add_flag("--json", o->json, "Machine-readable output (format bnorm-inspect, version 1)");
  cmd->add_option("--memory-threshold", o->memory_threshold,
                  "Warn when momentum^updates, the initial value's weight in the moving average, is above this")
      ->check(real_in(0.0, 1.0, true, true))
      ->capture_default_str();
  auto* data = cmd->add_option("--data", o->data,
                  "Samples (.npy or CSV, one per row): report the gap between the moving statistics and "
                  "the population statistics on them, and between training- and inference-mode outputs")
      ->type_name("FILE");
  auto* plots = cmd->add_option("--plots", o->plots,
                                "Folder for gap.png and shifts.png (gnuplot) and their CSV data; needs --data")
                    ->type_name("DIR");
  auto* batch = cmd->add_option("--batch-size", o->batch_size,
                                "Samples per pass with --data (the training-mode outputs use batches of this size)")
                    ->check(positive_integer())
                    ->capture_default_str();
  plots->needs(data);
  batch->needs(data);
  return [cmd, o]() -> int {
    if (!cmd->parsed()) return -1;
    return run_inspect(*o);
  };
}

}  // namespace bnorm::cli
