#include "bnorm/nn/tape.hpp"

#include "bnorm/core/error.hpp"

namespace bnorm::nn {

void GradientTape::require_calls() const {
  if (calls_.empty()) {
    throw StateError("GradientTape", "tape", "at least one recorded call (pass the tape to the forward call)",
                     "an empty tape");
  }
}

void GradientTape::record(Layer& layer, std::unique_ptr<LayerContext> context) {
  const int output = new_tensor();
  record(layer, std::move(context), {chain_}, output);
  chain_ = output;
}

void GradientTape::record(Layer& layer, std::unique_ptr<LayerContext> context, std::vector<int> inputs, int output) {
  calls_.push_back(Call{&layer, std::move(context), std::move(inputs), output});
}

void GradientTape::reset() noexcept {
  calls_.clear();
  chain_ = 0;
  next_tensor_ = 1;
  input_gradient_ = Tensor();
}

namespace {
void add_into(std::map<int, Tensor>& dys, int tensor, Tensor&& g) {
  auto it = dys.find(tensor);
  if (it == dys.end()) {
    dys.emplace(tensor, std::move(g));
    return;
  }
  Tensor& acc = it->second;
  for (std::int64_t i = 0; i < acc.numel(); ++i) acc[i] += g[i];
}
}  // namespace

Tensor GradientTape::backpropagate(const Tensor& dy, Gradients& grads, bool input_gradient) const {
  // Which tensors depend on a trainable variable: only their gradients are needed when
  // the input's is not (the old chain rule: calls before the first one with trainable
  // weights are skipped, and that one computes no dL/dx).
  std::map<int, bool> upstream;  // tensor -> some call producing it (transitively) has trainable weights
  std::vector<bool> has_trainable(calls_.size(), false);
  if (!input_gradient) {
    for (std::size_t k = 0; k < calls_.size(); ++k) {
      const Call& c = calls_[k];
      has_trainable[k] = !c.layer->trainable_weights().empty();
      bool any = has_trainable[k];
      for (int t : c.inputs) any = any || upstream[t];
      upstream[c.output] = any;
    }
  }
  std::map<int, Tensor> dys;  // gradients of tensors whose users have run
  dys.emplace(chain_, dy);
  for (std::size_t k = calls_.size(); k-- > 0;) {
    const Call* it = &calls_[k];
    auto found = dys.find(it->output);
    if (found == dys.end()) continue;  // the call does not reach the output
    const Tensor g = std::move(found->second);
    dys.erase(found);
    bool need_dx = input_gradient;
    for (int t : it->inputs) need_dx = need_dx || upstream[t];
    if (!need_dx) {
      if (has_trainable[k]) it->layer->backward_variables(*it->context, g, grads);
      continue;
    }
    std::vector<Tensor> dxs = it->layer->backward_inputs(*it->context, g, grads);
    for (std::size_t i = 0; i < it->inputs.size() && i < dxs.size(); ++i) {
      if (input_gradient || upstream[it->inputs[i]]) add_into(dys, it->inputs[i], std::move(dxs[i]));
    }
  }
  if (!input_gradient) return Tensor();
  auto in = dys.find(0);
  return in != dys.end() ? std::move(in->second) : Tensor();
}

Gradients GradientTape::gradient(const Tensor& dy) {
  require_calls();
  Gradients grads;
  input_gradient_ = backpropagate(dy, grads, true);
  return grads;
}

Gradients GradientTape::variable_gradients(const Tensor& dy) {
  require_calls();
  Gradients grads;
  (void)backpropagate(dy, grads, false);
  input_gradient_ = Tensor();
  return grads;
}

std::vector<Tensor> GradientTape::gradient(const Tensor& dy, const std::vector<Variable*>& sources) {
  const Gradients grads = gradient(dy);
  std::vector<Tensor> out;
  out.reserve(sources.size());
  for (const Variable* v : sources) {
    auto it = grads.find(v);
    out.push_back(it != grads.end() ? it->second : Tensor(v->value.shape()));
  }
  return out;
}

std::vector<std::pair<Tensor, Variable*>> zip(const std::vector<Tensor>& grads, const std::vector<Variable*>& vars) {
  if (grads.size() != vars.size()) {
    throw ArgumentError("zip", "grads", std::to_string(vars.size()) + " gradients (one per variable)",
                        std::to_string(grads.size()));
  }
  std::vector<std::pair<Tensor, Variable*>> out;
  for (std::size_t i = 0; i < vars.size(); ++i) out.emplace_back(grads[i], vars[i]);
  return out;
}

}  // namespace bnorm::nn
