#include "bnorm/nn/callbacks.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <limits>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/model.hpp"

namespace bnorm::nn {

// ---------------------------------------------------------------- History

void History::on_train_begin(Model&, int, std::int64_t) {
  epoch.clear();
  history.clear();
}

void History::on_epoch_end(Model&, int e, const Logs& logs) {
  epoch.push_back(e);
  for (const auto& [k, v] : logs) history[k].push_back(v);
}

// ---------------------------------------------------------------- EarlyStopping

EarlyStopping::EarlyStopping(EarlyStoppingOptions options) : options_(std::move(options)) {
  if (options_.mode != "auto" && options_.mode != "min" && options_.mode != "max") {
    throw ArgumentError("EarlyStopping", "mode", "\"auto\", \"min\" or \"max\"", "\"" + options_.mode + "\"");
  }
  if (options_.patience < 0) throw ArgumentError("EarlyStopping", "patience", "a value >= 0", std::to_string(options_.patience));
  // Keras "auto": maximize accuracy-like metrics (and auc), minimize the rest.
  maximize_ = options_.mode == "max" ||
              (options_.mode == "auto" && (options_.monitor.find("acc") != std::string::npos ||
                                           options_.monitor.find("auc") != std::string::npos));
}

void EarlyStopping::on_train_begin(Model&, int, std::int64_t) {
  wait_ = 0;
  stopped_epoch_ = -1;
  best_ = maximize_ ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  best_weights_.reset();
}

void EarlyStopping::on_epoch_end(Model& model, int epoch, const Logs& logs) {
  auto it = logs.find(options_.monitor);
  if (it == logs.end()) {
    std::string names;
    for (const auto& [k, v] : logs) names += (names.empty() ? "" : ", ") + k;
    throw ArgumentError("EarlyStopping", "monitor", "one of the logged metrics [" + names + "]",
                        "\"" + options_.monitor + "\"");
  }
  const double v = it->second;
  const bool improved = maximize_ ? v - options_.min_delta > best_ : v + options_.min_delta < best_;
  if (improved) {
    best_ = v;
    wait_ = 0;
    if (options_.restore_best_weights) best_weights_ = model.get_weights();
    return;
  }
  if (++wait_ > options_.patience) {
    stopped_epoch_ = epoch;
    model.stop_training = true;
  }
}

void EarlyStopping::on_train_end(Model& model) {
  if (stopped_epoch_ >= 0 && best_weights_) model.set_weights(*best_weights_);
}

// ---------------------------------------------------------------- ProgressBar

ProgressBar::ProgressBar(int verbose) : verbose_(verbose), tty_(isatty(fileno(stdout)) != 0) {}

std::string ProgressBar::line(std::int64_t done, std::int64_t total, double seconds, const Logs& logs, bool finished) {
  const int width = 20;
  const auto filled = total > 0 ? static_cast<int>(width * done / total) : width;
  std::string bar;
  for (int i = 0; i < width; ++i) bar += i < filled ? "\u2501" : "\u2500";  // ━ and ─
  char buf[64];
  std::string s = std::to_string(done) + "/" + std::to_string(total) + " " + bar + " ";
  if (finished) {
    const double per_step = done > 0 ? seconds / static_cast<double>(done) : 0.0;
    std::snprintf(buf, sizeof buf, "%.0fs %.0fms/step", seconds, per_step * 1e3);
  } else {
    const double eta = done > 0 ? seconds / static_cast<double>(done) * static_cast<double>(total - done) : 0.0;
    std::snprintf(buf, sizeof buf, "%.0fs ETA", eta);  // Keras shows the time left while running
  }
  s += buf;
  for (const auto& [k, v] : logs) {
    std::snprintf(buf, sizeof buf, " - %s: %.4f", k.c_str(), v);
    s += buf;
  }
  return s;
}

void ProgressBar::on_train_begin(Model&, int epochs, std::int64_t steps) {
  epochs_ = epochs;
  steps_ = steps;
}

void ProgressBar::on_epoch_begin(Model&, int epoch) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
  if (verbose_ == 1) std::printf("Epoch %d/%d\n", epoch + 1, epochs_);
  std::fflush(stdout);
}

void ProgressBar::on_train_batch_end(Model&, std::int64_t step, const Logs& logs) {
  if (verbose_ != 1 || !tty_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(100) && step + 1 < steps_) return;
  last_draw_ = now;
  const double seconds = std::chrono::duration<double>(now - start_).count();
  std::printf("\r%s\033[K", line(step + 1, steps_, seconds, logs, false).c_str());
  std::fflush(stdout);
}

void ProgressBar::on_epoch_end(Model&, int epoch, const Logs& logs) {
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (verbose_ == 2) std::printf("Epoch %d/%d\n", epoch + 1, epochs_);
  const bool redraw = verbose_ == 1 && tty_;  // overwrite the live bar; plain text in logs
  std::printf("%s%s%s\n", redraw ? "\r" : "", line(steps_, steps_, seconds, logs, true).c_str(), redraw ? "\033[K" : "");
  std::fflush(stdout);
}

}  // namespace bnorm::nn
