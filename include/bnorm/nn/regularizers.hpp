// bnorm/nn/regularizers.hpp: Keras weight regularizers and constraints.
//
// Regularizer (keras.regularizers.L1 / L2 / L1L2): a penalty added to the loss,
//   loss(w) = l1 * sum |w| + l2 * sum w^2,   d loss / dw = l1 * sign(w) + 2 * l2 * w.
// Constraint (keras.constraints): a projection applied to a variable after each
// optimizer update (never during the forward pass). With Keras's epsilon 1e-7:
//   NonNeg:      w * (w >= 0)
//   MaxNorm:     w * clip(n, 0, max_value) / (1e-7 + n)              n = ||w||_2
//   MinMaxNorm:  w * (rate * clip(n, min, max) + (1 - rate) * n) / (1e-7 + n)
//   UnitNorm:    w / (1e-7 + n)
// Norms are over axis 0, as Keras's default: one per column of a Dense kernel (K, M),
// the whole vector for the 1-D gamma and beta.
#pragma once

#include <string>

#include "bnorm/core/tensor.hpp"

namespace bnorm::nn {

class Regularizer {
 public:
  // No regularization.
  Regularizer() = default;
  static Regularizer l1(float l1 = 0.01f) { return Regularizer(l1, 0.0f); }
  static Regularizer l2(float l2 = 0.01f) { return Regularizer(0.0f, l2); }
  static Regularizer l1_l2(float l1 = 0.0f, float l2 = 0.0f) { return Regularizer(l1, l2); }
  // "l1", "l2", "l1_l2" with Keras's defaults. Throws ArgumentError.
  static Regularizer from_name(const std::string& name);

  bool active() const noexcept { return active_; }
  float l1_factor() const noexcept { return l1_; }
  float l2_factor() const noexcept { return l2_; }
  // Penalty of `w` (0 when inactive), accumulated in double.
  float loss(const Tensor& w) const;
  // grad += d penalty / d w   (ACCUMULATED into grad, which has w's shape).
  void add_gradient(const Tensor& w, Tensor& grad) const;

  friend bool operator==(const Regularizer&, const Regularizer&) = default;

 private:
  Regularizer(float l1, float l2) : active_(true), l1_(l1), l2_(l2) {}
  bool active_ = false;
  float l1_ = 0.0f, l2_ = 0.0f;
};

class Constraint {
 public:
  enum class Kind { none, non_neg, max_norm, min_max_norm, unit_norm };
  Constraint() = default;
  static Constraint non_neg() { return Constraint(Kind::non_neg, 0, 0, 0); }
  static Constraint max_norm(float max_value = 2.0f) { return Constraint(Kind::max_norm, 0, max_value, 0); }
  static Constraint min_max_norm(float min_value = 0.0f, float max_value = 1.0f, float rate = 1.0f) {
    return Constraint(Kind::min_max_norm, min_value, max_value, rate);
  }
  static Constraint unit_norm() { return Constraint(Kind::unit_norm, 0, 0, 0); }
  // "non_neg", "max_norm", "min_max_norm", "unit_norm" with Keras defaults.
  static Constraint from_name(const std::string& name);

  Kind kind() const noexcept { return kind_; }
  bool active() const noexcept { return kind_ != Kind::none; }
  // min_max_norm: min_value, max_value, rate; max_norm: max_value.
  float min_value() const noexcept { return min_; }
  float max_value() const noexcept { return max_; }
  float rate() const noexcept { return rate_; }
  // Projects w in place.
  void apply(Tensor& w) const;

  friend bool operator==(const Constraint&, const Constraint&) = default;

 private:
  Constraint(Kind k, float lo, float hi, float rate) : kind_(k), min_(lo), max_(hi), rate_(rate) {}
  Kind kind_ = Kind::none;
  float min_ = 0.0f, max_ = 0.0f, rate_ = 0.0f;
};

}  // namespace bnorm::nn
