// bnorm/nn/layer.hpp: the interface every layer implements, so models, the gradient
// tape and optimizers can treat them alike.
//
// A layer owns its state (Variables). A forward call takes the mode explicitly
// (`training`), returns its output and, when asked, a context with what its backward
// call needs. backward() returns dx and ACCUMULATES the gradient of every variable into
// a Gradients map (so a layer called twice, or shared, sums its contributions).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bnorm/core/tensor.hpp"
#include "bnorm/nn/variable.hpp"

namespace bnorm::nn {

// Gradients of the loss with respect to variables, accumulated by backward calls.
using Gradients = std::map<const Variable*, Tensor>;

// Adds g into grads[v] (creating it on first use).
void accumulate(Gradients& grads, const Variable* v, const Tensor& g);

// What a layer's forward call leaves for its backward call; each layer derives its own.
struct LayerContext {
  virtual ~LayerContext() = default;
};

// Receives moving-statistic updates in "collected" mode (TF1 UPDATE_OPS); see
// nn/updates.hpp. Layers without statistics never use it.
class UpdateSink;

class SymbolicTensor;

class Layer : public std::enable_shared_from_this<Layer> {
 public:
  virtual ~Layer() = default;

  // Keras class name: "Dense", "BatchNormalization", ...
  virtual std::string class_name() const = 0;
  virtual const std::string& name() const = 0;

  // Keras `trainable`: a frozen layer exposes no trainable weights (and a frozen
  // BatchNormalization runs in inference mode).
  virtual bool trainable() const = 0;
  virtual void set_trainable(bool trainable) = 0;

  // Creates the weights for inputs of this shape (dimension 0, the batch, is -1).
  virtual void build(const Shape& input_shape) = 0;
  virtual bool built() const = 0;
  // Output shape for an input shape (batch dimension -1 passes through).
  virtual Shape compute_output_shape(const Shape& input_shape) const = 0;

  // Forward in the given mode; when `context` is not null it receives what backward
  // needs. Builds the layer on its first call. `updates` (nullable): collected mode, the
  // layer records its statistic updates there instead of applying them.
  virtual Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context,
                         UpdateSink* updates) = 0;
  // dL/dx for the forward call recorded in `context`, given dL/dy; ACCUMULATES dL/dv of
  // this layer's variables into `grads`.
  virtual Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) = 0;
  // backward() when dL/dx is not needed (the first layer with weights of a training
  // step): only the variables' gradients are accumulated, the same values. The default
  // calls backward() and drops dx; layers whose dx costs real work (Dense) skip it.
  virtual void backward_variables(const LayerContext& context, const Tensor& dy, Gradients& grads);

  // Layers with a LIST of inputs (merge layers: Add, Concatenate, ...; nested models)
  // override these four; for every other layer they are the single-input calls above on
  // a list of exactly one input (ArgumentError for another count). backward_inputs
  // returns dL/dx for each input, in order, and accumulates into `grads` as backward().
  virtual bool takes_input_list() const noexcept { return false; }
  virtual void build_inputs(const std::vector<Shape>& input_shapes);
  virtual Shape compute_output_shape_inputs(const std::vector<Shape>& input_shapes) const;
  virtual Tensor forward_inputs(const std::vector<const Tensor*>& xs, bool training,
                                std::unique_ptr<LayerContext>* context, UpdateSink* updates);
  virtual std::vector<Tensor> backward_inputs(const LayerContext& context, const Tensor& dy, Gradients& grads);

  // Functional API: applying a layer to a symbolic input adds it to the graph
  // (Keras `z = layer(z)`; here `z = (*layer)(z)`). The layer must be owned by a
  // std::shared_ptr. `training` records a call argument (Keras `base(x, training=False)`):
  // that node then runs in that mode whatever the model is called with (tf.keras's
  // rule; Model::NestedTraining selects Keras 3's, where the outer mode wins).
  SymbolicTensor operator()(const SymbolicTensor& x, std::optional<bool> training = std::nullopt);
  // A layer with a list of inputs: z = (*add)({a, b}).
  SymbolicTensor operator()(const std::vector<SymbolicTensor>& xs, std::optional<bool> training = std::nullopt);

  // All variables in Keras order (empty before build).
  virtual std::vector<Variable*> weights() = 0;
  std::vector<const Variable*> weights() const;
  // Keras: a frozen layer has no trainable weights; otherwise those marked trainable.
  // (Virtual: a nested model answers for its own layers.)
  virtual std::vector<Variable*> trainable_weights();
  virtual std::vector<Variable*> non_trainable_weights();
  std::vector<Tensor> get_weights() const;
  // Same count and shapes as get_weights() (else ShapeError, nothing assigned).
  void set_weights(const std::vector<Tensor>& weights);

  // Regularization penalties of trainable weights (Keras layer.losses), and their
  // gradients accumulated into grads.
  virtual std::vector<float> losses() const;
  void add_regularization_gradients(Gradients& grads);
  // Applies the variables' constraints (what an optimizer does after its update).
  void apply_constraints();

 protected:
  // "Dense 'dense_1'": the prefix of this layer's error messages.
  std::string where() const { return class_name() + " '" + name() + "'"; }
};

using LayerPtr = std::shared_ptr<Layer>;

}  // namespace bnorm::nn
