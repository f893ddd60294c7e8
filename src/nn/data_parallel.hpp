// Internal: the pieces of a data-parallel Model::fit (FitOptions::communicator).
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/communicator.hpp"

namespace bnorm::nn {

class Model;

namespace detail {

// For the duration of a data-parallel fit: broadcasts rank 0's weights, attaches the
// communicator to the batch normalization layers that synchronize, and puts the layers'
// previous communicators back when it ends (also on an exception).
class DataParallelScope {
 public:
  DataParallelScope(Model& model, std::shared_ptr<Communicator> communicator, bool sync_all_batch_norm);
  ~DataParallelScope();
  DataParallelScope(const DataParallelScope&) = delete;
  DataParallelScope& operator=(const DataParallelScope&) = delete;

  bool active() const noexcept { return communicator_ != nullptr; }
  int rank() const noexcept { return communicator_ ? communicator_->rank() : 0; }
  // This rank's rows [first, second) of a batch of `rows` rows: rank r of P takes
  // [floor(rows * r / P), floor(rows * (r + 1) / P)) (empty when rows < P for some ranks).
  std::pair<std::int64_t, std::int64_t> shard(std::int64_t rows) const;

 private:
  std::shared_ptr<Communicator> communicator_;  // null: a size-1 run, nothing to do
  std::vector<std::pair<std::shared_ptr<BatchNormalization>, std::shared_ptr<Communicator>>> attached_;
};

// Sums the gradients of `vars` over the ranks (in place; one buffer, one all-reduce):
// a variable with a gradient on some rank gets the sum, zeros standing in for the ranks
// without one; a variable with none anywhere stays without one.
void all_reduce_gradients(Communicator& comm, Gradients& grads, const std::vector<Variable*>& vars);

}  // namespace detail
}  // namespace bnorm::nn
