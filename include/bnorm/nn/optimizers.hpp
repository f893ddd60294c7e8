// bnorm/nn/optimizers.hpp: Keras 3 optimizers (SGD, Adam, RMSprop), update for update.
//
// An optimizer updates Variables in place from their gradients, the way Keras 3's
// `optimizer.apply_gradients(zip(grads, vars))` does (keras/src/optimizers/
// base_optimizer.py `apply`, then each class's `update_step`), in float32 with Keras's
// operation order, so that a bnorm training run follows the Keras one to rounding:
//
//   1. gradients are clipped (at most one of clipnorm / global_clipnorm / clipvalue),
//   2. every variable is updated by the class's rule below (slots created on first use,
//      zero-filled, keyed by the Variable's address),
//   3. every updated variable's constraint is applied (Keras 3 does this after the update
//      step, for the variables that received a gradient),
//   4. iterations += 1 (also when some variables had no gradient).
//
// Update rules (g the clipped gradient; lr the learning rate as float32; every other
// hyper-parameter is rounded to float32 where Keras's tensor arithmetic rounds it, and
// `1 - beta` is computed in double first, as Python does, then rounded):
//   SGD:      momentum == 0:  var -= g * lr
//             else:           m = m * momentum - g * lr
//                             var += m                                  (nesterov false)
//                             var += m * momentum - g * lr              (nesterov true)
//   Adam:     t = iterations + 1 (float32)
//             alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
//             m += (g - m) * (1 - beta_1);   v += (g^2 - v) * (1 - beta_2)
//             amsgrad: v_hat = max(v_hat, v), and v_hat replaces v below
//             var -= (m * alpha) / (sqrt(v) + epsilon)
//   RMSprop:  v = rho * v + (1 - rho) * g^2
//             centered: a = rho * a + (1 - rho) * g;   denom = v - a^2 + epsilon
//             else:     denom = v + epsilon
//             inc = (lr * g) / sqrt(denom)
//             momentum > 0: mom = momentum * mom + inc;  var -= mom
//             else:         var -= inc
// Clipping (base_optimizer._clip_gradients; TensorFlow's tf.clip_by_norm):
//   clipnorm c:        g = (g * c) / max(||g||, c)          per variable (g = 0 stays 0)
//   global_clipnorm c: n = sqrt(sum over variables of sum(g^2));
//                      g = g * (c * min(1/n, 1/c))          1/c in double, then float32
//   clipvalue c:       g = clip(g, -c, c)
//
// Errors: invalid options throw ArgumentError from the constructor. apply_gradients
// validates everything first (null or repeated variable, gradient shape different from
// the variable's, a slot whose shape no longer matches its variable) and then throws
// ShapeError / ArgumentError with NOTHING changed: no variable, slot or counter. Keras's
// weight_decay, EMA, loss scaling and gradient accumulation are not implemented.
//
// Slots are keyed by the Variable's address, as Keras ties an optimizer to the variables
// it was built with: use one optimizer per set of variables that outlive it (a new
// Variable at a freed address would inherit the old slots when the shapes agree).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/core/tensor.hpp"
#include "bnorm/nn/layer.hpp"
#include "bnorm/nn/variable.hpp"

namespace bnorm::nn {

// Options every optimizer shares (Keras base_optimizer keyword arguments). At most one
// of the three clipping options may be set; a set one must be > 0.
struct ClipOptions {
  std::optional<double> clipnorm{};
  std::optional<double> clipvalue{};
  std::optional<double> global_clipnorm{};
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Keras class name: "SGD", "Adam", "RMSprop".
  virtual std::string class_name() const = 0;
  // Keras's default names: "sgd", "adam", "rm_sprop" (Keras's to_snake_case("RMSprop");
  // Keras also appends "_1", "_2" to repeated names, which bnorm does not).
  const std::string& name() const noexcept { return name_; }

  // Keras `apply_gradients(zip(grads, vars))`: gradient i (same shape as the variable's
  // value) for variable i. An empty list is a no-op (iterations unchanged), as Keras's
  // `apply([])`. Variables need not be trainable (the caller chooses them).
  void apply_gradients(const std::vector<std::pair<Tensor, Variable*>>& grads_and_vars);
  // The same with a Gradients map: each of `vars` that has an entry in `grads` is updated,
  // the others are skipped (Keras's None gradients: no update, slots untouched, but
  // iterations still advances). Throws ArgumentError when `vars` is not empty and none of
  // them has a gradient (Keras: "No gradients provided for any variable").
  void apply_gradients(const Gradients& grads, const std::vector<Variable*>& vars);

  // Number of apply_gradients calls that updated something (Keras `iterations`).
  std::int64_t iterations() const noexcept { return iterations_; }
  // The learning rate as Keras holds it: a float32 variable (so 0.001 reads back as
  // 0.0010000000474974513).
  double learning_rate() const noexcept { return static_cast<double>(learning_rate_); }
  // Keras `optimizer.learning_rate = value`. Throws ArgumentError unless finite and >= 0.
  void set_learning_rate(double learning_rate);

  const ClipOptions& clip_options() const noexcept { return clip_; }

  // Slot variables in Keras's `optimizer.variables` order (after "iteration" and
  // "learning_rate", which are iterations() and learning_rate()), named as Keras names
  // them, "<variable name>_<slot>" (Keras uses the variable's path). Keras creates the
  // slots of all variables when it is built; bnorm creates them on first use, so the
  // order is Keras's when the first apply_gradients call sees every variable:
  //   SGD (momentum > 0):  momentum of each variable
  //   Adam:                (momentum, velocity) of each variable, then velocity_hat of
  //                        each (amsgrad)
  //   RMSprop:             velocity of each, then momentum of each (momentum > 0), then
  //                        average_gradient of each (centered)
  std::vector<std::pair<std::string, Tensor>> state() const;
  // The slot `slot` of variable `v` (nullptr if it was never created).
  const Tensor* slot(const Variable* v, const std::string& slot) const;

  // Checkpoints (io/checkpoint.hpp): the complete state, exported and restored exactly.
  // Slot names of one variable, slot_groups() flattened: SGD with momentum {"momentum"},
  // Adam {"momentum", "velocity"[, "velocity_hat"]}, RMSprop {"velocity"[, "momentum"]
  // [, "average_gradient"]}.
  std::vector<std::string> slot_names() const;
  // The same, grouped as Keras creates them: Keras's `optimizer.variables` lists, after
  // iteration and learning_rate, for each group, for each variable, that group's slots
  // (Adam: {{"momentum", "velocity"}[, {"velocity_hat"}]}).
  std::vector<std::vector<std::string>> slot_name_groups() const { return slot_groups(); }
  struct VariableSlotState {
    Variable* variable = nullptr;
    std::vector<Tensor> tensors;  // slot_names() order, each the variable's shape
  };
  // The variables with slots, in first-use order (what state() names follow).
  std::vector<VariableSlotState> export_slots() const;
  // Replaces iterations, learning rate and ALL slots (those of variables not listed are
  // dropped); the listed order becomes the first-use order. Validates everything first
  // (null or repeated variable, tensor count different from slot_names(), a tensor
  // shape different from its variable's, learning rate not finite or < 0, iterations
  // < 0): ArgumentError / ShapeError with the optimizer unchanged.
  void import_state(std::int64_t iterations, double learning_rate, std::vector<VariableSlotState> slots);

 protected:
  Optimizer(std::string name, double learning_rate, ClipOptions clip, const std::string& where);

  // Slot names, grouped as Keras creates them (see state()).
  virtual std::vector<std::vector<std::string>> slot_groups() const = 0;
  // Updates `var` (shape S) from the clipped gradient `g` (shape S) with the slots of
  // this variable, in the order of slot_groups() flattened (each shape S).
  // `iterations` is the count before this call.
  virtual void update_step(const Tensor& g, Tensor& var, std::vector<Tensor*>& slots, float learning_rate,
                           std::int64_t iterations) const = 0;

  static void check_unit_interval(double v, const std::string& where, const std::string& argument);
  static void check_non_negative(double v, const std::string& where, const std::string& argument);

 private:
  struct VariableSlots {
    std::int64_t order = 0;       // first-use order, for state()
    std::string variable_name;    // for state() names
    std::vector<Tensor> tensors;  // slot_groups() flattened
  };

  void apply(const std::vector<const Tensor*>& grads, const std::vector<Variable*>& vars);

  std::string name_;
  float learning_rate_;
  ClipOptions clip_;
  std::int64_t iterations_ = 0;
  std::int64_t next_order_ = 0;
  std::map<const Variable*, VariableSlots> slots_;
};

struct SGDOptions {
  double learning_rate = 0.01;
  double momentum = 0.0;  // in [0, 1]
  bool nesterov = false;
  std::optional<double> clipnorm{};
  std::optional<double> clipvalue{};
  std::optional<double> global_clipnorm{};
  std::string name = "sgd";
};

struct AdamOptions {
  double learning_rate = 0.001;
  double beta_1 = 0.9;    // in [0, 1)
  double beta_2 = 0.999;  // in [0, 1)
  double epsilon = 1e-7;  // >= 0
  bool amsgrad = false;
  std::optional<double> clipnorm{};
  std::optional<double> clipvalue{};
  std::optional<double> global_clipnorm{};
  std::string name = "adam";
};

struct RMSpropOptions {
  double learning_rate = 0.001;
  double rho = 0.9;       // in [0, 1]
  double momentum = 0.0;  // in [0, 1]
  double epsilon = 1e-7;  // >= 0
  bool centered = false;
  std::optional<double> clipnorm{};
  std::optional<double> clipvalue{};
  std::optional<double> global_clipnorm{};
  std::string name = "rm_sprop";
};

class SGD final : public Optimizer {
 public:
  explicit SGD(SGDOptions options = {});
  std::string class_name() const override { return "SGD"; }
  const SGDOptions& options() const noexcept { return options_; }

 protected:
  std::vector<std::vector<std::string>> slot_groups() const override;
  void update_step(const Tensor& g, Tensor& var, std::vector<Tensor*>& slots, float learning_rate,
                   std::int64_t iterations) const override;

 private:
  SGDOptions options_;
};

class Adam final : public Optimizer {
 public:
  explicit Adam(AdamOptions options = {});
  std::string class_name() const override { return "Adam"; }
  const AdamOptions& options() const noexcept { return options_; }

 protected:
  std::vector<std::vector<std::string>> slot_groups() const override;
  void update_step(const Tensor& g, Tensor& var, std::vector<Tensor*>& slots, float learning_rate,
                   std::int64_t iterations) const override;

 private:
  AdamOptions options_;
};

class RMSprop final : public Optimizer {
 public:
  explicit RMSprop(RMSpropOptions options = {});
  std::string class_name() const override { return "RMSprop"; }
  const RMSpropOptions& options() const noexcept { return options_; }

 protected:
  std::vector<std::vector<std::string>> slot_groups() const override;
  void update_step(const Tensor& g, Tensor& var, std::vector<Tensor*>& slots, float learning_rate,
                   std::int64_t iterations) const override;

 private:
  RMSpropOptions options_;
};

// Keras `optimizers.get(name)` for compile(optimizer="..."): "sgd" / "SGD", "adam" / "Adam",
// "rmsprop" / "RMSprop" (a class name or its lower case, as Keras accepts), with Keras's
// defaults. Throws ArgumentError for any other name.
std::unique_ptr<Optimizer> make_optimizer(const std::string& name);

}  // namespace bnorm::nn
