// `bnorm evaluate MODEL [INPUT LABELS]`: the loss and accuracy of a saved model in
// inference mode, on files (.npy or CSV) or, without them, on the Fashion-MNIST test set.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "bnorm/core/text.hpp"
#include "bnorm/io/array_file.hpp"
#include "bnorm/io/datasets.hpp"
#include "bnorm/io/image_folder.hpp"
#include "bnorm/nn/losses.hpp"
#include "commands.hpp"
#include "file_checks.hpp"

namespace bnorm::cli {

namespace {

const std::vector<std::string> kLosses{"auto",
                                       "sparse_categorical_crossentropy",
                                       "categorical_crossentropy",
                                       "binary_crossentropy",
                                       "mean_squared_error",
                                       "mean_absolute_error"};

struct EvaluateOptions {
  std::string model;
  std::string input;
  std::string labels;
  std::string loss = "auto";
  bool from_logits = false;
  bool allow_nonfinite = false;
  std::int64_t batch_size = 256;
  std::filesystem::path data_dir = io::kFashionMnistDir;
};

// "auto": classification when the model has several outputs per sample (class indices or
// one-hot labels by the labels' width), binary when it has one and the labels are 0/1,
// regression (mean squared error) otherwise.
std::string resolve_loss(const std::string& loss, std::int64_t outputs, const Tensor& labels) {
  if (loss != "auto") return loss;
  if (outputs > 1) return row_width(labels) == 1 ? "sparse_categorical_crossentropy" : "categorical_crossentropy";
  const bool binary = std::all_of(labels.values().begin(), labels.values().end(),
                                  [](float v) { return v == 0.0f || v == 1.0f; });
  return binary ? "binary_crossentropy" : "mean_squared_error";
}

std::unique_ptr<nn::Loss> make(const std::string& name, bool from_logits) {
  if (name == "sparse_categorical_crossentropy") return std::make_unique<nn::SparseCategoricalCrossentropy>(from_logits);
  if (name == "categorical_crossentropy") return std::make_unique<nn::CategoricalCrossentropy>(from_logits);
  if (name == "binary_crossentropy") return std::make_unique<nn::BinaryCrossentropy>(from_logits);
  return nn::make_loss(name);
}

// The labels in the shape the loss reads, after checks that name the row at fault.
Tensor check_labels(const Tensor& labels, const std::string& loss, const Tensor& y_pred, const std::string& where) {
  const std::string command = "bnorm evaluate";
  const std::int64_t n = y_pred.dim(0), outputs = row_width(y_pred);
  const std::int64_t rows = labels.rank() == 0 ? 1 : labels.dim(0);
  if (rows != n) {
    throw ShapeError(command, where, count_of(n, "row") + " (one per INPUT sample)", count_of(rows, "row"));
  }
  const std::int64_t width = row_width(labels);
  if (loss == "sparse_categorical_crossentropy") {
    if (width != 1) {
      throw ShapeError(command, where, "one class index per row for " + loss,
                       "rows of " + count_of(width, "value") + " (one-hot labels: --loss categorical_crossentropy)");
    }
    for (std::int64_t i = 0; i < n; ++i) {
      const float v = labels[i];
      if (!(v >= 0.0f && v < static_cast<float>(outputs)) || v != std::floor(v)) {
        char got[32];
        std::snprintf(got, sizeof got, "%.9g", static_cast<double>(v));
        throw ArgumentError(command, where + " row " + std::to_string(i + 1),
                            "a class index in [0, " + std::to_string(outputs) + ") (the model's outputs)", got);
      }
    }
    return labels.reshaped(Shape{n});
  }
  if (width != outputs) {
    throw ShapeError(command, where,
                     "rows of " + count_of(outputs, "value") + " (the model's outputs per sample) for " + loss,
                     "rows of " + count_of(width, "value"));
  }
  return labels.reshaped(y_pred.shape());
}

double accuracy(const std::string& loss, const Tensor& y_true, const Tensor& y_pred, bool from_logits) {
  const std::int64_t n = y_pred.dim(0), c = row_width(y_pred);
  std::int64_t correct = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float* p = y_pred.data() + i * c;
    const auto predicted = std::max_element(p, p + c) - p;
    if (loss == "sparse_categorical_crossentropy") {
      correct += predicted == static_cast<std::int64_t>(y_true[i]);
    } else if (loss == "categorical_crossentropy") {
      const float* t = y_true.data() + i * c;
      correct += predicted == std::max_element(t, t + c) - t;
    } else {  // binary, per element as Keras's binary_accuracy
      for (std::int64_t j = 0; j < c; ++j) {
        const bool positive = from_logits ? p[j] > 0.0f : p[j] > 0.5f;
        correct += positive == (y_true[i * c + j] > 0.5f);
      }
    }
  }
  const double total = static_cast<double>(loss == "binary_crossentropy" ? n * c : n);
  return static_cast<double>(correct) / total;
}

int run_evaluate(const EvaluateOptions& o) {
  const std::string command = "bnorm evaluate";
  if (o.input.empty() != o.labels.empty()) {
    throw UsageError(command, "INPUT LABELS", "both files, or neither (the Fashion-MNIST test set)",
                     "only INPUT '" + o.input + "'");
  }
  const auto model = load_model_argument(o.model, command, "MODEL");
  Tensor x, labels;
  std::string source;
  std::string labels_where = "LABELS " + o.labels;
  if (o.input.empty() && io::looks_like_image_folder(o.data_dir)) {
    // A class-folder dataset (io/image_folder.hpp): every image, at the model's input size.
    const std::optional<Shape> shape = model_input_shape(*model);
    if (!shape || shape->rank() != 4 || (*shape)[1] < 1 || (*shape)[2] < 1 || (*shape)[3] != 3) {
      throw ShapeError(
          command, "MODEL " + o.model,
          "a model with an image input (H, W, 3) for the image folder --data-dir " + o.data_dir.string(),
          shape ? "input shape " + shape->str() : "a model without a declared input shape");
    }
    io::ImageFolderDataset data;
    try {
      data = io::load_image_folder(o.data_dir, (*shape)[1], (*shape)[2]);
    } catch (const Error&) {
      rethrow_for_argument(command, "--data-dir", o.data_dir.string());
    }
    x = std::move(data.x);
    labels = std::move(data.y);
    source = "the image folder " + o.data_dir.string() + " (" + std::to_string(data.class_names.size()) +
             " classes)";
    labels_where = "the folder's class indices";
  } else if (o.input.empty()) {
    // Only the test split is read: the training files need not be there.
    require_data_dir(
        o.data_dir, command,
        "the Fashion-MNIST test files (t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, .gz or not)");
    io::ImageDataset data = load_data_dir_argument(o.data_dir, command, io::load_mnist_test);
    x = std::move(data.x_test);
    labels = std::move(data.y_test);
    source = "the Fashion-MNIST test set (" + o.data_dir.string() + ")";
    labels_where = "the test set's labels";
    // Through the same check as a file: the model's input width must be 784.
    x = fashion_mnist_input(*model, std::move(x), data, command, o.model, "the Fashion-MNIST test set",
                            "INPUT and LABELS files");
  } else {
    x = read_model_input(o.input, *model, command, "INPUT");
    require_finite(x, command, "INPUT " + o.input, o.allow_nonfinite);
    labels = read_array_argument(o.labels, command, "LABELS");
    require_finite(labels, command, labels_where, o.allow_nonfinite);
    source = o.input;
  }
  const Tensor y_pred = model->predict(x, o.batch_size);
  const std::string loss_name = resolve_loss(o.loss, row_width(y_pred), labels);
  const Tensor y_true = check_labels(labels, loss_name, y_pred, labels_where);
  const auto loss = make(loss_name, o.from_logits);
  const double value = loss->value(y_true, y_pred);
  const bool classification = loss_name.find("crossentropy") != std::string::npos;

  std::printf("%s on %s: %lld samples, inference mode\n", o.model.c_str(), source.c_str(),
              static_cast<long long>(y_pred.dim(0)));
  std::printf("  %-10s %-34s %s\n", "metric", "", "value");
  std::printf("  %-10s %-34s %.4f\n", "loss", loss_name.c_str(), value);
  if (classification) {
    std::printf("  %-10s %-34s %.4f\n", "accuracy",
                loss_name == "binary_crossentropy" ? "binary (threshold 0.5)" : "argmax of the outputs",
                accuracy(loss_name, y_true, y_pred, o.from_logits));
  }
  return 0;
}

}  // namespace

Runner add_evaluate_command(CLI::App& app) {
  auto o = std::make_shared<EvaluateOptions>();
  CLI::App* cmd = app.add_subcommand(
      "evaluate", "Loss and accuracy of a saved model in inference mode, on files or on the Fashion-MNIST test set");
  cmd->footer(
      "\nMODEL is a .keras (Keras 3, or from `bnorm train`) or legacy tf.keras .h5 file. INPUT holds\n"
      "one sample per row (.npy or CSV, as for `bnorm predict`); LABELS one row per sample: a class\n"
      "index, or one-hot values. Without INPUT and LABELS the model is evaluated on the 10,000\n"
      "Fashion-MNIST test images (only the t10k files of --data-dir are read), or, when --data-dir\n"
      "is a folder of class subfolders (DIR/<class>/<image>.png|jpg, as Keras's\n"
      "image_dataset_from_directory), on all its images resized to the model's (H, W, 3) input\n"
      "(bilinear), labelled by their sorted class folder. A NaN or infinite\n"
      "value in INPUT or LABELS is an error naming its row and column (1-based; the column counts\n"
      "the row's values flattened), unless --allow-nonfinite. --loss auto picks sparse categorical\n"
      "crossentropy for class indices, categorical for one-hot rows, binary crossentropy for one\n"
      "0/1 output, mean squared error otherwise. Batch normalization runs in inference mode\n"
      "(moving statistics).\n"
      "\nExamples:\n"
      "  bnorm evaluate model.keras                        # Fashion-MNIST test set\n"
      "  bnorm evaluate model.keras x.npy labels.npy\n"
      "  bnorm evaluate tuned.keras --data-dir photos/       # photos/<class>/*.png\n"
      "  bnorm evaluate model.h5 x.csv onehot.csv --loss categorical_crossentropy");
  cmd->add_option("MODEL", o->model, "Model file (.keras, or legacy .h5)")->required();
  cmd->add_option("INPUT", o->input, "Input samples, one per row (.npy, or CSV)");
  cmd->add_option("LABELS", o->labels, "Labels, one row per sample: class index or one-hot (.npy, or CSV)");
  choices(cmd->add_option("--loss", o->loss, "Loss (Keras names)"), kLosses)->capture_default_str();
  cmd->add_flag("--from-logits", o->from_logits, "The model outputs logits, not probabilities");
  cmd->add_flag("--allow-nonfinite", o->allow_nonfinite,
                "Accept NaN and infinite values in INPUT and LABELS (a warning; the loss is then "
                "not finite)");
  cmd->add_option("--batch-size", o->batch_size, "Samples per forward pass (memory only: inference mode)")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_option("--data-dir", o->data_dir,
                  "Folder of the Fashion-MNIST test files (t10k-*), or of class subfolders of images; used "
                  "without INPUT and LABELS")
      ->capture_default_str();
  return [cmd, o]() -> int {
    if (!cmd->parsed()) return -1;
    return run_evaluate(*o);
  };
}

}  // namespace bnorm::cli
