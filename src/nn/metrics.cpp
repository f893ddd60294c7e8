// Keras 3 metrics (keras/src/metrics/{reduction_metrics,accuracy_metrics}.py,
// keras/src/trainers/compile_utils.py); the contract is in bnorm/nn/metrics.hpp.
#include "bnorm/nn/metrics.hpp"

#include <cfloat>
#include <cmath>
#include <vector>

#include "bnorm/core/error.hpp"

namespace bnorm::nn {

namespace {

std::string where_of(const Metric& m) {
  return m.class_name() + " '" + m.name() + "'";
}

bool is_with_trailing_one(const Shape& a, const Shape& b) {
  if (a.rank() != b.rank() + 1 || a[a.rank() - 1] != 1) return false;
  for (int i = 0; i < b.rank(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

Shape without_last(const Shape& s) {
  return Shape(std::vector<std::int64_t>(s.dims().begin(), s.dims().end() - 1));
}

// Keras's TensorFlow argmax: first maximum; -0.0 counts as -FLT_MIN (below +0.0).
std::int64_t argmax_row(const float* x, std::int64_t n) {
  auto key = [](float v) { return (v == 0.0f && std::signbit(v)) ? -FLT_MIN : v; };
  std::int64_t best = 0;
  float best_value = key(x[0]);
  for (std::int64_t j = 1; j < n; ++j) {
    const float v = key(x[j]);
    if (v > best_value) best = j, best_value = v;
  }
  return best;
}

void check_rank(const Tensor& y_pred, int min_rank, const std::string& where) {
  if (y_pred.rank() < min_rank || y_pred.numel() == 0) {
    throw ShapeError(where, "y_pred", "a non-empty tensor of rank >= " + std::to_string(min_rank),
                     "shape " + y_pred.shape().str());
  }
}

}  // namespace

float Metric::result() const noexcept {
  return count_ == 0.0f ? 0.0f : total_ / count_;
}

void Mean::update_state(float value, float sample_weight) {
  if (!(std::isfinite(sample_weight) && sample_weight >= 0.0f)) {
    throw ArgumentError(where_of(*this), "sample_weight", "a finite number >= 0",
                        std::to_string(sample_weight));
  }
  accumulate(value * sample_weight, sample_weight);
}

void MeanMetricWrapper::update_state(const Tensor& y_true, const Tensor& y_pred) {
  const auto [total, samples] = batch_totals(y_true, y_pred);  // validates, throws before any change
  accumulate(static_cast<float>(total), static_cast<float>(samples));
}

std::pair<double, double> MeanMetricWrapper::batch_totals(const Tensor& y_true, const Tensor& y_pred) const {
  const Tensor m = matches(y_true, y_pred);
  // One value per sample: the mean over the axes after the first.
  std::int64_t samples = m.rank() == 0 ? 1 : m.dim(0);
  const std::int64_t per_sample = samples == 0 ? 0 : m.numel() / samples;
  double total = 0.0;
  for (std::int64_t s = 0; s < samples; ++s) {
    double row = 0.0;
    for (std::int64_t j = 0; j < per_sample; ++j) row += static_cast<double>(m[s * per_sample + j]);
    total += static_cast<double>(static_cast<float>(row / static_cast<double>(per_sample)));
  }
  return {total, static_cast<double>(samples)};
}

Tensor BinaryAccuracy::matches(const Tensor& y_true, const Tensor& y_pred) const {
  const std::string where = where_of(*this);
  check_rank(y_pred, 1, where);
  const Shape& t = y_true.shape();
  const Shape& p = y_pred.shape();
  Shape aligned = p;
  if (t == p) {
  } else if (is_with_trailing_one(t, p)) {
    aligned = p.rank() == 1 ? t : p;
  } else if (is_with_trailing_one(p, t)) {
    aligned = t.rank() == 1 ? p : t;
  } else {
    throw ShapeError(where, "y_true",
                     "the shape of y_pred " + p.str() + " (or it with a trailing 1 added or removed)",
                     t.str());
  }
  Tensor m(aligned);
  for (std::int64_t i = 0; i < m.numel(); ++i) {
    const float predicted = y_pred[i] > threshold_ ? 1.0f : 0.0f;
    m[i] = y_true[i] == predicted ? 1.0f : 0.0f;
  }
  return m;
}

Tensor CategoricalAccuracy::matches(const Tensor& y_true, const Tensor& y_pred) const {
  const std::string where = where_of(*this);
  check_rank(y_pred, 1, where);
  if (y_true.shape() != y_pred.shape()) {
    throw ShapeError(where, "y_true", "one-hot rows of y_pred's shape " + y_pred.shape().str(),
                     y_true.shape().str());
  }
  const std::int64_t n = y_pred.dim(y_pred.rank() - 1);
  Tensor m(without_last(y_pred.shape()));
  for (std::int64_t r = 0; r < m.numel(); ++r) {
    m[r] = argmax_row(y_true.data() + r * n, n) == argmax_row(y_pred.data() + r * n, n) ? 1.0f : 0.0f;
  }
  return m;
}

Tensor SparseCategoricalAccuracy::matches(const Tensor& y_true, const Tensor& y_pred) const {
  const std::string where = where_of(*this);
  check_rank(y_pred, 1, where);
  const Shape batch = without_last(y_pred.shape());
  if (!(y_true.shape() == batch || is_with_trailing_one(y_true.shape(), batch))) {
    throw ShapeError(where, "y_true",
                     "class indices of shape " + batch.str() + " (y_pred's shape " + y_pred.shape().str() +
                         " without its last axis, or with a trailing 1)",
                     y_true.shape().str());
  }
  const std::int64_t n = y_pred.dim(y_pred.rank() - 1);
  Tensor m(batch);
  for (std::int64_t r = 0; r < m.numel(); ++r) {
    m[r] = y_true[r] == static_cast<float>(argmax_row(y_pred.data() + r * n, n)) ? 1.0f : 0.0f;
  }
  return m;
}

std::unique_ptr<MeanMetricWrapper> make_metric(const std::string& name, const Shape& y_true_shape,
                                               const Shape& y_pred_shape) {
  std::unique_ptr<MeanMetricWrapper> m;
  if (name == "accuracy" || name == "acc") {
    if (y_true_shape.rank() == 0 || y_pred_shape.rank() == 0) {
      throw ShapeError("make_metric", y_true_shape.rank() == 0 ? "y_true_shape" : "y_pred_shape",
                       "a shape of rank >= 1", "a scalar shape");
    }
    const std::int64_t t_last = y_true_shape[y_true_shape.rank() - 1];
    const std::int64_t p_last = y_pred_shape[y_pred_shape.rank() - 1];
    const bool is_binary = p_last == 1;
    const bool is_sparse = y_true_shape.rank() < y_pred_shape.rank() || (t_last == 1 && p_last > 1);
    if (is_binary) {
      m = std::make_unique<BinaryAccuracy>(0.5f, name);
    } else if (is_sparse) {
      m = std::make_unique<SparseCategoricalAccuracy>(name);
    } else {
      m = std::make_unique<CategoricalAccuracy>(name);
    }
  } else if (name == "binary_accuracy" || name == "BinaryAccuracy") {
    m = std::make_unique<BinaryAccuracy>(0.5f, name);
  } else if (name == "categorical_accuracy" || name == "CategoricalAccuracy") {
    m = std::make_unique<CategoricalAccuracy>(name);
  } else if (name == "sparse_categorical_accuracy" || name == "SparseCategoricalAccuracy") {
    m = std::make_unique<SparseCategoricalAccuracy>(name);
  } else {
    throw ArgumentError(
        "make_metric", "name",
        "one of accuracy, acc, binary_accuracy, categorical_accuracy, sparse_categorical_accuracy "
        "(or a class name)",
        "\"" + name + "\"");
  }
  return m;
}

std::unique_ptr<MeanMetricWrapper> make_metric(const std::string& name, const std::string& loss_name,
                                               const Shape& y_pred_shape) {
  if (y_pred_shape.rank() == 0)
    throw ShapeError("make_metric", "y_pred_shape", "a shape of rank >= 1", "a scalar shape");
  const bool sparse =
      loss_name == "sparse_categorical_crossentropy" || loss_name == "SparseCategoricalCrossentropy";
  const Shape y_true_shape = sparse && y_pred_shape.rank() >= 2 ? without_last(y_pred_shape) : y_pred_shape;
  if (sparse && y_pred_shape.rank() < 2) {
    // y_true would be rank 0; Keras's rule then only looks at y_pred's last dimension.
    return make_metric(name, Shape{1}, y_pred_shape);
  }
  return make_metric(name, y_true_shape, y_pred_shape);
}

}  // namespace bnorm::nn
