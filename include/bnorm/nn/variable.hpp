// bnorm/nn/variable.hpp: a named tensor owned by a layer (Keras Variable, PyTorch
// Parameter or buffer).
#pragma once

#include <string>

#include "bnorm/core/tensor.hpp"
#include "bnorm/nn/regularizers.hpp"

namespace bnorm::nn {

struct Variable {
  std::string name;          // "gamma", "beta", "moving_mean", "moving_variance", ...
  Tensor value;
  bool trainable = false;    // updated by optimizers (gamma/beta) or not (statistics)
  Regularizer regularizer;   // adds to the layer's losses()
  Constraint constraint;     // applied after optimizer updates
};

// Process-wide automatic layer names, as Keras makes them: the first
// unique_name("batch_normalization") is "batch_normalization", then "..._1", "..._2".
std::string unique_name(const std::string& base);
// Forget every name handed out (Keras's clear_session()).
void reset_unique_names();

}  // namespace bnorm::nn
