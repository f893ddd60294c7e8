// Keras 3 optimizers; formulas and operation order in bnorm/nn/optimizers.hpp, taken from
// keras/src/optimizers/{base_optimizer,sgd,adam,rmsprop}.py (Keras 3.15, TensorFlow backend).
//
// Every update is float32 arithmetic, one rounding per Keras op, in Keras's order. Sums of
// squares (clipping norms) are accumulated in double and rounded once: TensorFlow's float
// reduction order is an implementation detail; a correctly rounded sum stays within an ulp
// or two of it.
#include "bnorm/nn/optimizers.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "bnorm/core/error.hpp"

namespace bnorm::nn {

namespace {

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string describe(const Optimizer& o) {
  return o.class_name() + " '" + o.name() + "'";
}

// sum(g^2) in double, rounded to float32 (TensorFlow: reduce_sum(square(g)) in float32).
float sum_of_squares(const Tensor& g) {
  double s = 0.0;
  for (float v : g.values()) s += static_cast<double>(v) * static_cast<double>(v);
  return static_cast<float>(s);
}

void check_clip_option(const std::optional<double>& v, const std::string& where,
                       const std::string& argument) {
  if (v && !(std::isfinite(*v) && *v > 0.0)) {
    throw ArgumentError(where, argument, "a finite number > 0 (or no value)", number(*v));
  }
}

}  // namespace

// ------------------------------------------------------------------ Optimizer

Optimizer::Optimizer(std::string name, double learning_rate, ClipOptions clip, const std::string& where)
    : name_(std::move(name)), learning_rate_(0.0f), clip_(std::move(clip)) {
  if (!(std::isfinite(learning_rate) && learning_rate >= 0.0)) {
    throw ArgumentError(where, "learning_rate", "a finite number >= 0", number(learning_rate));
  }
  check_clip_option(clip_.clipnorm, where, "clipnorm");
  check_clip_option(clip_.clipvalue, where, "clipvalue");
  check_clip_option(clip_.global_clipnorm, where, "global_clipnorm");
  const int set = int(clip_.clipnorm.has_value()) + int(clip_.clipvalue.has_value()) +
                  int(clip_.global_clipnorm.has_value());
  if (set > 1) {
    auto show = [](const std::optional<double>& v) { return v ? number(*v) : std::string("None"); };
    throw ArgumentError(where, "clipnorm/clipvalue/global_clipnorm", "at most one of them set",
                        "clipnorm=" + show(clip_.clipnorm) + ", clipvalue=" + show(clip_.clipvalue) +
                            ", global_clipnorm=" + show(clip_.global_clipnorm));
  }
  learning_rate_ = static_cast<float>(learning_rate);
}

void Optimizer::check_unit_interval(double v, const std::string& where, const std::string& argument) {
  if (!(v >= 0.0 && v <= 1.0)) throw ArgumentError(where, argument, "a number in [0, 1]", number(v));
}

void Optimizer::check_non_negative(double v, const std::string& where, const std::string& argument) {
  if (!(std::isfinite(v) && v >= 0.0))
    throw ArgumentError(where, argument, "a finite number >= 0", number(v));
}

void Optimizer::set_learning_rate(double learning_rate) {
  if (!(std::isfinite(learning_rate) && learning_rate >= 0.0)) {
    throw ArgumentError(describe(*this), "learning_rate", "a finite number >= 0", number(learning_rate));
  }
  learning_rate_ = static_cast<float>(learning_rate);
}

void Optimizer::apply_gradients(const std::vector<std::pair<Tensor, Variable*>>& grads_and_vars) {
  std::vector<const Tensor*> grads;
  std::vector<Variable*> vars;
  grads.reserve(grads_and_vars.size());
  vars.reserve(grads_and_vars.size());
  for (const auto& [g, v] : grads_and_vars) {
    grads.push_back(&g);
    vars.push_back(v);
  }
  apply(grads, vars);
}

void Optimizer::apply_gradients(const Gradients& grads, const std::vector<Variable*>& vars) {
  if (vars.empty()) return;
  std::vector<const Tensor*> present;
  std::vector<Variable*> with_grad;
  for (Variable* v : vars) {
    if (v == nullptr) throw ArgumentError(describe(*this), "vars", "non-null Variable pointers", "nullptr");
    auto it = grads.find(v);
    if (it == grads.end()) continue;  // Keras: a None gradient, filtered out
    present.push_back(&it->second);
    with_grad.push_back(v);
  }
  if (with_grad.empty()) {
    throw ArgumentError(describe(*this), "grads",
                        "a gradient for at least one of the " + std::to_string(vars.size()) + " variables",
                        "none (Keras: No gradients provided for any variable)");
  }
  apply(present, with_grad);
}

void Optimizer::apply(const std::vector<const Tensor*>& grads, const std::vector<Variable*>& vars) {
  if (vars.empty()) return;  // Keras apply([]) is a no-op
  const std::string where = describe(*this);

  // 1. Validate everything before touching anything.
  std::set<const Variable*> seen;
  for (std::size_t i = 0; i < vars.size(); ++i) {
    const Variable* v = vars[i];
    if (v == nullptr) throw ArgumentError(where, "variable " + std::to_string(i), "a Variable", "nullptr");
    if (!seen.insert(v).second) {
      throw ArgumentError(where, "variable " + std::to_string(i), "each variable once per call",
                          "variable '" + v->name + "' repeated");
    }
    if (grads[i]->shape() != v->value.shape()) {
      throw ShapeError(where, "gradient of variable '" + v->name + "'",
                       "the variable's shape " + v->value.shape().str(), grads[i]->shape().str());
    }
    auto it = slots_.find(v);
    if (it != slots_.end() && !it->second.tensors.empty() &&
        it->second.tensors[0].shape() != v->value.shape()) {
      throw ShapeError(
          where, "variable '" + v->name + "'",
          "the shape its optimizer slots were created with, " + it->second.tensors[0].shape().str(),
          v->value.shape().str());
    }
  }

  // 2. Stage: clipped gradients (copies, only when a clip is set; otherwise the update
  // reads the caller's gradients), slots for new variables, slot pointers.
  std::vector<Tensor> g;
  const bool clipping = clip_.clipnorm || clip_.global_clipnorm || clip_.clipvalue;
  if (clipping) {
    g.reserve(vars.size());
    for (const Tensor* t : grads) g.push_back(*t);
  }

  if (clip_.clipnorm) {
    // tf.clip_by_norm(g, c): (g * c) / max(||g||, c); ||g|| taken as 0 when sum(g^2) == 0.
    const float c = static_cast<float>(*clip_.clipnorm);
    for (Tensor& t : g) {
      const float l2sum = sum_of_squares(t);
      const float l2norm = l2sum > 0.0f ? std::sqrt(l2sum) : l2sum;
      const float denom = std::max(l2norm, c);
      for (float& x : t.values()) x = (x * c) / denom;
    }
  } else if (clip_.global_clipnorm) {
    // base_optimizer.clip_by_global_norm: scale = c * min(1/n, 1/c) + (n - n).
    const float c = static_cast<float>(*clip_.global_clipnorm);
    const float inv_c = static_cast<float>(1.0 / *clip_.global_clipnorm);  // Python float division
    float squared = 0.0f;
    {
      double s = 0.0;
      for (const Tensor& t : g) s += static_cast<double>(sum_of_squares(t));
      squared = static_cast<float>(s);
    }
    const float use_norm = std::sqrt(squared);
    const float scale_for_finite = c * std::min(1.0f / use_norm, inv_c);
    const float scale = scale_for_finite + (use_norm - use_norm);
    for (Tensor& t : g)
      for (float& x : t.values()) x = x * scale;
  } else if (clip_.clipvalue) {
    const float c = static_cast<float>(*clip_.clipvalue);
    for (Tensor& t : g)
      for (float& x : t.values()) x = std::min(std::max(x, -c), c);
  }

  std::size_t slot_count = 0;
  for (const auto& group : slot_groups()) slot_count += group.size();
  std::map<const Variable*, VariableSlots> fresh;
  std::int64_t order = next_order_;
  for (Variable* v : vars) {
    if (slots_.count(v)) continue;
    VariableSlots s;
    s.order = order++;
    s.variable_name = v->name;
    s.tensors.assign(slot_count, Tensor(v->value.shape()));
    fresh.emplace(v, std::move(s));
  }
  std::vector<std::vector<Tensor*>> slot_ptrs(vars.size());
  for (std::size_t i = 0; i < vars.size(); ++i) {
    auto it = slots_.find(vars[i]);
    VariableSlots& s = it != slots_.end() ? it->second : fresh.at(vars[i]);
    for (Tensor& t : s.tensors) slot_ptrs[i].push_back(&t);
  }

  // 3. Commit (nothing below throws): slots (node splicing keeps the pointers valid),
  // updates, constraints, counter.
  slots_.merge(fresh);
  next_order_ = order;
  for (std::size_t i = 0; i < vars.size(); ++i) {
    update_step(clipping ? g[i] : *grads[i], vars[i]->value, slot_ptrs[i], learning_rate_, iterations_);
  }
  for (Variable* v : vars) v->constraint.apply(v->value);
  ++iterations_;
}

std::vector<std::pair<std::string, Tensor>> Optimizer::state() const {
  std::vector<std::pair<const Variable*, const VariableSlots*>> ordered;
  for (const auto& [v, s] : slots_) ordered.emplace_back(v, &s);
  std::sort(ordered.begin(), ordered.end(),
            [](const auto& a, const auto& b) { return a.second->order < b.second->order; });
  std::vector<std::pair<std::string, Tensor>> out;
  std::size_t offset = 0;
  for (const auto& group : slot_groups()) {
    for (const auto& [v, s] : ordered) {
      for (std::size_t k = 0; k < group.size(); ++k) {
        out.emplace_back(s->variable_name + "_" + group[k], s->tensors[offset + k]);
      }
    }
    offset += group.size();
  }
  return out;
}

const Tensor* Optimizer::slot(const Variable* v, const std::string& slot) const {
  auto it = slots_.find(v);
  if (it == slots_.end()) return nullptr;
  std::size_t index = 0;
  for (const auto& group : slot_groups()) {
    for (const auto& name : group) {
      if (name == slot) return &it->second.tensors[index];
      ++index;
    }
  }
  return nullptr;
}

std::vector<std::string> Optimizer::slot_names() const {
  std::vector<std::string> names;
  for (const auto& group : slot_groups()) names.insert(names.end(), group.begin(), group.end());
  return names;
}

std::vector<Optimizer::VariableSlotState> Optimizer::export_slots() const {
  std::vector<std::pair<const Variable*, const VariableSlots*>> ordered;
  for (const auto& [v, s] : slots_) ordered.emplace_back(v, &s);
  std::sort(ordered.begin(), ordered.end(),
            [](const auto& a, const auto& b) { return a.second->order < b.second->order; });
  std::vector<VariableSlotState> out;
  out.reserve(ordered.size());
  // The map keys are const only so that lookups take const pointers; the optimizer
  // updates these variables in place, so handing them back non-const is sound.
  for (const auto& [v, s] : ordered) out.push_back({const_cast<Variable*>(v), s->tensors});
  return out;
}

void Optimizer::import_state(std::int64_t iterations, double learning_rate, std::vector<VariableSlotState> slots) {
  const std::string where = describe(*this);
  if (iterations < 0) throw ArgumentError(where, "iterations", "a count >= 0", std::to_string(iterations));
  if (!(std::isfinite(learning_rate) && learning_rate >= 0.0)) {
    throw ArgumentError(where, "learning_rate", "a finite number >= 0", number(learning_rate));
  }
  const std::size_t count = slot_names().size();
  std::set<const Variable*> seen;
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const Variable* v = slots[i].variable;
    if (v == nullptr) throw ArgumentError(where, "slots " + std::to_string(i), "a Variable", "nullptr");
    if (!seen.insert(v).second) {
      throw ArgumentError(where, "slots " + std::to_string(i), "each variable once", "variable '" + v->name + "' repeated");
    }
    if (slots[i].tensors.size() != count) {
      throw ArgumentError(where, "slots of variable '" + v->name + "'", std::to_string(count) + " tensors",
                          std::to_string(slots[i].tensors.size()));
    }
    for (const Tensor& t : slots[i].tensors) {
      if (t.shape() != v->value.shape()) {
        throw ShapeError(where, "slots of variable '" + v->name + "'", "the variable's shape " + v->value.shape().str(),
                         t.shape().str());
      }
    }
  }
  std::map<const Variable*, VariableSlots> fresh;
  std::int64_t order = 0;
  for (auto& s : slots) fresh.emplace(s.variable, VariableSlots{order++, s.variable->name, std::move(s.tensors)});
  slots_.swap(fresh);
  next_order_ = order;
  iterations_ = iterations;
  learning_rate_ = static_cast<float>(learning_rate);
}

// ------------------------------------------------------------------ SGD

SGD::SGD(SGDOptions options)
    : Optimizer(options.name, options.learning_rate,
                ClipOptions{options.clipnorm, options.clipvalue, options.global_clipnorm}, "SGD"),
      options_(std::move(options)) {
  check_unit_interval(options_.momentum, "SGD '" + name() + "'", "momentum");
}

std::vector<std::vector<std::string>> SGD::slot_groups() const {
  if (options_.momentum != 0.0) return {{"momentum"}};
  return {};
}

void SGD::update_step(const Tensor& g, Tensor& var, std::vector<Tensor*>& slots, float lr,
                      std::int64_t /*iterations*/) const {
  float* w = var.data();
  const float* gd = g.data();
  const std::int64_t n = var.numel();
  if (options_.momentum == 0.0) {
    for (std::int64_t i = 0; i < n; ++i) w[i] = w[i] - gd[i] * lr;
    return;
  }
  const float momentum = static_cast<float>(options_.momentum);
  float* m = slots[0]->data();
  for (std::int64_t i = 0; i < n; ++i) {
    m[i] = m[i] * momentum - gd[i] * lr;
    if (options_.nesterov) {
      w[i] = w[i] + (m[i] * momentum - gd[i] * lr);
    } else {
      w[i] = w[i] + m[i];
    }
  }
}

// ------------------------------------------------------------------ Adam

Adam::Adam(AdamOptions options)
    : Optimizer(options.name, options.learning_rate,
                ClipOptions{options.clipnorm, options.clipvalue, options.global_clipnorm}, "Adam"),
      options_(std::move(options)) {
  const std::string where = "Adam '" + name() + "'";
  // beta == 1 would divide by 1 - beta^t = 0.
  if (!(options_.beta_1 >= 0.0 && options_.beta_1 < 1.0)) {
    throw ArgumentError(where, "beta_1", "a number in [0, 1)", number(options_.beta_1));
  }
  if (!(options_.beta_2 >= 0.0 && options_.beta_2 < 1.0)) {
    throw ArgumentError(where, "beta_2", "a number in [0, 1)", number(options_.beta_2));
  }
  check_non_negative(options_.epsilon, where, "epsilon");
}

std::vector<std::vector<std::string>> Adam::slot_groups() const {
  if (options_.amsgrad) return {{"momentum", "velocity"}, {"velocity_hat"}};
  return {{"momentum", "velocity"}};
}

void Adam::update_step(const Tensor& g, Tensor& var, std::vector<Tensor*>& slots, float lr,
                       std::int64_t iterations) const {
  const float local_step = static_cast<float>(iterations + 1);
  const float beta_1_power = std::pow(static_cast<float>(options_.beta_1), local_step);
  const float beta_2_power = std::pow(static_cast<float>(options_.beta_2), local_step);
  const float alpha = lr * std::sqrt(1.0f - beta_2_power) / (1.0f - beta_1_power);
  const float one_minus_beta_1 = static_cast<float>(1.0 - options_.beta_1);  // Python: 1 - 0.9
  const float one_minus_beta_2 = static_cast<float>(1.0 - options_.beta_2);
  const float epsilon = static_cast<float>(options_.epsilon);

  float* w = var.data();
  const float* gd = g.data();
  float* m = slots[0]->data();
  float* v = slots[1]->data();
  float* v_hat = options_.amsgrad ? slots[2]->data() : nullptr;
  const std::int64_t n = var.numel();
  for (std::int64_t i = 0; i < n; ++i) {
    m[i] = m[i] + (gd[i] - m[i]) * one_minus_beta_1;
    v[i] = v[i] + (gd[i] * gd[i] - v[i]) * one_minus_beta_2;
    float vv = v[i];
    if (v_hat != nullptr) {
      v_hat[i] = std::max(v_hat[i], v[i]);
      vv = v_hat[i];
    }
    w[i] = w[i] - (m[i] * alpha) / (std::sqrt(vv) + epsilon);
  }
}

// ------------------------------------------------------------------ RMSprop

RMSprop::RMSprop(RMSpropOptions options)
    : Optimizer(options.name, options.learning_rate,
                ClipOptions{options.clipnorm, options.clipvalue, options.global_clipnorm}, "RMSprop"),
      options_(std::move(options)) {
  const std::string where = "RMSprop '" + name() + "'";
  check_unit_interval(options_.rho, where, "rho");
  check_unit_interval(options_.momentum, where, "momentum");
  check_non_negative(options_.epsilon, where, "epsilon");
}

std::vector<std::vector<std::string>> RMSprop::slot_groups() const {
  std::vector<std::vector<std::string>> groups{{"velocity"}};
  if (options_.momentum > 0.0) groups.push_back({"momentum"});
  if (options_.centered) groups.push_back({"average_gradient"});
  return groups;
}

void RMSprop::update_step(const Tensor& g, Tensor& var, std::vector<Tensor*>& slots, float lr,
                          std::int64_t /*iterations*/) const {
  const float rho = static_cast<float>(options_.rho);
  const float one_minus_rho = static_cast<float>(1.0 - options_.rho);
  const float epsilon = static_cast<float>(options_.epsilon);
  const float momentum = static_cast<float>(options_.momentum);
  const bool use_momentum = options_.momentum > 0.0;

  float* w = var.data();
  const float* gd = g.data();
  float* velocity = slots[0]->data();
  float* mom = use_momentum ? slots[1]->data() : nullptr;
  float* average = options_.centered ? slots[use_momentum ? 2 : 1]->data() : nullptr;
  const std::int64_t n = var.numel();
  for (std::int64_t i = 0; i < n; ++i) {
    velocity[i] = rho * velocity[i] + one_minus_rho * (gd[i] * gd[i]);
    float denominator;
    if (average != nullptr) {
      average[i] = rho * average[i] + one_minus_rho * gd[i];
      denominator = velocity[i] - average[i] * average[i] + epsilon;
    } else {
      denominator = velocity[i] + epsilon;
    }
    const float increment = (lr * gd[i]) / std::sqrt(denominator);
    if (mom != nullptr) {
      mom[i] = momentum * mom[i] + increment;
      w[i] = w[i] - mom[i];
    } else {
      w[i] = w[i] - increment;
    }
  }
}

// ------------------------------------------------------------------ factory

std::unique_ptr<Optimizer> make_optimizer(const std::string& name) {
  if (name == "sgd" || name == "SGD") return std::make_unique<SGD>();
  if (name == "adam" || name == "Adam") return std::make_unique<Adam>();
  if (name == "rmsprop" || name == "RMSprop") return std::make_unique<RMSprop>();
  throw ArgumentError("make_optimizer", "name",
                      "one of \"sgd\", \"adam\", \"rmsprop\" (or SGD, Adam, RMSprop)", "\"" + name + "\"");
}

}  // namespace bnorm::nn
