// bnorm/nn/fold.hpp: batch normalization folded into the layer before it, for inference.
//
// In inference a BatchNormalization is an affine map per channel,
//   y = (x - moving_mean) * gamma / sqrt(moving_variance + epsilon) + beta,
// so when x is the output of a Dense or convolution layer with a linear activation,
// the map can be moved into that layer's weights (scale = gamma / sqrt(var + eps), per
// output channel, computed in double):
//   kernel' = kernel * scale (each output channel's slice)
//   bias'   = (bias - moving_mean) * scale + beta        (bias 0 when the layer had none)
// and the BatchNormalization disappears: one pass over the activations fewer.
//
// fold_batch_norm(model) returns a new model (same input, layer names and outputs within
// float rounding: relative 1e-5 of the largest output on the CNN fixtures) where every
// foldable pair is folded:
//   - the producer is Dense, Conv1D, Conv2D (grouped too), DepthwiseConv2D or
//     SeparableConv2D (folded into its pointwise kernel), with activation "linear";
//   - its output is read by that BatchNormalization only, and both are called once;
//   - the BatchNormalization normalizes the producer's channel axis only (the last axis,
//     or axis 1 for channels_first convolutions).
// Models nested in the model are folded too (a pair across a nesting boundary is not).
// The folded layers are new (with a bias); the other layers are SHARED with `model`
// (the same objects: training one model trains both). `model` itself is never changed.
// A Sequential stays a Sequential. Layers that are not built (unknown input shape)
// raise StateError.
#pragma once

#include <memory>

#include "bnorm/nn/model.hpp"

namespace bnorm::nn {

struct FoldReport {
  int folded = 0;  // BatchNormalization layers folded
  int kept = 0;    // BatchNormalization layers left (not after a foldable layer)
};

std::unique_ptr<Model> fold_batch_norm(const Model& model, FoldReport* report = nullptr);

}  // namespace bnorm::nn
