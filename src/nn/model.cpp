#include "bnorm/nn/model.hpp"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/spatial.hpp"
#include "bnorm/nn/updates.hpp"
#include "data_parallel.hpp"
#include "layer_context.hpp"

namespace bnorm::nn {

namespace {

std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Rows `index[begin, end)` of x (first dimension), in that order.
Tensor gather_rows(const Tensor& x, const std::vector<std::int64_t>& index, std::size_t begin, std::size_t end) {
  std::vector<std::int64_t> dims = x.shape().dims();
  const std::int64_t row = x.dim(0) ? x.numel() / x.dim(0) : 0;
  dims[0] = static_cast<std::int64_t>(end - begin);
  Tensor out{Shape(dims)};
  for (std::size_t i = begin; i < end; ++i) {
    std::copy_n(x.data() + index[i] * row, row, out.data() + static_cast<std::int64_t>(i - begin) * row);
  }
  return out;
}

std::vector<std::int64_t> iota(std::int64_t n) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

std::string shape_str(const Shape& s) {  // Keras style: (None, 64)
  std::string out = "(";
  for (int i = 0; i < s.rank(); ++i) out += (i ? ", " : "") + (s[i] < 0 ? std::string("None") : std::to_string(s[i]));
  return out + (s.rank() == 1 ? ",)" : ")");
}

std::string with_commas(std::int64_t n) {
  const std::string digits = std::to_string(n);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// Running, batch-size weighted mean (Keras's loss tracker).
struct WeightedMean {
  double sum = 0, weight = 0;
  void add(double v, double w) {
    sum += v * w;
    weight += w;
  }
  double result() const { return weight > 0 ? sum / weight : 0.0; }
};

}  // namespace

// ---------------------------------------------------------------- functional graph

const Shape& SymbolicTensor::shape() const { return node_->shape; }

SymbolicTensor Input(std::vector<std::int64_t> shape, std::string name) {
  std::vector<std::int64_t> d{-1};
  for (auto v : shape) {
    if (v < 0) throw ShapeError("Input", "shape", "known non-negative sizes", Shape(shape).str());
    d.push_back(v);
  }
  auto node = std::make_shared<SymbolicTensor::Node>();
  node->shape = Shape(d);
  node->name = name.empty() ? unique_name("input_layer") : std::move(name);
  return SymbolicTensor(node);
}

// One input is a list of one: the default build_inputs / compute_output_shape_inputs call
// the single-input build / compute_output_shape.
SymbolicTensor Layer::operator()(const SymbolicTensor& x, std::optional<bool> training) {
  return (*this)(std::vector<SymbolicTensor>{x}, training);
}

SymbolicTensor Layer::operator()(const std::vector<SymbolicTensor>& xs, std::optional<bool> training) {
  std::shared_ptr<Layer> self;
  try {
    self = shared_from_this();
  } catch (const std::bad_weak_ptr&) {
    throw StateError(where(), "layer", "a layer owned by a std::shared_ptr (use std::make_shared)",
                     "a layer not owned by a shared_ptr");
  }
  std::vector<Shape> shapes;
  for (const auto& x : xs) shapes.push_back(x.shape());
  if (!built()) build_inputs(shapes);
  auto node = std::make_shared<SymbolicTensor::Node>();
  node->layer = self;
  for (const auto& x : xs) node->inputs.push_back(x.node_);
  node->training = training;
  node->shape = compute_output_shape_inputs(shapes);
  node->name = name();
  return SymbolicTensor(node);
}

// Keras 3's map_graph (keras/src/ops/function.py): nodes found by a depth-first walk from
// the output (a cycle is an error), depth = longest path to the output, layers ordered by
// depth (deepest first), ties by the order the walk first met them. model.layers and the
// weight files' numbering (conv2d, conv2d_1, ...) follow this order.
Model::Model(const SymbolicTensor& inputs, const SymbolicTensor& outputs, std::string name)
    : name_(name.empty() ? unique_name("functional") : std::move(name)) {
  using SymNode = SymbolicTensor::Node;
  const std::string where = "Model '" + name_ + "'";
  const SymNode* input = inputs.node_.get();
  if (input->layer) {
    throw ArgumentError(where, "inputs", "a tensor made by Input()", "the output of layer '" + input->layer->name() + "'");
  }
  // Depth-first walk from the output.
  std::vector<const SymNode*> post_order;
  std::map<const SymNode*, int> state;  // 1 in progress, 2 finished
  std::map<const Layer*, std::size_t> layer_index;
  std::vector<const Layer*> layers_found;
  std::function<void(const SymNode*)> visit = [&](const SymNode* n) {
    if (n == input) return;
    if (!n->layer) {
      throw ArgumentError(where, "outputs", "a tensor computed from the given inputs",
                          "a tensor computed from another Input ('" + n->name + "')");
    }
    auto& st = state[n];
    if (st == 2) return;
    if (st == 1) throw ArgumentError(where, "graph", "a graph without cycles", "a cycle through layer '" + n->layer->name() + "'");
    st = 1;
    if (layer_index.emplace(n->layer.get(), layers_found.size()).second) layers_found.push_back(n->layer.get());
    for (const auto& in : n->inputs) visit(in.get());
    state[n] = 2;
    post_order.push_back(n);
  };
  visit(outputs.node_.get());
  // Depths (keras map_graph): walk the post-order backwards (output first).
  std::map<const SymNode*, int> node_depth;
  std::map<const Layer*, int> layer_depth;
  for (auto it = post_order.rbegin(); it != post_order.rend(); ++it) {
    const SymNode* n = *it;
    int depth = std::max(node_depth[n], layer_depth[n->layer.get()]);
    layer_depth[n->layer.get()] = depth;
    node_depth[n] = depth;
    for (const auto& in : n->inputs)
      if (in.get() != input) node_depth[in.get()] = std::max(depth + 1, node_depth[in.get()]);
  }
  // Nodes: deepest first; a node's inputs are deeper than it, so this is an execution order.
  std::vector<const SymNode*> order = post_order;
  std::stable_sort(order.begin(), order.end(),
                   [&](const SymNode* a, const SymNode* b) { return node_depth[a] > node_depth[b]; });
  std::vector<const Layer*> layer_order = layers_found;
  std::stable_sort(layer_order.begin(), layer_order.end(), [&](const Layer* a, const Layer* b) {
    if (layer_depth[a] != layer_depth[b]) return layer_depth[a] > layer_depth[b];
    return layer_index[a] < layer_index[b];
  });
  std::map<const SymNode*, int> tensor_of{{input, 0}};
  for (const SymNode* n : order) {
    Node node{n->layer, {}, n->training, n->shape};
    for (const auto& in : n->inputs) node.inputs.push_back(tensor_of.at(in.get()));
    nodes_.push_back(std::move(node));
    tensor_of[n] = static_cast<int>(nodes_.size());
  }
  output_ = tensor_of.at(outputs.node_.get());
  for (const Layer* l : layer_order) {
    for (const Node& n : nodes_)
      if (n.layer.get() == l) {
        layers_.push_back(n.layer);
        break;
      }
  }
  compute_last_uses();
  input_shape_ = inputs.shape();
  input_name_ = inputs.node_->name;
}

namespace {
// y = max(x, 0) exactly as the fused kernel's ReLU: Activation('relu'), or a ReLU layer
// with default arguments.
bool is_plain_relu(const Layer& layer) {
  if (const auto* a = dynamic_cast<const Activation*>(&layer))
    return a->activation() == kernels::Activation::relu;
  if (const auto* r = dynamic_cast<const ReLU*>(&layer)) {
    const ReLUOptions& o = r->options();
    return !o.max_value && o.negative_slope == 0.0 && o.threshold == 0.0;
  }
  return false;
}
}  // namespace

void Model::compute_last_uses() {
  last_use_.assign(nodes_.size() + 1, 0);
  std::vector<int> readers(nodes_.size() + 1, 0);
  for (std::size_t k = 0; k < nodes_.size(); ++k)
    for (int t : nodes_[k].inputs) {
      last_use_[static_cast<std::size_t>(t)] = k;
      ++readers[static_cast<std::size_t>(t)];
    }
  // Batch norm + ReLU pairs (fused_pairs): the ReLU is the only reader of the batch
  // normalization's output, which is not the model's output.
  fused_relu_.assign(nodes_.size(), -1);
  fused_away_.assign(nodes_.size(), false);
  for (std::size_t j = 0; j < nodes_.size(); ++j) {
    const Node& relu = nodes_[j];
    if (relu.inputs.size() != 1 || relu.inputs[0] == 0 || relu.inputs[0] == output_) continue;
    const auto t = static_cast<std::size_t>(relu.inputs[0]);
    const auto* bn = dynamic_cast<const BatchNormalization*>(nodes_[t - 1].layer.get());
    if (readers[t] != 1 || !bn || !bn->fusable_with_relu() || !is_plain_relu(*relu.layer)) continue;
    fused_relu_[t - 1] = static_cast<int>(j);
    fused_away_[j] = true;
  }
}

std::vector<std::pair<std::size_t, std::size_t>> Model::fused_pairs() const {
  std::vector<std::pair<std::size_t, std::size_t>> out;
  if (!fuse_batch_norm_relu_) return out;
  for (std::size_t k = 0; k < fused_relu_.size(); ++k)
    if (fused_relu_[k] >= 0) out.emplace_back(k, static_cast<std::size_t>(fused_relu_[k]));
  return out;
}

void Model::set_fuse_batch_norm_relu(bool on) {
  fuse_batch_norm_relu_ = on;
  for (auto& l : layers_)
    if (auto m = std::dynamic_pointer_cast<Model>(l)) m->set_fuse_batch_norm_relu(on);
}

void Model::add_layer(LayerPtr layer, Shape output_shape) {
  if (!layer) throw ArgumentError("Model '" + name_ + "'", "layer", "a layer", "a null pointer");
  if (layer->takes_input_list()) {
    throw ArgumentError("Sequential '" + name_ + "'", "layer", "a layer with one input",
                        layer->class_name() + " '" + layer->name() + "', which takes a list of inputs");
  }
  nodes_.push_back(Node{layer, {output_}, std::nullopt, std::move(output_shape)});
  output_ = static_cast<int>(nodes_.size());
  if (std::find(layers_.begin(), layers_.end(), layer) == layers_.end()) layers_.push_back(std::move(layer));
  compute_last_uses();
}

LayerPtr Model::get_layer(const std::string& name) const {
  for (const auto& l : layers_)
    if (l->name() == name) return l;
  std::string names;
  for (const auto& l : layers_) names += (names.empty() ? "" : ", ") + l->name();
  throw ArgumentError("Model '" + name_ + "'", "get_layer", "one of the layer names [" + names + "]",
                      "'" + name + "'");
}

void Model::set_nested_training(NestedTraining rule) {
  nested_training_ = rule;
  for (auto& l : layers_)
    if (auto m = std::dynamic_pointer_cast<Model>(l)) m->set_nested_training(rule);
}

// fit under Keras 3's rule: each call recorded with training=False that reaches a
// trainable BatchNormalization (itself, or inside a nested model) is said to run in
// training mode. Nested models' own calls are visited too (the rule applies to them).
void Model::warn_overridden_training(const std::string& fitted) const {
  for (const Node& call : nodes_) {
    const auto* nested = dynamic_cast<const Model*>(call.layer.get());
    if (call.training && !*call.training) {
      bool batch_norm = false;
      auto is_trainable_bn = [](const Layer& l) { return l.trainable() && dynamic_cast<const BatchNormalization*>(&l); };
      batch_norm = is_trainable_bn(*call.layer);
      if (nested)
        for (const auto& [path, l] : nested->flattened_layers()) batch_norm = batch_norm || is_trainable_bn(*l);
      if (batch_norm) {
        std::fprintf(stderr,
                     "warning: Model '%s'.fit: '%s' is called with training=False, but under Keras 3's rule "
                     "(NestedTraining::outer_mode_wins) it runs in training mode: its batch normalization uses and "
                     "updates batch statistics (freeze those layers, or use the default rule, to keep them)\n",
                     fitted.c_str(), call.layer->name().c_str());
        continue;
      }
    }
    if (nested) nested->warn_overridden_training(fitted);
  }
}

bool Model::has_recorded_training() const {
  for (const Node& n : nodes_) {
    if (n.training) return true;
    if (auto m = std::dynamic_pointer_cast<Model>(n.layer); m && m->has_recorded_training()) return true;
  }
  return false;
}

void Model::set_trainable(bool trainable) {
  trainable_ = trainable;
  for (auto& l : layers_) l->set_trainable(trainable);
}

void Model::check_input(const Tensor& x) const {
  if (!input_shape_) return;
  bool ok = x.rank() == input_shape_->rank();
  for (int i = 1; ok && i < x.rank(); ++i) ok = (*input_shape_)[i] < 0 || x.dim(i) == (*input_shape_)[i];
  if (!ok) {
    throw ShapeError("Model '" + name_ + "'", "input", "shape " + input_shape_->str() + " (-1: any size)",
                     x.shape().str());
  }
}

Tensor Model::layer_input(const Tensor& x, std::size_t index) {
  if (index > layers_.size()) {
    throw ArgumentError("Model '" + name_ + "'", "layer_input index",
                        "an index in [0, " + std::to_string(layers_.size()) + "] (the model's layer count)",
                        std::to_string(index));
  }
  std::size_t stop = nodes_.size();
  if (index < layers_.size()) {
    stop = 0;
    while (nodes_[stop].layer != layers_[index]) ++stop;
    if (nodes_[stop].inputs.size() != 1) {
      throw ArgumentError("Model '" + name_ + "'", "layer_input index",
                          "a layer with one input", layers_[index]->class_name() + " '" + layers_[index]->name() +
                                                        "', which takes a list of inputs");
    }
  }
  check_input(x);
  return run(x, false, nullptr, nullptr, stop);
}

Tensor Model::layer_input(const Tensor& x, const std::vector<std::size_t>& path) {
  if (path.empty()) throw ArgumentError("Model '" + name_ + "'", "layer_input path", "at least one index", "an empty path");
  if (path.size() == 1) return layer_input(x, path[0]);
  auto* nested = path[0] < layers_.size() ? dynamic_cast<Model*>(layers_[path[0]].get()) : nullptr;
  if (!nested) {
    throw ArgumentError("Model '" + name_ + "'", "layer_input path", "the index of a nested model",
                        std::to_string(path[0]));
  }
  const Tensor y = layer_input(x, path[0]);
  return nested->layer_input(y, std::vector<std::size_t>(path.begin() + 1, path.end()));
}

std::vector<std::pair<std::vector<std::size_t>, LayerPtr>> Model::flattened_layers() const {
  std::vector<std::pair<std::vector<std::size_t>, LayerPtr>> out;
  std::set<const Layer*> seen;
  std::function<void(const Model&, std::vector<std::size_t>)> walk = [&](const Model& m, std::vector<std::size_t> prefix) {
    for (std::size_t i = 0; i < m.layers_.size(); ++i) {
      const LayerPtr& l = m.layers_[i];
      if (!seen.insert(l.get()).second) continue;
      std::vector<std::size_t> path = prefix;
      path.push_back(i);
      out.emplace_back(path, l);
      if (const auto* nested = dynamic_cast<const Model*>(l.get())) walk(*nested, path);
    }
  };
  walk(*this, {});
  return out;
}

Tensor Model::call(const Tensor& x, bool training, GradientTape* tape, UpdateSink* updates) {
  check_input(x);
  return run(x, training, tape, updates, nodes_.size());
}

Tensor Model::run(const Tensor& x, bool training, GradientTape* tape, UpdateSink* updates, std::size_t stop) {
  if (stop == 0) return x;  // (an empty model: stop is 0)
  // values[t]: tensor t while some node still reads it (x itself is never copied).
  std::vector<Tensor> values(nodes_.size() + 1);
  auto value = [&](int t) -> const Tensor& { return t == 0 ? x : values[static_cast<std::size_t>(t)]; };
  std::vector<int> ids(nodes_.size() + 1);
  if (tape) ids[0] = tape->chain_tensor();
  const int target = stop < nodes_.size() ? nodes_[stop].inputs.front() : output_;
  // Fused pairs run whole graphs only (layer_input may stop between the two calls).
  const bool fuse = fuse_batch_norm_relu_ && stop == nodes_.size();
  for (std::size_t k = 0; k < stop; ++k) {
    if (fuse && fused_away_[k]) continue;  // run by its batch normalization's call
    const Node& node = nodes_[k];
    const bool mode = (node.training && nested_training_ == NestedTraining::recorded_wins) ? *node.training : training;
    std::unique_ptr<LayerContext> context;
    std::unique_ptr<LayerContext>* ctx = tape ? &context : nullptr;
    Tensor y;
    // The output's tensor number: the ReLU's in a fused pair.
    const std::size_t out =
        fuse && fused_relu_[k] >= 0 ? static_cast<std::size_t>(fused_relu_[k]) + 1 : k + 1;
    if (out != k + 1) {
      y = static_cast<BatchNormalization&>(*node.layer)
              .forward_relu(value(node.inputs[0]), mode, ctx, updates);
    } else if (node.inputs.size() == 1 && !node.layer->takes_input_list()) {
      y = node.layer->forward(value(node.inputs[0]), mode, ctx, updates);
    } else {
      std::vector<const Tensor*> xs;
      for (int t : node.inputs) xs.push_back(&value(t));
      y = node.layer->forward_inputs(xs, mode, ctx, updates);
    }
    if (tape) {
      ids[out] = tape->new_tensor();
      std::vector<int> in_ids;
      for (int t : node.inputs) in_ids.push_back(ids[static_cast<std::size_t>(t)]);
      tape->record(*node.layer, std::move(context), std::move(in_ids), ids[out]);
    }
    values[out] = std::move(y);
    // Free what no later node reads (the input of node `stop` is read at `stop`: kept).
    for (int t : node.inputs)
      if (t != 0 && last_use_[static_cast<std::size_t>(t)] == k) values[static_cast<std::size_t>(t)] = Tensor();
  }
  if (tape) tape->set_chain_tensor(ids[static_cast<std::size_t>(target)]);
  return target == 0 ? x : std::move(values[static_cast<std::size_t>(target)]);
}

// ---------------------------------------------------------------- a model as a layer

namespace {
struct ModelContext : LayerContext {
  GradientTape tape;
};
}  // namespace

void Model::build(const Shape& input_shape) {
  if (!input_shape_) input_shape_ = input_shape;
}

Shape Model::compute_output_shape(const Shape& input_shape) const {
  std::vector<Shape> shapes(nodes_.size() + 1);
  shapes[0] = input_shape;
  for (std::size_t k = 0; k < nodes_.size(); ++k) {
    std::vector<Shape> in;
    for (int t : nodes_[k].inputs) in.push_back(shapes[static_cast<std::size_t>(t)]);
    shapes[k + 1] = nodes_[k].layer->compute_output_shape_inputs(in);
  }
  return shapes[static_cast<std::size_t>(output_)];
}

Tensor Model::forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context, UpdateSink* updates) {
  if (!context) return call(x, training, nullptr, updates);
  auto ctx = std::make_unique<ModelContext>();
  Tensor y = call(x, training, &ctx->tape, updates);
  *context = std::move(ctx);
  return y;
}

Tensor Model::backward(const LayerContext& context, const Tensor& dy, Gradients& grads) {
  const auto& ctx = detail::context_of<ModelContext>(context, where());
  if (ctx.tape.empty()) return dy;
  return ctx.tape.backpropagate(dy, grads, true);
}

void Model::backward_variables(const LayerContext& context, const Tensor& dy, Gradients& grads) {
  const auto& ctx = detail::context_of<ModelContext>(context, where());
  if (!ctx.tape.empty()) (void)ctx.tape.backpropagate(dy, grads, false);
}

std::vector<Variable*> Model::weights() {
  std::vector<Variable*> out;
  std::set<const Layer*> seen;
  for (auto& l : layers_) {
    if (!seen.insert(l.get()).second) continue;
    for (Variable* v : l->weights()) out.push_back(v);
  }
  return out;
}

std::vector<Variable*> Model::trainable_weights() {
  std::vector<Variable*> out;
  if (!trainable_) return out;
  std::set<const Layer*> seen;
  for (auto& l : layers_) {
    if (!seen.insert(l.get()).second) continue;
    for (Variable* v : l->trainable_weights()) out.push_back(v);
  }
  return out;
}

std::vector<Variable*> Model::non_trainable_weights() {
  std::vector<Variable*> out;
  std::set<const Layer*> seen;
  for (auto& l : layers_) {
    if (!seen.insert(l.get()).second) continue;
    for (Variable* v : l->non_trainable_weights()) out.push_back(v);
  }
  return out;
}

std::vector<Tensor> Model::get_weights() {
  std::vector<Tensor> out;
  for (Variable* v : weights()) out.push_back(v->value);
  return out;
}

void Model::set_weights(const std::vector<Tensor>& values) {
  std::vector<Variable*> vars = weights();
  const std::string where = "Model '" + name_ + "'";
  if (values.size() != vars.size()) {
    throw ShapeError(where, "weights", std::to_string(vars.size()) + " arrays", std::to_string(values.size()) + " arrays");
  }
  for (std::size_t i = 0; i < vars.size(); ++i) {
    if (values[i].shape() != vars[i]->value.shape()) {
      throw ShapeError(where, "weights[" + std::to_string(i) + "] (" + vars[i]->name + ")",
                       "shape " + vars[i]->value.shape().str(), values[i].shape().str());
    }
  }
  for (std::size_t i = 0; i < vars.size(); ++i) vars[i]->value = values[i];
}

std::vector<float> Model::losses() const {
  std::vector<float> out;
  if (!trainable_) return out;
  for (const auto& l : layers_)
    for (float v : l->losses()) out.push_back(v);
  return out;
}

std::string Model::summary() const {
  std::ostringstream s;
  const std::string rule(65, '_'), bold(65, '=');
  s << "Model: \"" << name_ << "\"\n" << rule << "\n";
  char buf[160];
  std::snprintf(buf, sizeof buf, " %-28s %-25s %s\n", "Layer (type)", "Output Shape", "Param #");
  s << buf << bold << "\n";
  std::int64_t total = 0, trainable = 0;
  for (const auto& l : layers_) {
    std::int64_t params = 0, train = 0;
    const Layer& layer = *l;
    std::vector<const Variable*> vars = layer.weights();
    std::set<const Variable*> trainable_vars;
    for (const Variable* v : const_cast<Layer&>(layer).trainable_weights()) trainable_vars.insert(v);
    for (const Variable* v : vars) {
      params += v->value.numel();
      if (trainable_vars.count(v)) train += v->value.numel();
    }
    total += params;
    trainable += train;
    std::optional<Shape> shape;
    for (const Node& n : nodes_)
      if (n.layer == l) {
        if (n.output_shape.rank() > 0) shape = n.output_shape;
        break;
      }
    const std::string label = l->name() + " (" + l->class_name() + ")";
    std::snprintf(buf, sizeof buf, " %-28s %-25s %s\n", label.c_str(), shape ? shape_str(*shape).c_str() : "?",
                  with_commas(params).c_str());
    s << buf;
  }
  s << bold << "\nTotal params: " << with_commas(total) << "\nTrainable params: " << with_commas(trainable)
    << "\nNon-trainable params: " << with_commas(total - trainable) << "\n" << rule << "\n";
  return s.str();
}

// ---------------------------------------------------------------- training

void Model::compile(std::shared_ptr<Optimizer> optimizer, std::shared_ptr<Loss> loss, std::vector<std::string> metrics) {
  const std::string where = "Model '" + name_ + "'";
  if (!optimizer) throw ArgumentError(where, "optimizer", "an optimizer", "null");
  if (!loss) throw ArgumentError(where, "loss", "a loss", "null");
  for (const auto& m : metrics) make_metric(m, loss->name(), Shape{1, 1});  // validates names now
  optimizer_ = std::move(optimizer);
  loss_ = std::move(loss);
  metric_names_ = std::move(metrics);
  metrics_.clear();
}

void Model::compile(const std::string& optimizer, const std::string& loss, std::vector<std::string> metrics) {
  compile(std::shared_ptr<Optimizer>(make_optimizer(optimizer)), std::shared_ptr<Loss>(make_loss(loss)),
          std::move(metrics));
}

void Model::compile(const std::string& optimizer, std::shared_ptr<Loss> loss, std::vector<std::string> metrics) {
  compile(std::shared_ptr<Optimizer>(make_optimizer(optimizer)), std::move(loss), std::move(metrics));
}

void Model::compile(std::shared_ptr<Optimizer> optimizer, const std::string& loss, std::vector<std::string> metrics) {
  compile(std::move(optimizer), std::shared_ptr<Loss>(make_loss(loss)), std::move(metrics));
}

void Model::require_compiled(const char* what) const {
  if (!optimizer_) {
    throw StateError("Model '" + name_ + "'", what, "a compiled model (call compile() first)", "an uncompiled model");
  }
}

std::vector<std::unique_ptr<MeanMetricWrapper>>& Model::metrics_for(const Tensor& y_pred) {
  if (metrics_.size() != metric_names_.size()) {
    metrics_.clear();
    for (const auto& m : metric_names_) metrics_.push_back(make_metric(m, loss_->name(), y_pred.shape()));
  }
  return metrics_;
}

Logs Model::train_step(const Tensor& x, const Tensor& y, std::int64_t) {
  // Statistic updates are collected and applied last, so that a step that fails (for
  // example a target of the wrong shape) leaves every layer as it was.
  UpdateCollection updates;
  GradientTape tape;
  try {
    const Tensor y_pred = call(x, true, &tape, &updates);
    const LossValue loss = loss_->compute(y, y_pred);
    double total = loss.value;
    for (float r : losses()) total += r;
    Gradients grads = tape.variable_gradients(loss.grad);
    for (auto& l : layers_) l->add_regularization_gradients(grads);
    auto& metrics = metrics_for(y_pred);
    optimizer_->apply_gradients(grads, trainable_weights());
    updates.apply();
    Logs logs{{"loss", total}};
    for (auto& m : metrics) {
      m->update_state(y, y_pred);
      logs[m->name()] = m->result();
    }
    return logs;
  } catch (...) {
    updates.discard();
    throw;
  }
}

Logs Model::train_on_batch(const Tensor& x, const Tensor& y) {
  require_compiled("train_on_batch");
  for (auto& m : metrics_) m->reset_state();
  return train_step(x, y, x.rank() ? x.dim(0) : 0);
}

std::shared_ptr<History> Model::fit(const Tensor& x, const Tensor& y, FitOptions options) {
  require_compiled("fit");
  const std::string where = "Model '" + name_ + "'.fit";
  if (x.rank() < 1 || y.rank() < 1 || x.dim(0) != y.dim(0)) {
    throw ShapeError(where, "y", "as many samples as x (" + std::to_string(x.rank() ? x.dim(0) : 0) + ")",
                     "shape " + y.shape().str());
  }
  if (options.batch_size < 1) throw ArgumentError(where, "batch_size", "a positive integer", std::to_string(options.batch_size));
  if (options.epochs < 0) throw ArgumentError(where, "epochs", "a value >= 0", std::to_string(options.epochs));
  if (options.initial_epoch < 0) {
    throw ArgumentError(where, "initial_epoch", "a value >= 0", std::to_string(options.initial_epoch));
  }
  if (!(options.validation_split >= 0.0 && options.validation_split < 1.0)) {
    throw ArgumentError(where, "validation_split", "a value in [0, 1)", std::to_string(options.validation_split));
  }
  // Keras: the validation split is the last fraction of the samples, before shuffling.
  std::int64_t n = x.dim(0);
  std::optional<std::pair<Tensor, Tensor>> validation = options.validation_data;
  Tensor x_split, y_split;  // the training part when validation_split takes the tail
  const Tensor* xt = &x;    // the training samples, not copied otherwise
  const Tensor* yt = &y;
  if (options.validation_split > 0.0) {
    const auto split_at = static_cast<std::int64_t>(static_cast<double>(n) * (1.0 - options.validation_split));
    const auto all = iota(n);
    validation = std::make_pair(gather_rows(x, all, static_cast<std::size_t>(split_at), static_cast<std::size_t>(n)),
                                gather_rows(y, all, static_cast<std::size_t>(split_at), static_cast<std::size_t>(n)));
    x_split = gather_rows(x, all, 0, static_cast<std::size_t>(split_at));
    y_split = gather_rows(y, all, 0, static_cast<std::size_t>(split_at));
    xt = &x_split;
    yt = &y_split;
    n = split_at;
  }
  const std::int64_t steps = (n + options.batch_size - 1) / options.batch_size;
  // Data-parallel (FitOptions::communicator): rank 0's weights everywhere, synchronized
  // batch normalization, each batch split by rows (data_parallel.cpp).
  detail::DataParallelScope data_parallel(*this, options.communicator, options.sync_all_batch_norm);
  if (data_parallel.rank() != 0) options.verbose = 0;
  auto history = std::make_shared<History>();
  std::vector<std::shared_ptr<Callback>> callbacks;
  if (options.verbose > 0) callbacks.push_back(std::make_shared<ProgressBar>(options.verbose));
  callbacks.push_back(history);
  for (auto& c : options.callbacks) callbacks.push_back(c);

  stop_training = false;
  // Keras 3's rule replaces a recorded training=False: say so when batch normalization is
  // behind such a call (the transfer-learning guide expects it to stay in inference mode).
  if (nested_training_ == NestedTraining::outer_mode_wins) warn_overridden_training(name_);
  for (auto& c : callbacks) c->on_train_begin(*this, options.epochs, steps);
  std::vector<std::int64_t> order = iota(n);
  // Each epoch shuffles the previous epoch's order (Fisher-Yates with a counter-based
  // generator), so a resumed run first replays the shuffles of the epochs it skips.
  auto shuffle = [&](int epoch) {
    const std::uint64_t stream = mix64(options.seed ^ mix64(static_cast<std::uint64_t>(epoch) + 1));
    for (std::int64_t i = n - 1; i > 0; --i) {
      const auto j = static_cast<std::int64_t>(mix64(stream + static_cast<std::uint64_t>(i)) %
                                               static_cast<std::uint64_t>(i + 1));
      std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
    }
  };
  if (options.shuffle)
    for (int epoch = 0; epoch < std::min(options.initial_epoch, options.epochs); ++epoch) shuffle(epoch);
  for (int epoch = options.initial_epoch; epoch < options.epochs && !stop_training; ++epoch) {
    for (auto& c : callbacks) c->on_epoch_begin(*this, epoch);
    if (options.shuffle) shuffle(epoch);
    for (auto& m : metrics_) m->reset_state();
    WeightedMean loss;
    Logs logs;
    for (std::int64_t step = 0; step < steps; ++step) {
      const auto begin = static_cast<std::size_t>(step * options.batch_size);
      const auto end = static_cast<std::size_t>(std::min(n, (step + 1) * options.batch_size));
      if (data_parallel.active()) {
        const auto [first, last] = data_parallel.shard(static_cast<std::int64_t>(end - begin));
        const std::size_t b0 = begin + static_cast<std::size_t>(first),
                          b1 = begin + static_cast<std::size_t>(last);
        logs = train_step_sharded(gather_rows(*xt, order, b0, b1), gather_rows(*yt, order, b0, b1),
                                  static_cast<std::int64_t>(end - begin), *options.communicator);
      } else {
        const Tensor xb = gather_rows(*xt, order, begin, end), yb = gather_rows(*yt, order, begin, end);
        logs = train_step(xb, yb, static_cast<std::int64_t>(end - begin));
      }
      loss.add(logs["loss"], static_cast<double>(end - begin));
      logs["loss"] = loss.result();
      for (auto& c : callbacks) c->on_train_batch_end(*this, step, logs);
    }
    if (validation) {
      for (const auto& [k, v] : evaluate(validation->first, validation->second, options.batch_size, 0)) logs["val_" + k] = v;
    }
    epochs_completed_ = epoch + 1;
    for (auto& c : callbacks) c->on_epoch_end(*this, epoch, logs);
  }
  for (auto& c : callbacks) c->on_train_end(*this);
  return history;
}

Logs Model::evaluate(const Tensor& x, const Tensor& y, std::int64_t batch_size, int verbose) {
  require_compiled("evaluate");
  const std::string where = "Model '" + name_ + "'.evaluate";
  if (x.rank() < 1 || y.rank() < 1 || x.dim(0) != y.dim(0)) {
    throw ShapeError(where, "y", "as many samples as x", "shape " + y.shape().str());
  }
  if (batch_size < 1) throw ArgumentError(where, "batch_size", "a positive integer", std::to_string(batch_size));
  const std::int64_t n = x.dim(0);
  const auto order = iota(n);
  std::vector<std::unique_ptr<MeanMetricWrapper>> metrics;
  WeightedMean loss;
  double regularization = 0;
  for (float r : losses()) regularization += r;
  for (std::int64_t begin = 0; begin < n; begin += batch_size) {
    const std::int64_t end = std::min(n, begin + batch_size);
    const Tensor xb = gather_rows(x, order, static_cast<std::size_t>(begin), static_cast<std::size_t>(end));
    const Tensor yb = gather_rows(y, order, static_cast<std::size_t>(begin), static_cast<std::size_t>(end));
    const Tensor pred = call(xb, false);
    if (metrics.empty())
      for (const auto& m : metric_names_) metrics.push_back(make_metric(m, loss_->name(), pred.shape()));
    loss.add(loss_->value(yb, pred) + regularization, static_cast<double>(end - begin));
    for (auto& m : metrics) m->update_state(yb, pred);
  }
  Logs logs{{"loss", loss.result()}};
  for (auto& m : metrics) logs[m->name()] = m->result();
  if (verbose > 0) std::printf("%s\n", ProgressBar::line(1, 1, 0.0, logs, true).c_str());
  return logs;
}

Tensor Model::predict(const Tensor& x, std::int64_t batch_size, int verbose) {
  const std::string where = "Model '" + name_ + "'.predict";
  if (x.rank() < 1) throw ShapeError(where, "x", "a batch of samples (rank >= 1)", "rank 0");
  if (batch_size < 1) throw ArgumentError(where, "batch_size", "a positive integer", std::to_string(batch_size));
  const std::int64_t n = x.dim(0);
  const auto order = iota(n);
  std::vector<Tensor> parts;
  for (std::int64_t begin = 0; begin < n; begin += batch_size) {
    const std::int64_t end = std::min(n, begin + batch_size);
    parts.push_back(call(gather_rows(x, order, static_cast<std::size_t>(begin), static_cast<std::size_t>(end)), false));
  }
  if (parts.empty()) return call(x, false);
  std::vector<std::int64_t> dims = parts.front().shape().dims();
  dims[0] = n;
  Tensor out{Shape(dims)};
  std::int64_t offset = 0;
  for (const auto& p : parts) {
    std::copy_n(p.data(), p.numel(), out.data() + offset);
    offset += p.numel();
  }
  if (verbose > 0) std::printf("%s\n", ProgressBar::line(1, 1, 0.0, {}, true).c_str());
  return out;
}

void Model::set_epochs_completed(int epochs) {
  if (epochs < 0) throw ArgumentError("Model '" + name_ + "'", "epochs_completed", "a value >= 0", std::to_string(epochs));
  epochs_completed_ = epochs;
}

// ---------------------------------------------------------------- Sequential

Sequential::Sequential(std::vector<LayerPtr> layers, std::string name)
    : Model(name.empty() ? unique_name("sequential") : std::move(name)) {
  for (auto& l : layers) add(std::move(l));
}

void Sequential::add(LayerPtr layer) {
  if (auto input = std::dynamic_pointer_cast<InputLayer>(layer)) {
    if (!layers().empty() || input_shape_) {
      throw ArgumentError("Sequential '" + name() + "'", "layer", "an InputLayer only in first position",
                          "InputLayer '" + input->name() + "' after other layers");
    }
    input_shape_ = input->batch_shape();
    input_name_ = input->name();
    return;
  }
  if (layers().empty() && !input_shape_) {
    if (auto dense = std::dynamic_pointer_cast<Dense>(layer); dense && !dense->options().input_shape.empty()) {
      std::vector<std::int64_t> d{-1};
      d.insert(d.end(), dense->options().input_shape.begin(), dense->options().input_shape.end());
      input_shape_ = Shape(d);
    }
  }
  std::optional<Shape> out;
  if (input_shape_) {  // build now, with the running output shape
    const Shape s = nodes().empty() ? *input_shape_ : nodes().back().output_shape;
    if (!layer->built()) layer->build(s);
    out = layer->compute_output_shape(s);
  }
  add_layer(std::move(layer), out.value_or(Shape()));
}

void Sequential::build(const Shape& input_shape) {
  input_shape_ = input_shape;
  Shape s = input_shape;
  for (auto& node : nodes_mutable()) {
    if (!node.layer->built()) node.layer->build(s);
    s = node.layer->compute_output_shape(s);
    node.output_shape = s;
  }
}

}  // namespace bnorm::nn
