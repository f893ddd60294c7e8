// src/nn/layer_context.hpp (internal): the checks every layer's backward makes on what
// its forward left (layers.cpp, conv.cpp, spatial.cpp).
#pragma once

#include <string>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/layer.hpp"

namespace bnorm::nn::detail {

// The context a layer's forward left, as its own type (StateError for another layer's).
template <typename C>
const C& context_of(const LayerContext& context, const std::string& where) {
  const auto* c = dynamic_cast<const C*>(&context);
  if (!c) throw StateError(where, "context", "the context of this layer's forward call", "another layer's");
  return *c;
}

// ShapeError unless dy has the forward output's shape.
inline void check_dy(const Tensor& dy, const Shape& want, const std::string& where) {
  if (dy.shape() != want) throw ShapeError(where, "dy", "shape " + want.str(), dy.shape().str());
}

}  // namespace bnorm::nn::detail
