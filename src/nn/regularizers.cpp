#include "bnorm/nn/regularizers.hpp"

#include <algorithm>
#include <cmath>

#include "bnorm/core/error.hpp"

namespace bnorm::nn {

namespace {
constexpr double kKerasEpsilon = 1e-7;  // keras.config.epsilon()

// Keras's norm constraints use axis=0: one norm per column of w seen as
// (w.dim(0), rest), i.e. per output unit of a Dense kernel, the whole vector for 1-D.
template <typename F>
void rescale_columns(Tensor& w, F&& desired_over_norm) {
  const std::int64_t rows = w.rank() ? w.dim(0) : 1;
  const std::int64_t cols = rows ? w.numel() / rows : 0;
  for (std::int64_t c = 0; c < cols; ++c) {
    double s = 0.0;
    for (std::int64_t r = 0; r < rows; ++r) s += static_cast<double>(w[r * cols + c]) * w[r * cols + c];
    const double factor = desired_over_norm(std::sqrt(s));
    for (std::int64_t r = 0; r < rows; ++r) w[r * cols + c] = static_cast<float>(w[r * cols + c] * factor);
  }
}
}  // namespace

Regularizer Regularizer::from_name(const std::string& name) {
  if (name == "l1") return l1();
  if (name == "l2") return l2();
  if (name == "l1_l2") return l1_l2();
  throw ArgumentError("Regularizer", "name", "one of \"l1\", \"l2\", \"l1_l2\"", "\"" + name + "\"");
}

float Regularizer::loss(const Tensor& w) const {
  if (!active_) return 0.0f;
  double s1 = 0.0, s2 = 0.0;
  for (float v : w.values()) {
    s1 += std::fabs(static_cast<double>(v));
    s2 += static_cast<double>(v) * v;
  }
  return static_cast<float>(l1_ * s1 + l2_ * s2);
}

void Regularizer::add_gradient(const Tensor& w, Tensor& grad) const {
  if (!active_) return;
  for (std::int64_t i = 0; i < w.numel(); ++i) {
    const float v = w[i];
    const float sign = v > 0 ? 1.0f : (v < 0 ? -1.0f : 0.0f);
    grad[i] += l1_ * sign + 2.0f * l2_ * v;
  }
}

Constraint Constraint::from_name(const std::string& name) {
  if (name == "non_neg") return non_neg();
  if (name == "max_norm") return max_norm();
  if (name == "min_max_norm") return min_max_norm();
  if (name == "unit_norm") return unit_norm();
  throw ArgumentError("Constraint", "name",
                      "one of \"non_neg\", \"max_norm\", \"min_max_norm\", \"unit_norm\"",
                      "\"" + name + "\"");
}

void Constraint::apply(Tensor& w) const {
  switch (kind_) {
    case Kind::none: return;
    case Kind::non_neg:
      for (float& v : w.values()) v = v >= 0.0f ? v : 0.0f;
      return;
    case Kind::max_norm:
      rescale_columns(w, [&](double n) { return std::clamp(n, 0.0, static_cast<double>(max_)) / (kKerasEpsilon + n); });
      return;
    case Kind::min_max_norm:
      rescale_columns(w, [&](double n) {
        const double desired =
            rate_ * std::clamp(n, static_cast<double>(min_), static_cast<double>(max_)) + (1.0 - rate_) * n;
        return desired / (kKerasEpsilon + n);
      });
      return;
    case Kind::unit_norm:
      rescale_columns(w, [](double n) { return 1.0 / (kKerasEpsilon + n); });
      return;
  }
}

}  // namespace bnorm::nn
