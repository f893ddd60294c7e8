// bnorm/nn/callbacks.hpp: Keras callbacks for Model::fit: History, EarlyStopping, and the
// progress bar (Keras's ProgbarLogger).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bnorm/core/tensor.hpp"

namespace bnorm::nn {

class Model;

// Metric name -> value ("loss", "accuracy", "val_loss", ...).
using Logs = std::map<std::string, double>;

class Callback {
 public:
  virtual ~Callback() = default;
  virtual void on_train_begin(Model&, int /*epochs*/, std::int64_t /*steps_per_epoch*/) {}
  virtual void on_epoch_begin(Model&, int /*epoch*/) {}
  virtual void on_train_batch_end(Model&, std::int64_t /*step*/, const Logs&) {}
  virtual void on_epoch_end(Model&, int /*epoch*/, const Logs&) {}
  virtual void on_train_end(Model&) {}
};

// Keras History: one value per epoch for every logged metric.
class History : public Callback {
 public:
  void on_train_begin(Model&, int, std::int64_t) override;
  void on_epoch_end(Model&, int epoch, const Logs& logs) override;
  std::vector<int> epoch;
  std::map<std::string, std::vector<double>> history;
};

struct EarlyStoppingOptions {
  std::string monitor = "val_loss";
  double min_delta = 0.0;
  int patience = 0;
  std::string mode = "auto";  // "min", "max", or "auto" (max for accuracy-like metrics)
  bool restore_best_weights = false;
};

// Keras EarlyStopping: stops training when `monitor` has not improved by min_delta for
// `patience` epochs; optionally restores the weights of the best epoch.
class EarlyStopping : public Callback {
 public:
  explicit EarlyStopping(EarlyStoppingOptions options = {});
  void on_train_begin(Model&, int, std::int64_t) override;
  void on_epoch_end(Model& model, int epoch, const Logs& logs) override;
  void on_train_end(Model& model) override;
  // Epoch (0-based) at which training stopped, or -1.
  int stopped_epoch() const noexcept { return stopped_epoch_; }

 private:
  EarlyStoppingOptions options_;
  bool maximize_ = false;
  double best_ = 0.0;
  int wait_ = 0, stopped_epoch_ = -1;
  std::optional<std::vector<Tensor>> best_weights_;
};

// Keras's progress bar: "Epoch 1/10" then
// "4/4 ━━━━━━━━━━━━━━━━━━━━ 0s 2ms/step - loss: 0.5234 - val_loss: 0.4711".
// verbose 1: redrawn in place on a terminal (a final line per epoch otherwise);
// verbose 2: one line per epoch. Writes to stdout.
class ProgressBar : public Callback {
 public:
  explicit ProgressBar(int verbose = 1);
  void on_train_begin(Model&, int epochs, std::int64_t steps) override;
  void on_epoch_begin(Model&, int epoch) override;
  void on_train_batch_end(Model&, std::int64_t step, const Logs& logs) override;
  void on_epoch_end(Model&, int epoch, const Logs& logs) override;

  // One progress line (shared with evaluate/predict).
  static std::string line(std::int64_t done, std::int64_t total, double seconds, const Logs& logs, bool finished);

 private:
  int verbose_;
  bool tty_;
  int epochs_ = 0;
  std::int64_t steps_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace bnorm::nn
