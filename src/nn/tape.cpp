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
  calls_.emplace_back(&layer, std::move(context));
}

Gradients GradientTape::gradient(const Tensor& dy) {
  require_calls();
  Gradients grads;
  Tensor g = dy;
  for (auto it = calls_.rbegin(); it != calls_.rend(); ++it) g = it->first->backward(*it->second, g, grads);
  input_gradient_ = std::move(g);
  return grads;
}

Gradients GradientTape::variable_gradients(const Tensor& dy) {
  require_calls();
  std::size_t first = 0;  // the first call with trainable weights (none: all skipped)
  while (first < calls_.size() && calls_[first].first->trainable_weights().empty()) ++first;
  Gradients grads;
  Tensor g = dy;
  for (std::size_t i = calls_.size(); i-- > first + 1;) g = calls_[i].first->backward(*calls_[i].second, g, grads);
  if (first < calls_.size()) calls_[first].first->backward_variables(*calls_[first].second, g, grads);
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
