// bnorm/nn/metrics.hpp: Keras 3 stateful metrics (update_state / result / reset_state).
//
// Every metric keeps Keras's two float32 variables, total and count:
//   result = total / count   (0 when count == 0, Keras divide_no_nan)
// Mean (the loss tracker): update_state(value, w) does total += value * w, count += w.
// The Keras 3 trainer calls it once per batch with the batch's loss and
// w = batch size, so the epoch loss is the batch-size-weighted mean.
// Accuracy metrics (Keras MeanMetricWrapper): update_state(y_true, y_pred) computes a
// match (1 or 0) per element, reduces it to one value per sample (the mean over every
// axis after the first; a rank-1 match tensor is one value per sample), then
// total += sum of the sample values, count += number of samples.
//   BinaryAccuracy(threshold):   match = (y_true == (y_pred > threshold ? 1 : 0)),
//                                elementwise; y_true must hold exactly 0 or 1 to match
//   CategoricalAccuracy:         match = (argmax(y_true) == argmax(y_pred)) over the last axis
//   SparseCategoricalAccuracy:   match = (y_true == argmax(y_pred)), y_true class indices
//                                as floats
// argmax takes the first of equal maxima and orders -0.0 below +0.0 (Keras's TensorFlow
// argmax). Shapes: binary and categorical take y_true of y_pred's shape, except that a
// trailing 1 may differ (binary only, as Keras's squeeze_or_expand_to_same_rank); sparse
// takes y_pred.shape[:-1], optionally with a trailing 1. Else ShapeError, state unchanged.
// No sample weights.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "bnorm/core/tensor.hpp"

namespace bnorm::nn {

class Metric {
 public:
  virtual ~Metric() = default;
  // Keras class name ("Mean", "BinaryAccuracy", ...).
  virtual std::string class_name() const = 0;
  // Keras metric name ("loss", "accuracy", "binary_accuracy", ...).
  const std::string& name() const noexcept { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }

  // total / count in float32, 0 before any update.
  float result() const noexcept;
  void reset_state() noexcept { total_ = 0.0f, count_ = 0.0f; }
  float total() const noexcept { return total_; }
  float count() const noexcept { return count_; }
  // total += total, count += count (float32 additions): totals computed elsewhere, for
  // example the sum over processes of MeanMetricWrapper::batch_totals in data-parallel fit.
  void add_totals(float total, float count) noexcept { accumulate(total, count); }

 protected:
  explicit Metric(std::string name) : name_(std::move(name)) {}
  // total += sum, count += n (float32 additions, as Keras's assign_add).
  void accumulate(float sum, float n) noexcept { total_ += sum, count_ += n; }

 private:
  std::string name_;
  float total_ = 0.0f, count_ = 0.0f;
};

// keras.metrics.Mean.
class Mean final : public Metric {
 public:
  explicit Mean(std::string name = "mean") : Metric(std::move(name)) {}
  std::string class_name() const override { return "Mean"; }
  // total += value * sample_weight, count += sample_weight. Throws ArgumentError for a
  // negative or non-finite sample_weight.
  void update_state(float value, float sample_weight = 1.0f);
};

// A metric of (y_true, y_pred) averaged over samples (Keras MeanMetricWrapper).
class MeanMetricWrapper : public Metric {
 public:
  // Throws ShapeError (state unchanged) when the shapes do not fit.
  void update_state(const Tensor& y_true, const Tensor& y_pred);
  // What update_state adds, without adding it: (sum of the sample values, samples), in
  // double before the float32 additions. update_state(t, p) is
  // add_totals(float(batch_totals.first), float(batch_totals.second)). Throws as update_state.
  std::pair<double, double> batch_totals(const Tensor& y_true, const Tensor& y_pred) const;

 protected:
  using Metric::Metric;
  // The match tensor (one value per element of the aligned shape), and its shape.
  virtual Tensor matches(const Tensor& y_true, const Tensor& y_pred) const = 0;
};

class BinaryAccuracy final : public MeanMetricWrapper {
 public:
  explicit BinaryAccuracy(float threshold = 0.5f, std::string name = "binary_accuracy")
      : MeanMetricWrapper(std::move(name)), threshold_(threshold) {}
  std::string class_name() const override { return "BinaryAccuracy"; }
  float threshold() const noexcept { return threshold_; }

 protected:
  Tensor matches(const Tensor& y_true, const Tensor& y_pred) const override;

 private:
  float threshold_;
};

class CategoricalAccuracy final : public MeanMetricWrapper {
 public:
  explicit CategoricalAccuracy(std::string name = "categorical_accuracy")
      : MeanMetricWrapper(std::move(name)) {}
  std::string class_name() const override { return "CategoricalAccuracy"; }

 protected:
  Tensor matches(const Tensor& y_true, const Tensor& y_pred) const override;
};

class SparseCategoricalAccuracy final : public MeanMetricWrapper {
 public:
  explicit SparseCategoricalAccuracy(std::string name = "sparse_categorical_accuracy")
      : MeanMetricWrapper(std::move(name)) {}
  std::string class_name() const override { return "SparseCategoricalAccuracy"; }

 protected:
  Tensor matches(const Tensor& y_true, const Tensor& y_pred) const override;
};

// compile(metrics=[name]) as Keras 3 resolves it (trainers/compile_utils.get_metric), the
// metric named `name`:
//   "accuracy" / "acc": from the shapes alone (the loss plays no part in Keras 3 or
//     tf_keras 2.x):  BinaryAccuracy if y_pred.shape[-1] == 1; else
//     SparseCategoricalAccuracy if rank(y_true) < rank(y_pred) or y_true.shape[-1] == 1;
//     else CategoricalAccuracy.
//   "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy" and the class
//     names: that metric.
// Throws ArgumentError for another name, ShapeError for a rank-0 shape.
std::unique_ptr<MeanMetricWrapper> make_metric(const std::string& name, const Shape& y_true_shape,
                                               const Shape& y_pred_shape);
// The same when y_true's shape is not at hand, inferred from the loss:
// "sparse_categorical_crossentropy" means y_true is y_pred.shape[:-1], any other loss
// that y_true has y_pred's shape. (So binary_crossentropy on y_pred (B, 3) gives
// CategoricalAccuracy, as Keras 3 does, not BinaryAccuracy as Keras 2.2 did.)
std::unique_ptr<MeanMetricWrapper> make_metric(const std::string& name, const std::string& loss_name,
                                               const Shape& y_pred_shape);

}  // namespace bnorm::nn
