// bnorm/nn/model.hpp: Keras models: the functional API (Input -> layers -> outputs),
// Sequential, compile / fit / evaluate / predict / train_on_batch, and calls with an
// explicit training argument.
//
//   Python                                         C++
//   z = inp = tf.keras.layers.Input([5])           auto inp = nn::Input({5}); auto z = inp;
//   z = bn(z)                                      z = (*bn)(z);     // bn: std::shared_ptr<nn::BatchNormalization>
//   model = tf.keras.Model(inputs=inp, outputs=z)  nn::Model model(inp, z);
//   model.compile(optimizer="adam", loss="mse")    model.compile("adam", "mse");
//   model.fit(x, y, batch_size=3, epochs=10)       model.fit(x, y, {.batch_size = 3, .epochs = 10});
//   model.predict(x)                               model.predict(x);
//   model(x) / model(x, training=True)             model(x) / model(x, true);
//   model.get_layer("bn").moving_mean              model.get_layer<nn::BatchNormalization>("bn")->moving_mean()
//
// Modes: fit / train_on_batch call the layers with training = true; evaluate, predict
// and a call without a training argument use inference (batch normalization then uses
// its moving statistics and changes nothing). A frozen layer (trainable false) runs in
// inference mode even inside fit and its weights are not updated.
//
// Graphs: a functional model is the directed acyclic graph of layer calls from its input
// to its output: branches, layers with a list of inputs (Add, Concatenate, ...), a tensor
// used by several layers, a layer called more than once (shared weights), and models
// used as layers (nested; Keras `x = base(inputs, training=False)`). Calls run in Keras's
// order (by depth from the output) and an intermediate tensor is freed once its last user
// has run. One input tensor and one output tensor per model.
//
// A training argument recorded on a call (`(*base)(x, false)`) is honoured by default,
// whatever mode the model is called in: tf.keras's rule and the Keras guide's
// transfer-learning recipe. Keras 3 instead lets the outer mode replace it
// (NestedTraining::outer_mode_wins; ../shared/spec/CNN.md section 7).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/core/tensor.hpp"
#include "bnorm/nn/callbacks.hpp"
#include "bnorm/nn/communicator.hpp"
#include "bnorm/nn/layer.hpp"
#include "bnorm/nn/losses.hpp"
#include "bnorm/nn/metrics.hpp"
#include "bnorm/nn/optimizers.hpp"
#include "bnorm/nn/tape.hpp"

namespace bnorm::nn {

// A symbolic tensor of the functional API: the output of Input() or of a layer applied to
// another symbolic tensor.
class SymbolicTensor {
 public:
  // Shape with batch dimension -1.
  const Shape& shape() const;

 private:
  friend class Layer;
  friend class Model;
  friend SymbolicTensor Input(std::vector<std::int64_t>, std::string);
  struct Node {
    std::shared_ptr<Layer> layer;  // null for an Input
    std::vector<std::shared_ptr<const Node>> inputs;
    std::optional<bool> training;  // a training argument recorded on the call
    Shape shape;
    std::string name;
  };
  explicit SymbolicTensor(std::shared_ptr<const Node> node) : node_(std::move(node)) {}
  std::shared_ptr<const Node> node_;
};

// Keras Input(shape): shape without the batch dimension.
SymbolicTensor Input(std::vector<std::int64_t> shape, std::string name = "");

struct FitOptions {
  std::int64_t batch_size = 32;
  int epochs = 1;         // Keras: the index of the last epoch + 1, not a count
  // Keras initial_epoch: the epoch to start from (resuming a run). Epochs initial_epoch
  // .. epochs-1 run, numbered as in the uninterrupted run (callbacks see those indices),
  // and the shuffle order is the one the uninterrupted run would use: the orders of the
  // epochs before initial_epoch are replayed (they depend only on seed and the sample
  // count). With a checkpoint (io/checkpoint.hpp) of the state after epoch k, a fresh
  // model resumed with initial_epoch = k continues bit for bit.
  int initial_epoch = 0;
  int verbose = 1;        // 0 silent, 1 progress bar, 2 one line per epoch
  bool shuffle = true;    // reshuffle the training samples every epoch (seeded)
  std::uint64_t seed = 0;
  double validation_split = 0.0;  // the LAST fraction of the samples, taken before shuffling
  std::optional<std::pair<Tensor, Tensor>> validation_data{};
  std::vector<std::shared_ptr<Callback>> callbacks{};
  // Data-parallel training (docs/distributed.md): with a communicator of size P > 1 every
  // rank calls fit with the same x, y and options. fit first gives every rank rank 0's
  // weights; each batch (the same shuffled batch on every rank) is split by rows, rank r
  // taking rows [B r / P, B (r + 1) / P) (any B: uneven or empty shards); the gradients
  // of each rank's share of the batch's mean loss are summed over the ranks, so every rank
  // applies the full-batch gradient and the replicas stay equal; batch normalization
  // layers synchronize their statistics (all of them, or with sync_all_batch_norm false
  // only those with synchronized = true, Keras's rule). The logged loss is the batch's;
  // metrics are those of each rank's own shards. Ranks other than 0 show no progress bar
  // (verbose 0); callbacks run on every rank. Null or size 1: the single-process fit.
  std::shared_ptr<Communicator> communicator{};
  bool sync_all_batch_norm = true;
};

// How a training argument recorded on a call inside a model meets the mode the model is
// called in.
enum class NestedTraining {
  recorded_wins,    // tf.keras 2 and the Keras guide: `base(x, training=False)` stays in inference
  outer_mode_wins,  // Keras 3: the outer call's mode replaces every recorded one
};

// A model is a Layer too: it can be used inside another model (nested), with its own
// layers, weights and graph.
class Model : public Layer {
 public:
  // Functional model from `inputs` to `outputs`. ArgumentError when outputs does not
  // derive from inputs (a dangling input).
  Model(const SymbolicTensor& inputs, const SymbolicTensor& outputs, std::string name = "");
  ~Model() override = default;
  Model(const Model&) = delete;  // layers are shared: copy with get_weights/set_weights
  Model& operator=(const Model&) = delete;
  Model(Model&&) = default;
  Model& operator=(Model&&) = default;

  // One layer call of the graph. Tensors are numbered: 0 is the model's input, k + 1 the
  // output of nodes()[k].
  struct Node {
    LayerPtr layer;
    std::vector<int> inputs;       // tensor numbers, in the call's argument order
    std::optional<bool> training;  // recorded training argument
    Shape output_shape;            // batch dimension -1
  };
  // The calls in execution order (a Sequential: its layers in order).
  const std::vector<Node>& nodes() const noexcept { return nodes_; }
  // The tensor number of the model's output.
  int output_tensor() const noexcept { return output_; }

  // Layer interface (a model used as a layer of another model).
  std::string class_name() const override { return "Functional"; }
  const std::string& name() const noexcept override { return name_; }
  bool built() const noexcept override { return true; }
  void build(const Shape& input_shape) override;
  Shape compute_output_shape(const Shape& input_shape) const override;
  Tensor forward(const Tensor& x, bool training, std::unique_ptr<LayerContext>* context, UpdateSink* updates) override;
  Tensor backward(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  void backward_variables(const LayerContext& context, const Tensor& dy, Gradients& grads) override;
  using Layer::operator();

  // The rule for recorded training arguments (see NestedTraining); applies to nested
  // models too (set here, it is set on them).
  NestedTraining nested_training() const noexcept { return nested_training_; }
  void set_nested_training(NestedTraining rule);
  // True when some call in this model or a nested one records a training argument that
  // the outer mode could contradict (the two rules then differ).
  bool has_recorded_training() const;

  // Fused batch norm + ReLU. A BatchNormalization call whose output is read by exactly
  // one call, of a ReLU (Activation('relu'), or a ReLU layer with default arguments), and
  // is not the model's output, runs with that ReLU as one call
  // (BatchNormalization::forward_relu: the fused kernels in training, the same results bit
  // for bit as the two calls; one tensor and one pass over the data less). Not with
  // renorm or virtual_batch_size, nor when layer_input() stops between the two. The pairs
  // of this model's own graph (nested models have theirs), as indices into nodes():
  // {batch normalization call, ReLU call}; empty when fusion is off.
  std::vector<std::pair<std::size_t, std::size_t>> fused_pairs() const;
  // On by default; set here, it is set on nested models too.
  bool fuse_batch_norm_relu() const noexcept { return fuse_batch_norm_relu_; }
  void set_fuse_batch_norm_relu(bool on);

  const std::vector<LayerPtr>& layers() const noexcept { return layers_; }
  // The declared input shape (batch dimension -1): a functional model's Input, a
  // Sequential's InputLayer or first layer's input_shape; nullopt when not declared.
  const std::optional<Shape>& input_shape() const noexcept { return input_shape_; }
  // The name of the Input / InputLayer that declared the input shape; empty when none did.
  const std::string& input_name() const noexcept { return input_name_; }
  // Keras get_layer(name): ArgumentError naming the layer when absent (or of another type).
  LayerPtr get_layer(const std::string& name) const;
  template <typename L>
  std::shared_ptr<L> get_layer(const std::string& name) const;

  // Keras model.trainable: propagates to every layer.
  bool trainable() const noexcept override { return trainable_; }
  void set_trainable(bool trainable) override;

  // Keras model(x, training=...): unset means inference.
  Tensor operator()(const Tensor& x, std::optional<bool> training = std::nullopt) {
    return call(x, training.value_or(false));
  }
  // A forward call with an explicit mode. With `tape`, every layer call is recorded for
  // GradientTape::gradient. With `updates` (and training), batch normalization layers
  // record their statistic updates there instead of applying them.
  Tensor call(const Tensor& x, bool training, GradientTape* tape = nullptr, UpdateSink* updates = nullptr);
  // The input that layers()[index] receives (at its first call) when the model is called
  // on x in inference mode (x itself for the first layer, the model's output for
  // index == layers().size()). Keras: keras.Model(model.input, model.layers[index].input)(x).
  // x is checked as by call(); ArgumentError for index > layers().size() or a layer that
  // takes a list of inputs.
  Tensor layer_input(const Tensor& x, std::size_t index);
  // The same for a layer inside nested models: path = {index in layers(), index in that
  // nested model's layers(), ...}. ArgumentError when an index on the path is not a
  // nested model (or out of range).
  Tensor layer_input(const Tensor& x, const std::vector<std::size_t>& path);
  // Every layer of this model and of the models nested in it, depth first, each once, with
  // its path (as layer_input takes it); nested models are listed before their layers
  // (Keras's model._flatten_layers()).
  std::vector<std::pair<std::vector<std::size_t>, LayerPtr>> flattened_layers() const;

  // Variables, layer by layer, each layer in Keras order.
  std::vector<Variable*> weights() override;
  using Layer::weights;
  std::vector<Variable*> trainable_weights() override;
  std::vector<Variable*> non_trainable_weights() override;
  std::vector<Tensor> get_weights();
  void set_weights(const std::vector<Tensor>& weights);  // validates all first
  // Regularization losses of all layers (Keras model.losses).
  std::vector<float> losses() const override;
  // Keras summary(): a table of layers, output shapes and parameter counts.
  std::string summary() const;

  // Keras compile. Metric names: "accuracy"/"acc" (resolved from the loss as Keras does),
  // "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy".
  void compile(std::shared_ptr<Optimizer> optimizer, std::shared_ptr<Loss> loss,
               std::vector<std::string> metrics = {});
  void compile(const std::string& optimizer, const std::string& loss, std::vector<std::string> metrics = {});
  void compile(const std::string& optimizer, std::shared_ptr<Loss> loss, std::vector<std::string> metrics = {});
  void compile(std::shared_ptr<Optimizer> optimizer, const std::string& loss, std::vector<std::string> metrics = {});
  bool compiled() const noexcept { return optimizer_ != nullptr; }
  Optimizer* optimizer() noexcept { return optimizer_.get(); }
  const Optimizer* optimizer() const noexcept { return optimizer_.get(); }
  // What compile() was given (null / empty before compile).
  const Loss* loss() const noexcept { return loss_.get(); }
  const std::vector<std::string>& metric_names() const noexcept { return metric_names_; }

  // Keras fit. Returns the History (also passed to the callbacks).
  std::shared_ptr<History> fit(const Tensor& x, const Tensor& y, FitOptions options = {});
  // Keras evaluate: loss and metrics over x in inference mode, batch-size weighted.
  Logs evaluate(const Tensor& x, const Tensor& y, std::int64_t batch_size = 32, int verbose = 0);
  // Keras predict: outputs in inference mode, batched. The batch size changes memory and
  // speed, and the outputs only within the float rounding of the Dense matrix products
  // (OpenBLAS picks its kernels per row count; as in Keras and PyTorch).
  Tensor predict(const Tensor& x, std::int64_t batch_size = 32, int verbose = 0);
  // One training step on one batch; returns the logs of that batch.
  Logs train_on_batch(const Tensor& x, const Tensor& y);

  // Set by a callback to end fit after the current epoch (Keras model.stop_training).
  bool stop_training = false;

  // The training position: epochs completed by fit, in fit's epoch numbering (set after
  // each epoch's steps, before the callbacks' on_epoch_end, so a checkpoint saved there
  // counts that epoch). Kept in checkpoints; pass it back as FitOptions::initial_epoch.
  int epochs_completed() const noexcept { return epochs_completed_; }
  // ArgumentError when negative.
  void set_epochs_completed(int epochs);

 protected:
  explicit Model(std::string name) : name_(std::move(name)) {}
  // Sequential: appends a call of `layer` on the current output.
  void add_layer(LayerPtr layer, Shape output_shape);
  std::vector<Node>& nodes_mutable() noexcept { return nodes_; }
  // The input shape (batch dimension -1) when known: a functional model's Input, a
  // Sequential's InputLayer or first layer's input_shape. Inputs are checked against it.
  std::optional<Shape> input_shape_;
  std::string input_name_;

 private:
  void require_compiled(const char* what) const;
  // ShapeError unless x fits input_shape_ (when declared).
  void check_input(const Tensor& x) const;
  Logs train_step(const Tensor& x, const Tensor& y, std::int64_t step_size);
  // A data-parallel step on this rank's shard of a batch of batch_rows rows (data_parallel.cpp).
  Logs train_step_sharded(const Tensor& x, const Tensor& y, std::int64_t batch_rows, Communicator& comm);
  std::vector<std::unique_ptr<MeanMetricWrapper>>& metrics_for(const Tensor& y_pred);

  // Runs the graph up to (not including) node `stop` (all: nodes_.size()); returns the
  // output, or the input of node `stop`.
  Tensor run(const Tensor& x, bool training, GradientTape* tape, UpdateSink* updates, std::size_t stop);
  void compute_last_uses();
  // fit's warning under NestedTraining::outer_mode_wins (model.cpp).
  void warn_overridden_training(const std::string& fitted) const;

  std::string name_;
  std::vector<LayerPtr> layers_;
  std::vector<Node> nodes_;
  std::vector<std::size_t> last_use_;  // tensor -> index of the last node reading it
  std::vector<int> fused_relu_;        // node -> the ReLU node fused into it, or -1
  std::vector<bool> fused_away_;       // node -> a ReLU run by the node before it in a pair
  bool fuse_batch_norm_relu_ = true;
  int output_ = 0;
  NestedTraining nested_training_ = NestedTraining::recorded_wins;
  bool trainable_ = true;
  int epochs_completed_ = 0;
  std::shared_ptr<Optimizer> optimizer_;
  std::shared_ptr<Loss> loss_;
  std::vector<std::string> metric_names_;
  std::vector<std::unique_ptr<MeanMetricWrapper>> metrics_;  // created from the first batch's shapes
};

// Keras Sequential: the layers in order.
class Sequential : public Model {
 public:
  explicit Sequential(std::vector<LayerPtr> layers = {}, std::string name = "");
  std::string class_name() const override { return "Sequential"; }
  // Appends a layer. An InputLayer (or a first Dense with input_shape) declares the
  // input shape; once it is known, layers are built as they are added (Keras builds a
  // Sequential with a known input immediately).
  void add(LayerPtr layer);
  // Builds every layer for this input shape (batch dimension -1), as Keras build().
  void build(const Shape& input_shape) override;
};

template <typename L>
std::shared_ptr<L> Model::get_layer(const std::string& name) const {
  auto typed = std::dynamic_pointer_cast<L>(get_layer(name));
  if (!typed) throw ArgumentError("Model '" + name_ + "'", "get_layer", "a layer '" + name + "' of the requested type",
                                  "a layer of class " + get_layer(name)->class_name());
  return typed;
}

}  // namespace bnorm::nn
