// apps/bnorm/experiment.hpp: the batch-normalization experiment (Ioffe & Szegedy 2015,
// Figure 1) and its report. See docs/experiment.md.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "commands.hpp"

namespace bnorm::cli {

// --batch-size, --learning-rate, --seed, --threads, --momentum, --init and --data-dir
// come from TrainingBasics (shared with `bnorm train`); learning_rate is set once parsed.
struct ExperimentOptions : TrainingBasics {
  std::int64_t steps = 0;  // defaults: experiment.cpp
  std::int64_t eval_every = 0;
  double target_accuracy = 0.0;
  std::int64_t unit = 0;  // the last hidden layer's unit whose input is tracked
  std::filesystem::path out;
};

// The two networks, in this order everywhere (arrays, CSV columns, figures).
inline constexpr std::array<const char*, 2> kNetNames{"without batch norm", "with batch norm"};
inline constexpr std::array<const char*, 2> kNetKeys{"plain", "batchnorm"};

// One evaluation on the test set, for both networks (index 0 without, 1 with BN).
struct EvalPoint {
  std::int64_t step = 0;
  std::array<double, 2> test_accuracy{}, test_loss{};
  std::array<double, 2> train_loss{};  // mean over the steps since the previous point (NaN at step 0)
  std::array<std::array<double, 3>, 2> percentiles{};  // 15th, 50th, 85th of the tracked unit's input
};

struct ExperimentResult {
  std::vector<EvalPoint> points;
  std::array<std::optional<std::int64_t>, 2> steps_to_target{};  // first evaluated step at or above target
  double seconds_training = 0.0, seconds_evaluating = 0.0, seconds_total = 0.0;
  int threads = 0;
  std::int64_t test_images = 0;
};

// What the report folder holds, for printing.
struct ReportFiles {
  std::vector<std::filesystem::path> written;
  std::optional<std::string> plot_problem;  // why the PNGs are missing, when they are
};

// Writes accuracy.csv, percentiles.csv, the gnuplot scripts and (when gnuplot runs)
// accuracy.png and percentiles.png, then summary.md, into options.out.
ReportFiles write_report(const ExperimentOptions& options, const ExperimentResult& result);

}  // namespace bnorm::cli
