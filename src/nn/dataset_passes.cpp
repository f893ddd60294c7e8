#include "dataset_passes.hpp"

#include <algorithm>
#include <set>

#include "bnorm/core/error.hpp"

namespace bnorm::nn::detail {

void require_batch_size(std::int64_t batch_size, const std::string& where) {
  if (batch_size < 1) {
    throw ArgumentError(where, "batch_size", "an integer >= 1", std::to_string(batch_size));
  }
}

void require_samples(const Tensor& x, const std::string& where) {
  if (x.rank() < 1 || x.dim(0) < 1) {
    throw ArgumentError(where, "x", "at least one sample (rows of the model's input)",
                        "an input of shape " + x.shape().str());
  }
}

std::vector<std::pair<std::vector<std::size_t>, BatchNormalization*>> distinct_built_batch_norms(const Model& model,
                                                                                                 const std::string& where) {
  std::vector<std::pair<std::vector<std::size_t>, BatchNormalization*>> found;
  for (const auto& [path, layer] : model.flattened_layers()) {
    auto* bn = dynamic_cast<BatchNormalization*>(layer.get());
    if (bn == nullptr) continue;
    const std::string name = "BatchNormalization '" + bn->name() + "'";
    // Calls of the layer in the model that holds it.
    const Model* holder = &model;
    for (std::size_t k = 0; k + 1 < path.size(); ++k) holder = dynamic_cast<const Model*>(holder->layers()[path[k]].get());
    std::size_t calls = 0;
    for (const auto& node : holder->nodes()) calls += node.layer.get() == bn ? 1 : 0;
    if (calls > 1) {
      throw ArgumentError(where, name,
                          "each batch-normalization layer called once in the model (a shared layer sees two populations)",
                          std::to_string(calls) + " calls");
    }
    if (!bn->built()) {
      throw StateError(where, name, "a built layer with moving statistics (call or fit the model first)", "an unbuilt layer");
    }
    found.emplace_back(path, bn);
  }
  return found;
}

Tensor rows(const Tensor& x, std::int64_t begin, std::int64_t end) {
  std::vector<std::int64_t> dims = x.shape().dims();
  const std::int64_t row = dims[0] > 0 ? x.numel() / dims[0] : 0;
  dims[0] = end - begin;
  Tensor out{Shape(dims)};
  std::copy_n(x.data() + begin * row, out.numel(), out.data());
  return out;
}

}  // namespace bnorm::nn::detail
