#include "bnorm/nn/merge.hpp"

#include <algorithm>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/variable.hpp"
#include "broadcast.hpp"
#include "layer_context.hpp"

namespace bnorm::nn {

namespace {

const char* op_class(MergeOp op) {
  switch (op) {
    case MergeOp::add: return "Add";
    case MergeOp::subtract: return "Subtract";
    case MergeOp::multiply: return "Multiply";
    case MergeOp::average: return "Average";
    case MergeOp::maximum: return "Maximum";
    case MergeOp::minimum: return "Minimum";
  }
  return "Add";
}

const char* op_base_name(MergeOp op) {
  switch (op) {
    case MergeOp::add: return "add";
    case MergeOp::subtract: return "subtract";
    case MergeOp::multiply: return "multiply";
    case MergeOp::average: return "average";
    case MergeOp::maximum: return "maximum";
    case MergeOp::minimum: return "minimum";
  }
  return "add";
}

// For each flat index of `out`, the flat index of the element of `in` it reads when `in`
// is broadcast to `out` (same rank; dimensions of `in` equal or 1).
std::vector<std::int64_t> broadcast_offsets(const Shape& out, const Shape& in) {
  std::vector<std::int64_t> offsets(static_cast<std::size_t>(out.numel()));
  detail::for_each_broadcast(
      out, in, [&](std::int64_t k, std::int64_t j) { offsets[static_cast<std::size_t>(k)] = j; });
  return offsets;
}

struct ElementwiseContext : LayerContext {
  std::vector<Shape> shapes;               // each input's shape
  std::vector<Tensor> inputs;              // multiply: the inputs
  std::vector<std::uint16_t> winner;       // maximum / minimum: the input each output came from
  Shape out;
};

struct ConcatContext : LayerContext {
  std::vector<Shape> shapes;
  Shape out;
};

}  // namespace

// ---------------------------------------------------------------- MergeLayer

void MergeLayer::build(const Shape&) {
  throw ArgumentError(where(), "inputs", "a list of at least 2 tensors", "a single tensor");
}

void MergeLayer::build_inputs(const std::vector<Shape>& input_shapes) {
  (void)compute_output_shape_inputs(input_shapes);  // validates
}

Shape MergeLayer::compute_output_shape(const Shape&) const {
  throw ArgumentError(where(), "inputs", "a list of at least 2 tensors", "a single tensor");
}

Tensor MergeLayer::forward(const Tensor&, bool, std::unique_ptr<LayerContext>*, UpdateSink*) {
  throw ArgumentError(where(), "inputs", "a list of at least 2 tensors", "a single tensor");
}

Tensor MergeLayer::backward(const LayerContext&, const Tensor&, Gradients&) {
  throw StateError(where(), "backward", "backward_inputs (a merge layer has several inputs)", "backward");
}

void MergeLayer::require_count(std::size_t count) const {
  const bool two = class_name() == "Subtract";
  if (two ? count != 2 : count < 2) {
    throw ArgumentError(where(), "inputs", two ? "exactly 2 tensors" : "a list of at least 2 tensors",
                        std::to_string(count) + (count == 1 ? " tensor" : " tensors"));
  }
}

// ---------------------------------------------------------------- element-wise

ElementwiseMerge::ElementwiseMerge(MergeOp op, std::string name)
    : MergeLayer(name.empty() ? unique_name(op_base_name(op)) : std::move(name)), op_(op) {}

std::string ElementwiseMerge::class_name() const { return op_class(op_); }

Shape ElementwiseMerge::compute_output_shape_inputs(const std::vector<Shape>& shapes) const {
  require_count(shapes.size());
  std::vector<std::int64_t> out = shapes[0].dims();
  for (std::size_t i = 1; i < shapes.size(); ++i) {
    if (shapes[i].rank() != shapes[0].rank()) {
      throw ShapeError(where(), "inputs[" + std::to_string(i) + "]",
                       "rank " + std::to_string(shapes[0].rank()) + " (as inputs[0], shape " + shapes[0].str() + ")",
                       "shape " + shapes[i].str());
    }
    for (int d = 0; d < shapes[i].rank(); ++d) {
      const std::int64_t a = out[static_cast<std::size_t>(d)], b = shapes[i][d];
      if (a == b || b == 1) continue;
      if (a == 1) {
        out[static_cast<std::size_t>(d)] = b;
        continue;
      }
      if (a < 0 || b < 0) {  // an unknown (batch) size: the known one wins, checked at call time
        out[static_cast<std::size_t>(d)] = std::max(a, b);
        continue;
      }
      throw ShapeError(where(), "inputs[" + std::to_string(i) + "]",
                       "a shape that broadcasts with " + Shape(out).str() + " (equal dimensions or 1)",
                       "shape " + shapes[i].str());
    }
  }
  return Shape(out);
}

Tensor ElementwiseMerge::forward_inputs(const std::vector<const Tensor*>& xs, bool, std::unique_ptr<LayerContext>* context,
                                        UpdateSink*) {
  std::vector<Shape> shapes;
  for (const Tensor* x : xs) shapes.push_back(x->shape());
  const Shape out_shape = compute_output_shape_inputs(shapes);
  Tensor y(out_shape);
  const std::int64_t n = y.numel();
  // y = x0, then the other inputs folded in one after the other, each in one pass with the
  // operation chosen once: per element the same operations in the same order as
  // ((x0 op x1) op x2) ..., so the same bits.
  // for_each(i, f): f(y[k], x_i at k) for every output element k (x_i broadcast).
  auto for_each = [&](std::size_t i, auto&& f) {
    const float* xi = xs[i]->data();
    if (shapes[i] == out_shape) {
      for (std::int64_t k = 0; k < n; ++k) f(k, xi[k]);
    } else {
      detail::for_each_broadcast(out_shape, shapes[i], [&](std::int64_t k, std::int64_t j) { f(k, xi[j]); });
    }
  };
  for_each(0, [&](std::int64_t k, float u) { y[k] = u; });
  std::vector<std::uint16_t> winner;
  if (op_ == MergeOp::maximum || op_ == MergeOp::minimum) winner.assign(static_cast<std::size_t>(n), 0);
  for (std::size_t i = 1; i < xs.size(); ++i) {
    const auto which = static_cast<std::uint16_t>(i);
    switch (op_) {
      case MergeOp::add:
      case MergeOp::average: for_each(i, [&](std::int64_t k, float u) { y[k] += u; }); break;
      case MergeOp::subtract: for_each(i, [&](std::int64_t k, float u) { y[k] -= u; }); break;
      case MergeOp::multiply: for_each(i, [&](std::int64_t k, float u) { y[k] *= u; }); break;
      case MergeOp::maximum:
        for_each(i, [&](std::int64_t k, float u) {
          if (u > y[k]) y[k] = u, winner[static_cast<std::size_t>(k)] = which;
        });
        break;
      case MergeOp::minimum:
        for_each(i, [&](std::int64_t k, float u) {
          if (u < y[k]) y[k] = u, winner[static_cast<std::size_t>(k)] = which;
        });
        break;
    }
  }
  if (op_ == MergeOp::average) {
    const auto count = static_cast<float>(xs.size());
    for (std::int64_t k = 0; k < n; ++k) y[k] /= count;
  }
  if (context) {
    auto ctx = std::make_unique<ElementwiseContext>();
    ctx->shapes = shapes;
    ctx->out = out_shape;
    if (op_ == MergeOp::multiply)
      for (const Tensor* x : xs) ctx->inputs.push_back(*x);
    ctx->winner = std::move(winner);
    *context = std::move(ctx);
  }
  return y;
}

std::vector<Tensor> ElementwiseMerge::backward_inputs(const LayerContext& context, const Tensor& dy, Gradients&) {
  const auto& ctx = detail::context_of<ElementwiseContext>(context, where());
  detail::check_dy(dy, ctx.out, where());
  const std::size_t count = ctx.shapes.size();
  const std::int64_t n = dy.numel();
  std::vector<std::vector<std::int64_t>> offsets(count);
  for (std::size_t i = 0; i < count; ++i)
    if (ctx.shapes[i] != ctx.out) offsets[i] = broadcast_offsets(ctx.out, ctx.shapes[i]);
  std::vector<Tensor> dxs;
  for (std::size_t i = 0; i < count; ++i) {
    Tensor dx(ctx.shapes[i]);
    for (std::int64_t f = 0; f < n; ++f) {
      float g = dy[f];
      switch (op_) {
        case MergeOp::add: break;
        case MergeOp::subtract: g = i == 0 ? g : -g; break;
        case MergeOp::average: g /= static_cast<float>(count); break;
        case MergeOp::multiply:
          for (std::size_t j = 0; j < count; ++j) {
            if (j == i) continue;
            const Tensor& xj = ctx.inputs[j];
            g *= xj[offsets[j].empty() ? f : offsets[j][static_cast<std::size_t>(f)]];
          }
          break;
        case MergeOp::maximum:
        case MergeOp::minimum:
          if (ctx.winner[static_cast<std::size_t>(f)] != i) g = 0.0f;
          break;
      }
      dx[offsets[i].empty() ? f : offsets[i][static_cast<std::size_t>(f)]] += g;
    }
    dxs.push_back(std::move(dx));
  }
  return dxs;
}

Add::Add(std::string name) : ElementwiseMerge(MergeOp::add, std::move(name)) {}
Subtract::Subtract(std::string name) : ElementwiseMerge(MergeOp::subtract, std::move(name)) {}
Multiply::Multiply(std::string name) : ElementwiseMerge(MergeOp::multiply, std::move(name)) {}
Average::Average(std::string name) : ElementwiseMerge(MergeOp::average, std::move(name)) {}
Maximum::Maximum(std::string name) : ElementwiseMerge(MergeOp::maximum, std::move(name)) {}
Minimum::Minimum(std::string name) : ElementwiseMerge(MergeOp::minimum, std::move(name)) {}

// ---------------------------------------------------------------- Concatenate

Concatenate::Concatenate(int axis, std::string name)
    : MergeLayer(name.empty() ? unique_name("concatenate") : std::move(name)), axis_(axis) {}

Shape Concatenate::compute_output_shape_inputs(const std::vector<Shape>& shapes) const {
  require_count(shapes.size());
  const int rank = shapes[0].rank();
  const int axis = axis_ < 0 ? axis_ + rank : axis_;
  if (axis < 1 || axis >= rank) {
    throw ArgumentError(where(), "axis", "an axis in [1, " + std::to_string(rank - 1) + "] or [-" +
                                             std::to_string(rank - 1) + ", -1] for inputs of rank " + std::to_string(rank),
                        std::to_string(axis_));
  }
  std::vector<std::int64_t> out = shapes[0].dims();
  for (std::size_t i = 1; i < shapes.size(); ++i) {
    bool ok = shapes[i].rank() == rank;
    for (int d = 0; ok && d < rank; ++d)
      ok = d == axis || shapes[i][d] == out[static_cast<std::size_t>(d)] || shapes[i][d] < 0 || out[static_cast<std::size_t>(d)] < 0;
    if (!ok) {
      throw ShapeError(where(), "inputs[" + std::to_string(i) + "]",
                       "the shape of inputs[0] " + shapes[0].str() + " except on axis " + std::to_string(axis),
                       "shape " + shapes[i].str());
    }
    const std::int64_t a = out[static_cast<std::size_t>(axis)], b = shapes[i][axis];
    out[static_cast<std::size_t>(axis)] = (a < 0 || b < 0) ? -1 : a + b;
  }
  return Shape(out);
}

Tensor Concatenate::forward_inputs(const std::vector<const Tensor*>& xs, bool, std::unique_ptr<LayerContext>* context,
                                   UpdateSink*) {
  std::vector<Shape> shapes;
  for (const Tensor* x : xs) shapes.push_back(x->shape());
  Tensor y(compute_output_shape_inputs(shapes));
  const int rank = shapes[0].rank();
  const int axis = axis_ < 0 ? axis_ + rank : axis_;
  std::int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; ++d) outer *= y.dim(d);
  for (int d = axis + 1; d < rank; ++d) inner *= y.dim(d);
  const std::int64_t row = y.dim(axis) * inner;
  std::int64_t at = 0;
  for (const Tensor* x : xs) {
    const std::int64_t block = x->dim(axis) * inner;
    for (std::int64_t o = 0; o < outer; ++o) std::copy_n(x->data() + o * block, block, y.data() + o * row + at);
    at += block;
  }
  if (context) {
    auto ctx = std::make_unique<ConcatContext>();
    ctx->shapes = std::move(shapes);
    ctx->out = y.shape();
    *context = std::move(ctx);
  }
  return y;
}

std::vector<Tensor> Concatenate::backward_inputs(const LayerContext& context, const Tensor& dy, Gradients&) {
  const auto& ctx = detail::context_of<ConcatContext>(context, where());
  detail::check_dy(dy, ctx.out, where());
  const int rank = ctx.shapes[0].rank();
  const int axis = axis_ < 0 ? axis_ + rank : axis_;
  std::int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; ++d) outer *= dy.dim(d);
  for (int d = axis + 1; d < rank; ++d) inner *= dy.dim(d);
  const std::int64_t row = dy.dim(axis) * inner;
  std::vector<Tensor> dxs;
  std::int64_t at = 0;
  for (const Shape& s : ctx.shapes) {
    Tensor dx(s);
    const std::int64_t block = s[axis] * inner;
    for (std::int64_t o = 0; o < outer; ++o) std::copy_n(dy.data() + o * row + at, block, dx.data() + o * block);
    at += block;
    dxs.push_back(std::move(dx));
  }
  return dxs;
}

}  // namespace bnorm::nn
