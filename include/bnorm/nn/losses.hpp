// bnorm/nn/losses.hpp: Keras 3 losses with their gradient with respect to y_pred.
//
// compute(y_true, y_pred) returns the scalar loss as Keras's compile() computes it (a
// LossFunctionWrapper with reduction "sum_over_batch_size") and d loss / d y_pred (the
// gradient TensorFlow's GradientTape gives, same shape as y_pred). Both are float32.
//
// Shapes (Keras squeeze_or_expand_to_same_rank): y_true has y_pred's shape, or differs
// from it only by a trailing dimension of 1 (y_true (B,) with y_pred (B, 1), or y_true
// (B, 1) with y_pred (B,)); it is then read with y_pred's shape. Sparse categorical
// crossentropy instead takes y_true of shape y_pred.shape[:-1] (or that plus a trailing
// 1) holding class indices as floats. Anything else, a rank-0 or an empty y_pred, throws
// ShapeError naming y_true / y_pred. Nothing broadcasts.
//
// Reduction ("sum_over_batch_size"): the built-in losses first reduce the last axis
// (C = y_pred.shape[-1], R = numel / C rows), giving one value per row, then
//   loss = sum over the R rows / R
// so d loss / d y_pred carries a factor 1/R (and 1/C for the per-row means). A custom
// elementwise loss is reduced as Keras reduces a user function: sum over all elements /
// numel.
//
// Formulas per row (t = y_true, p = y_pred, eps = 1e-7, hi = float32(1 - 1e-7);
// clip(x) = min(max(x, eps), hi), whose gradient is 0 where x < eps or x > hi):
//   mean_squared_error:   mean_j (t_j - p_j)^2
//   mean_absolute_error:  mean_j |t_j - p_j|                   (gradient sign(p - t), 0 at p = t)
//   binary_crossentropy:  mean_j -(t_j log q_j + (1 - t_j) log(1 - q_j)),  q = clip(p)
//     from_logits:        mean_j max(x,0) - x t + log(1 + exp(-|x|))      (x = p; gradient
//                         sigmoid(x) - t)
//   categorical_crossentropy: q = clip(p / sum_j p_j);  -sum_j t_j log q_j   (the gradient
//                         goes through the normalization)
//     from_logits:        sum_j t_j (logsumexp(x) - x_j); gradient sum_j(t_j) softmax(x) - t
//                         (softmax(x) - t when the row of t sums to 1)
//   sparse_categorical_crossentropy (label k): l = log(clip(p)) (no normalization);
//                         logsumexp(l) - l_k; gradient (softmax(l) - onehot(k)) / clip(p)
//     from_logits:        logsumexp(x) - x_k; gradient softmax(x) - onehot(k)
// Labels of the sparse loss must be integers in [0, C) (TensorFlow truncates a fractional
// label silently; bnorm throws ArgumentError).
//
// Arithmetic: elementwise float32 as Keras; sums accumulated in double and rounded once.
// Losses are stateless and const: one object may be shared.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "bnorm/core/tensor.hpp"

namespace bnorm::nn {

struct LossValue {
  float value = 0.0f;
  Tensor grad;  // d value / d y_pred, y_pred's shape
};

class Loss {
 public:
  virtual ~Loss() = default;

  // Keras loss name ("mean_squared_error", or the identifier given to make_loss, "mse").
  const std::string& name() const noexcept { return name_; }

  // The loss and its gradient with respect to y_pred. Throws ShapeError / ArgumentError
  // as described above.
  virtual LossValue compute(const Tensor& y_true, const Tensor& y_pred) const = 0;
  // The loss alone.
  virtual float value(const Tensor& y_true, const Tensor& y_pred) const {
    return compute(y_true, y_pred).value;
  }

  // A user loss applied elementwise, as Keras's compile(loss=lambda y_true, y_pred: ...)
  // with a function returning one value per element (e.g. (t - p)**2):
  //   loss = sum_i f(t_i, p_i) / numel,   d loss / d p_i = df_dpred(t_i, p_i) / numel.
  // Shapes as for the built-in losses (a trailing 1 may differ).
  static std::unique_ptr<Loss> custom(std::string name, std::function<float(float, float)> f,
                                      std::function<float(float, float)> df_dpred);
  // A user loss computing value and gradient itself. bnorm checks that the returned
  // gradient has y_pred's shape (else ShapeError); the function sees the tensors as given.
  static std::unique_ptr<Loss> from_function(std::string name,
                                             std::function<LossValue(const Tensor&, const Tensor&)> fn);

 protected:
  explicit Loss(std::string name) : name_(std::move(name)) {}

 private:
  std::string name_;
};

class MeanSquaredError final : public Loss {
 public:
  explicit MeanSquaredError(std::string name = "mean_squared_error") : Loss(std::move(name)) {}
  LossValue compute(const Tensor& y_true, const Tensor& y_pred) const override;
};

class MeanAbsoluteError final : public Loss {
 public:
  explicit MeanAbsoluteError(std::string name = "mean_absolute_error") : Loss(std::move(name)) {}
  LossValue compute(const Tensor& y_true, const Tensor& y_pred) const override;
};

class BinaryCrossentropy final : public Loss {
 public:
  explicit BinaryCrossentropy(bool from_logits = false, std::string name = "binary_crossentropy")
      : Loss(std::move(name)), from_logits_(from_logits) {}
  bool from_logits() const noexcept { return from_logits_; }
  LossValue compute(const Tensor& y_true, const Tensor& y_pred) const override;

 private:
  bool from_logits_;
};

class CategoricalCrossentropy final : public Loss {
 public:
  explicit CategoricalCrossentropy(bool from_logits = false, std::string name = "categorical_crossentropy")
      : Loss(std::move(name)), from_logits_(from_logits) {}
  bool from_logits() const noexcept { return from_logits_; }
  LossValue compute(const Tensor& y_true, const Tensor& y_pred) const override;

 private:
  bool from_logits_;
};

class SparseCategoricalCrossentropy final : public Loss {
 public:
  explicit SparseCategoricalCrossentropy(bool from_logits = false,
                                         std::string name = "sparse_categorical_crossentropy")
      : Loss(std::move(name)), from_logits_(from_logits) {}
  bool from_logits() const noexcept { return from_logits_; }
  LossValue compute(const Tensor& y_true, const Tensor& y_pred) const override;

 private:
  bool from_logits_;
};

// Keras `losses.get(name)` as compile(loss="...") uses it. Function names and aliases keep
// the identifier as the loss name: "mse", "MSE", "mean_squared_error", "mae", "MAE",
// "mean_absolute_error", "bce", "BCE", "binary_crossentropy", "categorical_crossentropy",
// "sparse_categorical_crossentropy". Class names ("MeanSquaredError", "MeanAbsoluteError",
// "BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy") give
// the class's default name. from_logits is false. Throws ArgumentError for other names.
std::unique_ptr<Loss> make_loss(const std::string& name);

}  // namespace bnorm::nn
