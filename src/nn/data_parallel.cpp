#include "data_parallel.hpp"

#include <algorithm>
#include <span>
#include <tuple>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/losses.hpp"
#include "bnorm/nn/metrics.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/optimizers.hpp"
#include "bnorm/nn/updates.hpp"

namespace bnorm::nn {
namespace detail {

DataParallelScope::DataParallelScope(Model& model, std::shared_ptr<Communicator> communicator,
                                     bool sync_all_batch_norm) {
  if (!communicator || communicator->size() <= 1) return;
  // Every rank starts from rank 0's weights (trainable or not: moving statistics too).
  for (Variable* v : model.weights()) {
    communicator->broadcast(std::span<float>(v->value.data(), static_cast<std::size_t>(v->value.numel())), 0);
  }
  for (const auto& [path, layer] : model.flattened_layers()) {
    auto bn = std::dynamic_pointer_cast<BatchNormalization>(layer);
    if (!bn || !(sync_all_batch_norm || bn->options().synchronized)) continue;
    attached_.emplace_back(bn, bn->communicator());
    bn->set_communicator(communicator);
  }
  communicator_ = std::move(communicator);
}

DataParallelScope::~DataParallelScope() {
  for (auto& [bn, previous] : attached_) bn->set_communicator(previous);
}

std::pair<std::int64_t, std::int64_t> DataParallelScope::shard(std::int64_t rows) const {
  if (!communicator_) return {0, rows};
  const std::int64_t P = communicator_->size(), r = communicator_->rank();
  return {rows * r / P, rows * (r + 1) / P};
}

void all_reduce_gradients(Communicator& comm, Gradients& grads, const std::vector<Variable*>& vars) {
  std::size_t total = 0;
  for (const Variable* v : vars) total += static_cast<std::size_t>(v->value.numel());
  std::vector<float> flat(total, 0.0f);
  std::vector<double> present(vars.size(), 0.0);
  std::size_t at = 0;
  for (std::size_t k = 0; k < vars.size(); ++k) {
    const auto n = static_cast<std::size_t>(vars[k]->value.numel());
    if (auto it = grads.find(vars[k]); it != grads.end()) {
      std::copy(it->second.data(), it->second.data() + n, flat.begin() + static_cast<std::ptrdiff_t>(at));
      present[k] = 1.0;
    }
    at += n;
  }
  comm.all_reduce_sum(flat);
  comm.all_reduce_sum(present);
  at = 0;
  for (std::size_t k = 0; k < vars.size(); ++k) {
    const auto n = static_cast<std::size_t>(vars[k]->value.numel());
    if (present[k] > 0) {
      Tensor g(vars[k]->value.shape());
      std::copy(flat.begin() + static_cast<std::ptrdiff_t>(at),
                flat.begin() + static_cast<std::ptrdiff_t>(at + n), g.data());
      grads[vars[k]] = std::move(g);
    }
    at += n;
  }
}

}  // namespace detail

// One data-parallel step on this rank's shard (x, y) of a batch of `batch_rows` rows.
// The loss is the mean over the whole batch: this rank's mean loss weighted by its share
// of the rows, n / batch_rows, so that the gradients summed over the ranks are the
// full-batch gradients (an empty shard contributes nothing, and still takes part in every
// collective: the synchronized batch normalization and the gradient sum). Regularization
// gradients are added once, after the sum. The logged loss is the batch's.
Logs Model::train_step_sharded(const Tensor& x, const Tensor& y, std::int64_t batch_rows,
                               Communicator& comm) {
  UpdateCollection updates;
  GradientTape tape;
  try {
    const Tensor y_pred = call(x, true, &tape, &updates);
    const std::int64_t n = x.dim(0);
    LossValue loss;
    if (n > 0) {
      loss = loss_->compute(y, y_pred);
    } else {
      loss.grad = Tensor(y_pred.shape());
    }
    const float share = static_cast<float>(static_cast<double>(n) / static_cast<double>(batch_rows));
    for (std::int64_t i = 0; i < loss.grad.numel(); ++i) loss.grad[i] *= share;
    Gradients grads = tape.variable_gradients(loss.grad);
    const std::vector<Variable*> vars = trainable_weights();
    detail::all_reduce_gradients(comm, grads, vars);
    std::vector<double> weighted_loss{n > 0 ? static_cast<double>(loss.value) * static_cast<double>(n) : 0.0};
    comm.all_reduce_sum(weighted_loss);
    double total = weighted_loss[0] / static_cast<double>(batch_rows);
    for (float r : losses()) total += r;
    for (auto& l : layers_) l->add_regularization_gradients(grads);
    // The metrics of the whole batch: every rank's (total, count), summed (validated
    // before anything changes).
    auto& metrics = metrics_for(y_pred);
    std::vector<double> totals(2 * metrics.size(), 0.0);
    if (n > 0)
      for (std::size_t k = 0; k < metrics.size(); ++k)
        std::tie(totals[2 * k], totals[2 * k + 1]) = metrics[k]->batch_totals(y, y_pred);
    if (!totals.empty()) comm.all_reduce_sum(totals);
    optimizer_->apply_gradients(grads, vars);
    updates.apply();
    Logs logs{{"loss", total}};
    for (std::size_t k = 0; k < metrics.size(); ++k) {
      metrics[k]->add_totals(static_cast<float>(totals[2 * k]), static_cast<float>(totals[2 * k + 1]));
      logs[metrics[k]->name()] = metrics[k]->result();
    }
    return logs;
  } catch (...) {
    updates.discard();
    throw;
  }
}

}  // namespace bnorm::nn
