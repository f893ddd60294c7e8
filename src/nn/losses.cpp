// Keras 3 losses (keras/src/losses/losses.py, keras/src/backend/tensorflow/nn.py); the
// formulas are in bnorm/nn/losses.hpp. Gradients follow what TensorFlow's autodiff does
// with Keras's graph: the clip's gradient is 0 outside [eps, hi] (and passes at the
// bounds), the softmax cross-entropies use the kernels' backprop.
#include "bnorm/nn/losses.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "bnorm/core/error.hpp"

namespace bnorm::nn {

namespace {

constexpr float kEpsilon = 1e-7f;                               // keras.config.epsilon()
const float kOneMinusEpsilon = static_cast<float>(1.0 - 1e-7);  // Python 1.0 - 1e-7, then float32

std::string where_of(const Loss& loss) {
  return "loss '" + loss.name() + "'";
}

void check_pred(const Tensor& y_pred, const std::string& where) {
  if (y_pred.rank() == 0) throw ShapeError(where, "y_pred", "a tensor of rank >= 1", "a scalar");
  if (y_pred.numel() == 0)
    throw ShapeError(where, "y_pred", "a non-empty tensor", "shape " + y_pred.shape().str());
}

// a == b + [1]
bool is_with_trailing_one(const Shape& a, const Shape& b) {
  if (a.rank() != b.rank() + 1 || a[a.rank() - 1] != 1) return false;
  for (int i = 0; i < b.rank(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

// Keras squeeze_or_expand_to_same_rank(y_true, y_pred): the shape both are read with.
// When the ranks differ by one (a trailing 1), a rank-1 tensor is expanded, otherwise the
// other one is squeezed. Row-major data is the same either way.
Shape aligned_shape(const Tensor& y_true, const Tensor& y_pred, const std::string& where) {
  check_pred(y_pred, where);
  const Shape& t = y_true.shape();
  const Shape& p = y_pred.shape();
  if (t == p) return p;
  if (is_with_trailing_one(t, p)) return p.rank() == 1 ? t : p;  // expand y_pred, or squeeze y_true
  if (is_with_trailing_one(p, t)) return t.rank() == 1 ? p : t;  // expand y_true, or squeeze y_pred
  throw ShapeError(where, "y_true",
                   "the shape of y_pred " + p.str() + " (or it with a trailing 1 added or removed)", t.str());
}

struct Rows {
  std::int64_t count;   // R
  std::int64_t length;  // C, the last axis
};

Rows rows_of(const Shape& s) {
  const std::int64_t c = s[s.rank() - 1];
  return {s.numel() / c, c};
}

// The softmax cross-entropy of one row of logits x (n values) against `target`
// (dense labels, n values) or a class index: TensorFlow's Xent kernels,
//   shifted = x - max(x);  e = exp(shifted);  s = sum(e)
//   loss = sum_j t_j (log s - shifted_j);   backprop_j = (e_j / s) * sum(t) - t_j
// (the exact gradient; sum(t) = 1 for a class index). backprop receives n values, unscaled.
double softmax_xent_row(const float* x, std::int64_t n, const float* target, std::int64_t label,
                        float* backprop) {
  float mx = x[0];
  for (std::int64_t j = 1; j < n; ++j) mx = std::max(mx, x[j]);
  double s = 0.0;
  for (std::int64_t j = 0; j < n; ++j) {
    backprop[j] = std::exp(x[j] - mx);
    s += static_cast<double>(backprop[j]);
  }
  const float sum = static_cast<float>(s);
  const float log_sum = std::log(sum);
  float target_sum = 1.0f;
  if (target != nullptr) {
    double ts = 0.0;
    for (std::int64_t j = 0; j < n; ++j) ts += static_cast<double>(target[j]);
    target_sum = static_cast<float>(ts);
  }
  double loss = 0.0;
  for (std::int64_t j = 0; j < n; ++j) {
    const float shifted = x[j] - mx;
    const float t = target != nullptr ? target[j] : (j == label ? 1.0f : 0.0f);
    if (target != nullptr)
      loss += static_cast<double>(t * (log_sum - shifted));
    else if (j == label)
      loss = static_cast<double>(log_sum - shifted);
    backprop[j] = (backprop[j] / sum) * target_sum - t;
  }
  return loss;
}

}  // namespace

// ------------------------------------------------------------------ regression

LossValue MeanSquaredError::compute(const Tensor& y_true, const Tensor& y_pred) const {
  const Rows r = rows_of(aligned_shape(y_true, y_pred, where_of(*this)));
  LossValue out{0.0f, Tensor(y_pred.shape())};
  const float* t = y_true.data();
  const float* p = y_pred.data();
  float* g = out.grad.data();
  // d/dp of sum_rows(mean_j (t - p)^2) / R: (1/R)/C * 2 (t - p) * (-1)
  const float g_row = 1.0f / static_cast<float>(r.count);
  const float g_el = g_row / static_cast<float>(r.length);
  double total = 0.0;
  for (std::int64_t row = 0; row < r.count; ++row) {
    double s = 0.0;
    for (std::int64_t j = row * r.length; j < (row + 1) * r.length; ++j) {
      const float d = t[j] - p[j];
      s += static_cast<double>(d * d);
      g[j] = -(g_el * (d * 2.0f));
    }
    total += static_cast<double>(static_cast<float>(s / static_cast<double>(r.length)));
  }
  out.value = static_cast<float>(total / static_cast<double>(r.count));
  return out;
}

LossValue MeanAbsoluteError::compute(const Tensor& y_true, const Tensor& y_pred) const {
  const Rows r = rows_of(aligned_shape(y_true, y_pred, where_of(*this)));
  LossValue out{0.0f, Tensor(y_pred.shape())};
  const float* t = y_true.data();
  const float* p = y_pred.data();
  float* g = out.grad.data();
  const float g_el = (1.0f / static_cast<float>(r.count)) / static_cast<float>(r.length);
  double total = 0.0;
  for (std::int64_t row = 0; row < r.count; ++row) {
    double s = 0.0;
    for (std::int64_t j = row * r.length; j < (row + 1) * r.length; ++j) {
      const float d = t[j] - p[j];
      s += static_cast<double>(std::fabs(d));
      const float sign = d > 0.0f ? 1.0f : (d < 0.0f ? -1.0f : 0.0f);
      g[j] = -(g_el * sign);
    }
    total += static_cast<double>(static_cast<float>(s / static_cast<double>(r.length)));
  }
  out.value = static_cast<float>(total / static_cast<double>(r.count));
  return out;
}

// ------------------------------------------------------------------ binary

LossValue BinaryCrossentropy::compute(const Tensor& y_true, const Tensor& y_pred) const {
  const Rows r = rows_of(aligned_shape(y_true, y_pred, where_of(*this)));
  LossValue out{0.0f, Tensor(y_pred.shape())};
  const float* t = y_true.data();
  const float* p = y_pred.data();
  float* g = out.grad.data();
  const float g_el = (1.0f / static_cast<float>(r.count)) / static_cast<float>(r.length);
  double total = 0.0;
  for (std::int64_t row = 0; row < r.count; ++row) {
    double s = 0.0;
    for (std::int64_t j = row * r.length; j < (row + 1) * r.length; ++j) {
      if (from_logits_) {
        // tf.nn.sigmoid_cross_entropy_with_logits: max(x, 0) - x t + log1p(exp(-|x|))
        const float x = p[j];
        const bool pos = x >= 0.0f;
        const float e = std::exp(pos ? -x : x);
        s += static_cast<double>(((pos ? x : 0.0f) - x * t[j]) + std::log1p(e));
        const float sig_part = e / (1.0f + e);  // d log1p(exp(-|x|)) / d(-|x|)
        g[j] = g_el * (((pos ? 1.0f : 0.0f) - t[j]) + (pos ? -sig_part : sig_part));
      } else {
        const float q = std::min(std::max(p[j], kEpsilon), kOneMinusEpsilon);
        float bce = t[j] * std::log(q);
        bce += (1.0f - t[j]) * std::log(1.0f - q);
        s += static_cast<double>(-bce);
        const bool inside = p[j] >= kEpsilon && p[j] <= kOneMinusEpsilon;
        g[j] = inside ? (g_el * (1.0f - t[j])) / (1.0f - q) - (g_el * t[j]) / q : 0.0f;
      }
    }
    total += static_cast<double>(static_cast<float>(s / static_cast<double>(r.length)));
  }
  out.value = static_cast<float>(total / static_cast<double>(r.count));
  return out;
}

// ------------------------------------------------------------------ categorical

LossValue CategoricalCrossentropy::compute(const Tensor& y_true, const Tensor& y_pred) const {
  const Rows r = rows_of(aligned_shape(y_true, y_pred, where_of(*this)));
  LossValue out{0.0f, Tensor(y_pred.shape())};
  const float* t = y_true.data();
  const float* p = y_pred.data();
  float* g = out.grad.data();
  const float g_row = 1.0f / static_cast<float>(r.count);
  const std::int64_t n = r.length;
  std::vector<float> gq(static_cast<std::size_t>(n));
  double total = 0.0;
  for (std::int64_t row = 0; row < r.count; ++row) {
    const float* pr = p + row * n;
    const float* tr = t + row * n;
    float* gr = g + row * n;
    if (from_logits_) {
      total += static_cast<double>(static_cast<float>(softmax_xent_row(pr, n, tr, -1, gr)));
      for (std::int64_t j = 0; j < n; ++j) gr[j] = g_row * gr[j];
      continue;
    }
    // q = clip(p / S), S = sum p;  loss = -sum t log q
    double sd = 0.0;
    for (std::int64_t j = 0; j < n; ++j) sd += static_cast<double>(pr[j]);
    const float sum = static_cast<float>(sd);
    double loss = 0.0;
    for (std::int64_t j = 0; j < n; ++j) {
      const float q_raw = pr[j] / sum;
      const float q = std::min(std::max(q_raw, kEpsilon), kOneMinusEpsilon);
      loss += static_cast<double>(tr[j] * std::log(q));
      const bool inside = q_raw >= kEpsilon && q_raw <= kOneMinusEpsilon;
      gq[static_cast<std::size_t>(j)] = inside ? -(g_row * tr[j]) / q : 0.0f;  // d loss / d q_j
    }
    total += static_cast<double>(static_cast<float>(-loss));
    // d q_i / d p_j = delta_ij / S - p_i / S^2:  g_j = gq_j / S + sum_i gq_i * (-p_i / S) / S
    double cross = 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
      cross += static_cast<double>(gq[static_cast<std::size_t>(i)] * ((-pr[i] / sum) / sum));
    }
    const float c = static_cast<float>(cross);
    for (std::int64_t j = 0; j < n; ++j) gr[j] = gq[static_cast<std::size_t>(j)] / sum + c;
  }
  out.value = static_cast<float>(total / static_cast<double>(r.count));
  return out;
}

LossValue SparseCategoricalCrossentropy::compute(const Tensor& y_true, const Tensor& y_pred) const {
  const std::string where = where_of(*this);
  check_pred(y_pred, where);
  const Shape& ps = y_pred.shape();
  const Shape batch(std::vector<std::int64_t>(ps.dims().begin(), ps.dims().end() - 1));
  if (!(y_true.shape() == batch || is_with_trailing_one(y_true.shape(), batch))) {
    throw ShapeError(where, "y_true",
                     "class indices of shape " + batch.str() + " (y_pred's shape " + ps.str() +
                         " without its last axis, or with a trailing 1)",
                     y_true.shape().str());
  }
  const Rows r = rows_of(ps);
  for (std::int64_t i = 0; i < r.count; ++i) {
    const float k = y_true[i];
    if (!(k >= 0.0f && k < static_cast<float>(r.length) && std::floor(k) == k)) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.9g at index %lld", static_cast<double>(k), static_cast<long long>(i));
      throw ArgumentError(where, "y_true", "integer class indices in [0, " + std::to_string(r.length) + ")",
                          buf);
    }
  }
  LossValue out{0.0f, Tensor(ps)};
  const float* p = y_pred.data();
  float* g = out.grad.data();
  const float g_row = 1.0f / static_cast<float>(r.count);
  const std::int64_t n = r.length;
  std::vector<float> logits(static_cast<std::size_t>(n));
  double total = 0.0;
  for (std::int64_t row = 0; row < r.count; ++row) {
    const auto label = static_cast<std::int64_t>(y_true[row]);
    const float* pr = p + row * n;
    float* gr = g + row * n;
    if (from_logits_) {
      total += static_cast<double>(static_cast<float>(softmax_xent_row(pr, n, nullptr, label, gr)));
      for (std::int64_t j = 0; j < n; ++j) gr[j] = g_row * gr[j];
      continue;
    }
    // logits = log(clip(p)); the log's gradient is 1 / clip(p), the clip's 0 outside.
    for (std::int64_t j = 0; j < n; ++j) {
      logits[static_cast<std::size_t>(j)] = std::log(std::min(std::max(pr[j], kEpsilon), kOneMinusEpsilon));
    }
    total += static_cast<double>(static_cast<float>(softmax_xent_row(logits.data(), n, nullptr, label, gr)));
    for (std::int64_t j = 0; j < n; ++j) {
      const float q = std::min(std::max(pr[j], kEpsilon), kOneMinusEpsilon);
      const bool inside = pr[j] >= kEpsilon && pr[j] <= kOneMinusEpsilon;
      gr[j] = inside ? (g_row * gr[j]) / q : 0.0f;
    }
  }
  out.value = static_cast<float>(total / static_cast<double>(r.count));
  return out;
}

// ------------------------------------------------------------------ user losses

namespace {

class ElementwiseLoss final : public Loss {
 public:
  ElementwiseLoss(std::string name, std::function<float(float, float)> f,
                  std::function<float(float, float)> df)
      : Loss(std::move(name)), f_(std::move(f)), df_(std::move(df)) {}

  LossValue compute(const Tensor& y_true, const Tensor& y_pred) const override {
    aligned_shape(y_true, y_pred, where_of(*this));
    LossValue out{0.0f, Tensor(y_pred.shape())};
    const std::int64_t n = y_pred.numel();
    const float scale = 1.0f / static_cast<float>(n);  // sum_over_batch_size: sum / numel
    double total = 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
      total += static_cast<double>(f_(y_true[i], y_pred[i]));
      out.grad[i] = scale * df_(y_true[i], y_pred[i]);
    }
    out.value = static_cast<float>(total / static_cast<double>(n));
    return out;
  }

 private:
  std::function<float(float, float)> f_, df_;
};

class FunctionLoss final : public Loss {
 public:
  FunctionLoss(std::string name, std::function<LossValue(const Tensor&, const Tensor&)> fn)
      : Loss(std::move(name)), fn_(std::move(fn)) {}

  LossValue compute(const Tensor& y_true, const Tensor& y_pred) const override {
    LossValue out = fn_(y_true, y_pred);
    if (out.grad.shape() != y_pred.shape()) {
      throw ShapeError(where_of(*this), "gradient returned by the loss function",
                       "y_pred's shape " + y_pred.shape().str(), out.grad.shape().str());
    }
    return out;
  }

 private:
  std::function<LossValue(const Tensor&, const Tensor&)> fn_;
};

}  // namespace

std::unique_ptr<Loss> Loss::custom(std::string name, std::function<float(float, float)> f,
                                   std::function<float(float, float)> df_dpred) {
  if (!f || !df_dpred) {
    throw ArgumentError("Loss::custom '" + name + "'", !f ? "f" : "df_dpred", "a callable",
                        "an empty std::function");
  }
  return std::make_unique<ElementwiseLoss>(std::move(name), std::move(f), std::move(df_dpred));
}

std::unique_ptr<Loss> Loss::from_function(std::string name,
                                          std::function<LossValue(const Tensor&, const Tensor&)> fn) {
  if (!fn)
    throw ArgumentError("Loss::from_function '" + name + "'", "fn", "a callable", "an empty std::function");
  return std::make_unique<FunctionLoss>(std::move(name), std::move(fn));
}

std::unique_ptr<Loss> make_loss(const std::string& name) {
  if (name == "mse" || name == "MSE" || name == "mean_squared_error")
    return std::make_unique<MeanSquaredError>(name);
  if (name == "MeanSquaredError") return std::make_unique<MeanSquaredError>();
  if (name == "mae" || name == "MAE" || name == "mean_absolute_error")
    return std::make_unique<MeanAbsoluteError>(name);
  if (name == "MeanAbsoluteError") return std::make_unique<MeanAbsoluteError>();
  if (name == "bce" || name == "BCE" || name == "binary_crossentropy") {
    return std::make_unique<BinaryCrossentropy>(false, name);
  }
  if (name == "BinaryCrossentropy") return std::make_unique<BinaryCrossentropy>();
  if (name == "categorical_crossentropy") return std::make_unique<CategoricalCrossentropy>(false, name);
  if (name == "CategoricalCrossentropy") return std::make_unique<CategoricalCrossentropy>();
  if (name == "sparse_categorical_crossentropy")
    return std::make_unique<SparseCategoricalCrossentropy>(false, name);
  if (name == "SparseCategoricalCrossentropy") return std::make_unique<SparseCategoricalCrossentropy>();
  throw ArgumentError("make_loss", "name",
                      "one of mse, mae, bce, mean_squared_error, mean_absolute_error, binary_crossentropy, "
                      "categorical_crossentropy, sparse_categorical_crossentropy (or a class name)",
                      "\"" + name + "\"");
}

}  // namespace bnorm::nn
