// src/nn/dataset_passes.hpp (internal): what the whole-dataset passes over a model share
// (nn::recalibrate, nn::measure_gap): checking their arguments, the model's
// batch-normalization layers, and cutting the data into batches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/core/tensor.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/model.hpp"

namespace bnorm::nn::detail {

// ArgumentError naming `where` unless batch_size >= 1.
void require_batch_size(std::int64_t batch_size, const std::string& where);

// ArgumentError naming `where` unless x holds at least one sample (rank >= 1, dim 0 >= 1).
void require_samples(const Tensor& x, const std::string& where);

// The model's BatchNormalization layers in order, nested models' included, with their
// path (Model::layer_input's). ArgumentError when one is called twice (a shared layer
// would see two populations), StateError when one is not built (no moving statistics
// yet). Checked before any work.
std::vector<std::pair<std::vector<std::size_t>, BatchNormalization*>> distinct_built_batch_norms(const Model& model,
                                                                                                 const std::string& where);

// Rows [begin, end) of x along axis 0, as a new tensor.
Tensor rows(const Tensor& x, std::int64_t begin, std::int64_t end);

}  // namespace bnorm::nn::detail
