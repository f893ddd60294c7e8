// `bnorm recalibrate MODEL -o OUT`: replaces the moving statistics of every
// batch-normalization layer of a saved model by the population statistics of its input
// over a dataset (nn::recalibrate, "precise batch normalization"), reports how far the
// old statistics were and the accuracy before and after, and saves the model (a Keras
// file, like `bnorm train`'s).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bnorm/core/text.hpp"
#include "bnorm/io/datasets.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/recalibrate.hpp"
#include "commands.hpp"
#include "file_checks.hpp"

namespace bnorm::cli {

namespace {

const std::string kCommand = "bnorm recalibrate";

struct RecalibrateCliOptions {
  std::string model;
  std::string output;
  std::string data;               // empty: the Fashion-MNIST training images
  std::vector<std::string> eval;  // INPUT LABELS, or empty
  bool no_eval = false;
  std::int64_t batch_size = 256;
  bool skip_frozen = false;
  std::filesystem::path data_dir = io::kFashionMnistDir;
};

// The class index of each row of labels: a class index per row, or a one-hot row as wide
// as the model's outputs. (N) class indices.
Tensor class_labels(const Tensor& labels, std::int64_t rows, std::int64_t outputs, const std::string& where) {
  const std::int64_t n = labels.rank() == 0 ? 1 : labels.dim(0);
  if (n != rows) {
    throw ShapeError(kCommand, where, count_of(rows, "row") + " (one per evaluation sample)",
                     count_of(n, "row"));
  }
  const std::int64_t width = row_width(labels);
  Tensor classes(Shape{rows});
  if (width == 1) {
    for (std::int64_t i = 0; i < rows; ++i) {
      const float v = labels[i];
      if (!(v >= 0.0f && v < static_cast<float>(outputs)) || v != std::floor(v)) {
        char got[32];
        std::snprintf(got, sizeof got, "%.9g", static_cast<double>(v));
        throw ArgumentError(kCommand, where + " row " + std::to_string(i + 1),
                            "a class index in [0, " + std::to_string(outputs) + ") (the model's outputs)",
                            got);
      }
      classes[i] = v;
    }
  } else if (width == outputs && outputs > 1) {
    for (std::int64_t i = 0; i < rows; ++i) {
      const float* t = labels.data() + i * width;
      classes[i] = static_cast<float>(std::max_element(t, t + width) - t);
    }
  } else {
    throw ShapeError(kCommand, where,
                     "a class index per row, or one-hot rows of " + count_of(outputs, "value") +
                         " (the model's outputs per sample)",
                     "rows of " + count_of(width, "value"));
  }
  return classes;
}

// Per channel c: |new mean - old mean| / sqrt(new variance + epsilon), the shift of the
// inference-mode mean in standard deviations of the layer's input, and
// sqrt((old variance + epsilon) / (new variance + epsilon)), the factor by which the old
// statistics' standard deviation was off.
struct Summary {
  double shift_mean = 0, shift_max = 0, ratio_min = 0, ratio_max = 0;
};

Summary summarize(const nn::LayerRecalibration& r, double epsilon) {
  Summary s;
  const std::int64_t c = r.new_mean.numel();
  s.ratio_min = HUGE_VAL;
  for (std::int64_t i = 0; i < c; ++i) {
    const double sd = std::sqrt(static_cast<double>(r.new_variance[i]) + epsilon);
    const double shift = std::abs(static_cast<double>(r.new_mean[i]) - r.old_mean[i]) / sd;
    const double ratio = std::sqrt(std::max(0.0, static_cast<double>(r.old_variance[i]) + epsilon)) / sd;
    s.shift_mean += shift / static_cast<double>(c);
    s.shift_max = std::max(s.shift_max, shift);
    s.ratio_min = std::min(s.ratio_min, ratio);
    s.ratio_max = std::max(s.ratio_max, ratio);
  }
  if (c == 0) s.ratio_min = 0;
  return s;
}

int run_recalibrate(const RecalibrateCliOptions& o) {
  const bool fashion = o.data.empty();
  const bool fashion_eval = o.eval.empty() && fashion && !o.no_eval;
  // The output first: its format, that it overwrites no input, that it can be written.
  std::vector<NamedInput> inputs{{o.model, "the MODEL file"}};
  if (!fashion) inputs.push_back({o.data, "the --data file"});
  if (!o.eval.empty()) {
    inputs.push_back({o.eval[0], "the --eval INPUT file"});
    inputs.push_back({o.eval[1], "the --eval LABELS file"});
  }
  if (fashion || fashion_eval) {
    for (const char* name : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                             "t10k-labels-idx1-ubyte"}) {
      for (const char* suffix : {"", ".gz"})
        inputs.push_back({o.data_dir / (std::string(name) + suffix), "a --data-dir file"});
    }
  }
  require_distinct_output(kCommand, "--output", o.output, inputs);
  require_model_file_name(kCommand, "--output", o.output);
  require_writable_file(kCommand, "--output", o.output);

  const auto model = load_model_argument(o.model, kCommand, "MODEL");
  std::size_t layers = 0;
  for (const auto& [path, layer] : model->flattened_layers())
    layers += dynamic_cast<const nn::BatchNormalization*>(layer.get()) != nullptr;
  if (layers == 0) {
    throw ArgumentError(
        kCommand, "MODEL " + printable(o.model, 0), "a model with batch-normalization layers",
        "a model without any (" + count_of(static_cast<std::int64_t>(model->layers().size()), "layer") + ")");
  }

  // The recalibration samples, and the evaluation set with its labels (if any).
  Tensor x, x_eval, labels;
  std::string source, eval_source, labels_where;
  if (fashion || fashion_eval) {
    require_data_dir(o.data_dir, kCommand);
    io::ImageDataset data = load_data_dir_argument(o.data_dir, kCommand);
    if (fashion) {
      x = fashion_mnist_input(*model, std::move(data.x_train), data, kCommand, o.model, "Fashion-MNIST",
                              "--data and --eval files");
      source = "the Fashion-MNIST training set (" + o.data_dir.string() + ")";
    }
    if (fashion_eval) {
      x_eval = fashion_mnist_input(*model, std::move(data.x_test), data, kCommand, o.model, "Fashion-MNIST",
                                   "--data and --eval files");
      labels = std::move(data.y_test);
      eval_source = "the Fashion-MNIST test set";
      labels_where = "the test set's labels";
    }
  }
  if (!fashion) {
    x = read_model_input(o.data, *model, kCommand, "--data");
    require_finite(x, kCommand, "--data " + printable(o.data, 0), false);
    source = printable(o.data, 0);
  }
  if (!o.eval.empty()) {
    x_eval = read_model_input(o.eval[0], *model, kCommand, "--eval INPUT");
    require_finite(x_eval, kCommand, "--eval INPUT " + printable(o.eval[0], 0), false);
    labels = read_array_argument(o.eval[1], kCommand, "--eval LABELS");
    labels_where = "--eval LABELS " + printable(o.eval[1], 0);
    require_finite(labels, kCommand, labels_where, false);
    eval_source = printable(o.eval[0], 0);
  }

  const bool evaluating = fashion_eval || !o.eval.empty();
  Tensor classes;  // (N) class indices
  double before = 0;
  if (evaluating) {
    const Tensor y = model->predict(x_eval, o.batch_size);
    classes = class_labels(labels, y.dim(0), row_width(y), labels_where);
    before = argmax_accuracy(y, classes);
  }

  std::printf(
      "%s: %s on %s: %lld samples, batches of %lld\n", printable(o.model, 0).c_str(),
      ("recalibrating " + count_of(static_cast<std::int64_t>(layers), "batch-normalization layer")).c_str(),
      source.c_str(), static_cast<long long>(x.dim(0)), static_cast<long long>(o.batch_size));
  std::fflush(stdout);

  const auto start = std::chrono::steady_clock::now();
  const nn::RecalibrationReport report =
      nn::recalibrate(*model, x, {.batch_size = o.batch_size, .skip_frozen = o.skip_frozen});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // Per layer: the shift of the moving mean and the ratio of the standard deviations,
  // both in units of the new (population) statistics.
  std::printf("\n %-22s %8s %9s  %20s  %19s\n", "", "", "", "mean shift in std", "std old/new");
  std::printf(" %-22s %8s %9s  %9s %10s  %9s %9s\n", "layer", "channels", "count", "average", "largest",
              "smallest", "largest");
  for (const auto& r : report.layers) {
    if (!r.recalibrated) {
      std::printf(" %-22s %8lld %9s  frozen: statistics kept (--skip-frozen)\n",
                  printable(r.name, 30).c_str(), static_cast<long long>(r.new_mean.numel()), "-");
      continue;
    }
    const Summary s = summarize(r, r.epsilon);
    std::printf(" %-22s %8lld %9lld  %9.4f %10.4f  %9.4f %9.4f\n", printable(r.name, 30).c_str(),
                static_cast<long long>(r.new_mean.numel()), static_cast<long long>(r.moments.count),
                s.shift_mean, s.shift_max, s.ratio_min, s.ratio_max);
  }
  std::printf("recalibrated in %s (count: elements per channel)\n", format_duration(seconds).c_str());
  if (evaluating) {
    const double after = argmax_accuracy(model->predict(x_eval, o.batch_size), classes);
    std::printf("accuracy on %s (%lld samples, inference mode): before %.4f, after %.4f (%+.2f points)\n",
                eval_source.c_str(), static_cast<long long>(x_eval.dim(0)), before, after,
                100.0 * (after - before));
  }
  io::save_model(*model, o.output);
  std::printf("saved the recalibrated model to %s\n", printable(o.output, 0).c_str());
  return 0;
}

}  // namespace

Runner add_recalibrate_command(CLI::App& app) {
  auto o = std::make_shared<RecalibrateCliOptions>();
  CLI::App* cmd = app.add_subcommand(
      "recalibrate",
      "Set every batch-normalization layer's moving statistics to the population statistics of a dataset");
  cmd->footer(
      "\nPrecise batch normalization: for each BatchNormalization layer in order, MODEL runs in\n"
      "inference mode on the --data samples up to that layer (the layers before it already\n"
      "recalibrated) and the layer's moving mean and variance become the exact mean and variance\n"
      "of its input over all of them (double precision, merged over batches; the variance is the\n"
      "biased one, or N/(N-1) times it for a Keras 2 fused layer, as each layer's own moving\n"
      "average stores). Nothing else changes. Useful after a short training or with a large\n"
      "momentum, when the moving averages trail the weights. Without --data: the 60,000\n"
      "Fashion-MNIST training images, and the accuracy before and after on the test set (or\n"
      "on --eval INPUT LABELS; --no-eval to skip it). --output is a Keras file (.keras, or .h5),\n"
      "checked before any work; it may not be one of the inputs.\n"
      "\nExamples:\n"
      "  bnorm recalibrate model.keras -o recalibrated.keras       # Fashion-MNIST\n"
      "  bnorm recalibrate model.keras --data x_train.npy --eval x_test.npy y_test.npy -o out.keras");
  cmd->add_option("MODEL", o->model, "Model file (.keras, or legacy .h5)")->required();
  cmd->add_option("-o,--output", o->output, "Where to save the recalibrated model (.keras, or .h5)")
      ->required();
  cmd->add_option(
      "--data", o->data,
      "Samples to take the statistics over, one per row (.npy or CSV) [default: the Fashion-MNIST "
      "training images]");
  auto* eval =
      cmd->add_option("--eval", o->eval,
                      "INPUT LABELS: accuracy before and after on these files (labels: class indices or "
                      "one-hot rows) [default: the Fashion-MNIST test set, without --data]")
          ->expected(2)
          ->type_name("FILE");
  cmd->add_flag("--no-eval", o->no_eval, "No accuracy before and after")->excludes(eval);
  cmd->add_option("--batch-size", o->batch_size,
                  "Samples per inference pass (memory only: the statistics are exact)")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_flag("--skip-frozen", o->skip_frozen,
                "Keep the statistics of frozen layers (trainable off); recalibrated by default");
  cmd->add_option("--data-dir", o->data_dir,
                  "Folder of the Fashion-MNIST files, used without --data / --eval")
      ->capture_default_str();
  return [cmd, o]() -> int {
    if (!cmd->parsed()) return -1;
    return run_recalibrate(*o);
  };
}

}  // namespace bnorm::cli
