#include "bnorm/nn/fold.hpp"

#include <cmath>
#include <map>
#include <optional>
#include <type_traits>

#include "bnorm/core/error.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/conv.hpp"
#include "bnorm/nn/layers.hpp"

namespace bnorm::nn {

namespace {

// The layer's kernel whose LAST axes are the output channels, its bias (may be null), and
// whether its activation is linear; nullopt for a layer BatchNormalization cannot fold into.
struct Foldable {
  Variable* kernel;
  Variable* bias;
  std::int64_t channels;  // output channels
  int channel_axis;       // of the layer's output, for an output of rank `rank`: -1 last, 1 channels_first
};

std::optional<Foldable> foldable(Layer& layer) {
  if (auto* d = dynamic_cast<Dense*>(&layer)) {
    if (d->activation() != kernels::Activation::linear || !d->kernel()) return std::nullopt;
    return Foldable{d->kernel(), d->bias(), d->units(), -1};
  }
  auto* conv = dynamic_cast<ConvLayerBase*>(&layer);
  if (!conv || conv->activation() != kernels::Activation::linear || !conv->built()) return std::nullopt;
  const int axis = conv->data_format() == DataFormat::channels_first ? 1 : -1;
  if (auto* c = dynamic_cast<Conv2D*>(conv)) return Foldable{c->kernel(), c->bias(), c->filters(), axis};
  if (auto* c = dynamic_cast<Conv1D*>(conv)) return Foldable{c->kernel(), c->bias(), c->filters(), axis};
  if (auto* c = dynamic_cast<DepthwiseConv2D*>(conv)) {
    return Foldable{c->kernel(), c->bias(), c->input_channels() * c->options().depth_multiplier, axis};
  }
  if (auto* c = dynamic_cast<SeparableConv2D*>(conv)) return Foldable{c->pointwise_kernel(), c->bias(), c->filters(), axis};
  return std::nullopt;
}

// A copy of `layer` with a bias, built for `input`, holding `kernel` and `bias`.
LayerPtr with_bias(Layer& layer, const Shape& input, const Tensor& kernel, const Tensor& bias) {
  // The same layer class and options, with a bias.
  auto rebuild = [](auto* l, auto... args) -> LayerPtr {
    auto o = l->options();
    o.use_bias = true;
    o.name = l->name();
    return std::make_shared<std::remove_pointer_t<decltype(l)>>(args..., o);
  };
  LayerPtr out;
  std::vector<Tensor> weights{kernel, bias};
  if (auto* d = dynamic_cast<Dense*>(&layer)) {
    out = rebuild(d, d->units());
  } else if (auto* c = dynamic_cast<Conv2D*>(&layer)) {
    out = rebuild(c, c->filters(), c->kernel_size());
  } else if (auto* c1 = dynamic_cast<Conv1D*>(&layer)) {
    out = rebuild(c1, c1->filters(), c1->kernel_size());
  } else if (auto* dw = dynamic_cast<DepthwiseConv2D*>(&layer)) {
    out = rebuild(dw, dw->kernel_size());
  } else if (auto* sp = dynamic_cast<SeparableConv2D*>(&layer)) {
    out = rebuild(sp, sp->filters(), sp->kernel_size());
    weights = {sp->depthwise_kernel()->value, kernel, bias};
  }
  out->build(input);
  out->set_weights(weights);
  out->set_trainable(layer.trainable());
  return out;
}

// The BatchNormalization's folded kernel and bias for `f` (double per channel).
std::pair<Tensor, Tensor> folded_weights(const Foldable& f, const BatchNormalization& bn) {
  const std::int64_t c = f.channels;
  const double eps = bn.options().epsilon;
  std::vector<double> scale(static_cast<std::size_t>(c)), shift(static_cast<std::size_t>(c));
  for (std::int64_t j = 0; j < c; ++j) {
    const double g = bn.gamma() ? static_cast<double>(bn.gamma()->value[j]) : 1.0;
    const double b = bn.beta() ? static_cast<double>(bn.beta()->value[j]) : 0.0;
    const double mean = bn.moving_mean()->value[j];
    const double var = bn.moving_variance()->value[j];
    const double bias = f.bias ? static_cast<double>(f.bias->value[j]) : 0.0;
    scale[static_cast<std::size_t>(j)] = g / std::sqrt(var + eps);
    shift[static_cast<std::size_t>(j)] = (bias - mean) * scale[static_cast<std::size_t>(j)] + b;
  }
  Tensor kernel = f.kernel->value;  // (..., channels): the output channel is the flat index mod channels
  for (std::int64_t i = 0; i < kernel.numel(); ++i) {
    kernel[i] = static_cast<float>(static_cast<double>(kernel[i]) * scale[static_cast<std::size_t>(i % c)]);
  }
  Tensor bias(Shape{c});
  for (std::int64_t j = 0; j < c; ++j) bias[j] = static_cast<float>(shift[static_cast<std::size_t>(j)]);
  return {std::move(kernel), std::move(bias)};
}

}  // namespace

std::unique_ptr<Model> fold_batch_norm(const Model& model, FoldReport* report) {
  const std::string where = "fold_batch_norm(Model '" + model.name() + "')";
  if (!model.input_shape()) {
    throw StateError(where, "model", "a model with a known input shape", "an unbuilt model");
  }
  FoldReport local;
  FoldReport& rep = report ? *report : local;
  const auto& nodes = model.nodes();
  auto shape_of = [&](int t) { return t == 0 ? *model.input_shape() : nodes[static_cast<std::size_t>(t - 1)].output_shape; };
  std::vector<int> readers(nodes.size() + 1, 0);
  for (const auto& n : nodes)
    for (int t : n.inputs) ++readers[static_cast<std::size_t>(t)];
  std::map<const Layer*, int> calls;
  for (const auto& n : nodes) ++calls[n.layer.get()];

  // Pairs: producer node -> replacement layer; folded BatchNormalization nodes.
  std::map<std::size_t, LayerPtr> replacement;
  std::vector<bool> folded(nodes.size(), false);
  for (std::size_t k = 0; k < nodes.size(); ++k) {
    auto* bn = dynamic_cast<BatchNormalization*>(nodes[k].layer.get());
    if (!bn) continue;
    const int in = nodes[k].inputs.front();
    bool ok = in > 0 && calls[bn] == 1 && readers[static_cast<std::size_t>(in)] == 1 && in != model.output_tensor() &&
              bn->built();
    std::optional<Foldable> f;
    const auto p = static_cast<std::size_t>(in - 1);
    if (ok) {
      ok = calls[nodes[p].layer.get()] == 1 && !replacement.count(p);
      if (ok) f = foldable(*nodes[p].layer);
      ok = ok && f && f->kernel && bn->moving_mean()->value.numel() == f->channels;
    }
    if (ok) {
      const int rank = nodes[p].output_shape.rank();
      const int channel_axis = f->channel_axis < 0 ? rank - 1 : f->channel_axis;
      ok = bn->axes().size() == 1 && bn->axes().front() == channel_axis;
    }
    if (!ok) {
      ++rep.kept;
      continue;
    }
    const auto [kernel, bias] = folded_weights(*f, *bn);
    replacement[p] = with_bias(*nodes[p].layer, shape_of(nodes[p].inputs.front()), kernel, bias);
    folded[k] = true;
    ++rep.folded;
  }
  // Nested models, folded in turn.
  std::map<const Layer*, LayerPtr> nested;
  for (const auto& n : nodes) {
    if (const auto* m = dynamic_cast<const Model*>(n.layer.get()); m && !nested.count(m)) {
      FoldReport inner;
      nested[m] = fold_batch_norm(*m, &inner);
      rep.folded += inner.folded;
      rep.kept += inner.kept;
    }
  }
  auto layer_for = [&](std::size_t k) -> LayerPtr {
    if (const auto it = replacement.find(k); it != replacement.end()) return it->second;
    if (const auto it = nested.find(nodes[k].layer.get()); it != nested.end()) return it->second;
    return nodes[k].layer;
  };
  const Shape& input = *model.input_shape();
  const std::vector<std::int64_t> dims(input.dims().begin() + 1, input.dims().end());
  if (dynamic_cast<const Sequential*>(&model)) {
    auto out = std::make_unique<Sequential>(std::vector<LayerPtr>{}, model.name());
    out->add(std::make_shared<InputLayer>(dims, model.input_name()));
    for (std::size_t k = 0; k < nodes.size(); ++k)
      if (!folded[k]) out->add(layer_for(k));
    if (!model.trainable()) out->set_trainable(false);  // (true would unfreeze shared layers)
    out->set_nested_training(model.nested_training());
    return out;
  }
  std::vector<std::optional<SymbolicTensor>> tensors(nodes.size() + 1);
  tensors[0] = Input(dims, model.input_name());
  for (std::size_t k = 0; k < nodes.size(); ++k) {
    const auto& n = nodes[k];
    if (folded[k]) {
      tensors[k + 1] = tensors[static_cast<std::size_t>(n.inputs.front())];
      continue;
    }
    const LayerPtr layer = layer_for(k);
    if (layer->takes_input_list()) {
      std::vector<SymbolicTensor> xs;
      for (int t : n.inputs) xs.push_back(*tensors[static_cast<std::size_t>(t)]);
      tensors[k + 1] = (*layer)(xs, n.training);
    } else {
      tensors[k + 1] = (*layer)(*tensors[static_cast<std::size_t>(n.inputs.front())], n.training);
    }
  }
  auto out = std::make_unique<Model>(*tensors[0], *tensors[static_cast<std::size_t>(model.output_tensor())], model.name());
  out->set_nested_training(model.nested_training());
  if (!model.trainable()) out->set_trainable(false);
  return out;
}

}  // namespace bnorm::nn
