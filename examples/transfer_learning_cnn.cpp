// transfer_learning_cnn: the Keras guide's transfer-learning recipe ("Transfer learning &
// fine-tuning", keras.io), in C++, on a small CNN with batch normalization:
//   base_model = keras.models.load_model(...)          # a pretrained base, from a Keras file
//   base_model.trainable = False                      # freeze it
//   inputs = keras.Input(shape=(16, 16, 3))
//   x = base_model(inputs, training=False)            # keep its BN in inference mode
//   x = keras.layers.GlobalAveragePooling2D()(x)
//   x = keras.layers.Dropout(0.2)(x)
//   outputs = keras.layers.Dense(4, activation="softmax")(x)
//   model = keras.Model(inputs, outputs)
//   model.compile(optimizer=SGD(0.1), loss="sparse_categorical_crossentropy"); model.fit(...)
//   base_model.trainable = True                       # fine-tune
//   model.compile(optimizer=SGD(0.01), ...); model.fit(...)
// What it checks: while frozen, nothing in the base changes (bit for bit) and the head
// learns; after unfreezing, the base's convolution weights move but its batch
// normalization keeps its moving statistics, because the call records training=False
// (tf.keras's rule and the guide's promise, bnorm's default). Under Keras 3's rule
// (nn::NestedTraining::outer_mode_wins), which Keras 3 really follows (CNN.md section 7),
// the same fine-tuning moves them. The "pretrained" base is trained here on synthetic data
// and round-tripped through a .keras file, as a user's would be. The model around the base
// is nn::transfer_model (bnorm/nn/transfer.hpp), which `bnorm train --finetune` uses too.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/conv.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/spatial.hpp"
#include "bnorm/nn/transfer.hpp"
#include "example_checks.hpp"

namespace nn = bnorm::nn;
namespace io = bnorm::io;
using bnorm::Shape;
using bnorm::Tensor;
using example::check;

namespace {

using A2 = std::array<std::int64_t, 2>;

// Images with a class-dependent offset in one channel, and their labels (class indices).
std::pair<Tensor, Tensor> dataset(std::int64_t n, std::uint64_t seed) {
  Tensor x = example::normal(Shape{n, 16, 16, 3}, seed);
  Tensor y(Shape{n, 1});
  for (std::int64_t i = 0; i < n; ++i) {
    const auto c = static_cast<std::int64_t>(i % 4);
    y[i] = static_cast<float>(c);
    for (std::int64_t p = 0; p < 16 * 16; ++p) x[(i * 256 + p) * 3 + (c % 3)] += 0.5f * static_cast<float>(c) + 1.0f;
  }
  return {x, y};
}

std::shared_ptr<nn::Model> pretrained_base(const std::string& file) {
  auto in = nn::Input({16, 16, 3}, "base_input");
  auto z = (*std::make_shared<nn::Conv2D>(8, A2{3, 3}, nn::Conv2DOptions{.padding = nn::Padding::same, .use_bias = false,
                                                                          .name = "base_conv1"}))(in);
  z = (*std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.name = "base_bn1"}))(z);
  z = (*std::make_shared<nn::ReLU>())(z);
  z = (*std::make_shared<nn::Conv2D>(8, A2{3, 3}, nn::Conv2DOptions{.strides = {2, 2}, .padding = nn::Padding::same,
                                                                     .use_bias = false, .name = "base_conv2"}))(z);
  z = (*std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.name = "base_bn2"}))(z);
  z = (*std::make_shared<nn::ReLU>())(z);
  nn::Model base(in, z, "base");
  // "Pretraining": the base with a temporary head, a few epochs.
  auto x = nn::Input({16, 16, 3});
  auto h = (*std::make_shared<nn::GlobalAveragePooling2D>())(z);
  nn::Model pre(in, (*std::make_shared<nn::Dense>(4, nn::DenseOptions{.activation = "softmax"}))(h), "pretraining");
  pre.compile("adam", "sparse_categorical_crossentropy");
  const auto [px, py] = dataset(64, 7);
  pre.fit(px, py, {.batch_size = 16, .epochs = 3, .verbose = 0});
  io::save_model(base, file);  // the pretrained base, as a Keras file
  return std::shared_ptr<nn::Model>(io::load_model(file));
}

Tensor value(nn::Model& base, const std::string& layer, const std::string& var) {
  for (nn::Variable* v : base.get_layer(layer)->weights())
    if (v->name == var) return v->value;
  return Tensor();
}

bool same(const Tensor& a, const Tensor& b) { return a.vector() == b.vector(); }

}  // namespace

int main() try {
  const std::string file = (std::filesystem::temp_directory_path() / "bnorm_example_base.keras").string();
  for (const auto rule : {nn::NestedTraining::recorded_wins, nn::NestedTraining::outer_mode_wins}) {
    const bool keras3 = rule == nn::NestedTraining::outer_mode_wins;
    std::printf("%s\n", keras3 ? "Keras 3's rule (outer mode wins):" : "tf.keras's rule and the guide's (bnorm's default):");
    auto base = pretrained_base(file);
    // Frozen base called with training=False, GlobalAveragePooling2D, Dropout(0.2), Dense(4, softmax).
    auto transfer = nn::transfer_model(base, {.classes = 4, .dropout_seed = 1});
    nn::Model& model = *transfer;
    model.set_nested_training(rule);
    const auto [xs, ys] = dataset(96, 11);
    const Tensor mean0 = value(*base, "base_bn1", "moving_mean"), kernel0 = value(*base, "base_conv1", "kernel");
    const Tensor head0 = model.get_layer("head")->weights()[0]->value;

    model.compile(std::make_shared<nn::SGD>(nn::SGDOptions{.learning_rate = 0.1}), "sparse_categorical_crossentropy");
    model.fit(xs, ys, {.batch_size = 16, .epochs = 2, .verbose = 0});
    check(same(value(*base, "base_bn1", "moving_mean"), mean0) && same(value(*base, "base_conv1", "kernel"), kernel0),
          "frozen phase: the base (weights and moving statistics) unchanged, bit for bit");
    check(!same(model.get_layer("head")->weights()[0]->value, head0), "frozen phase: the new head learned");

    base->set_trainable(true);
    model.compile(std::make_shared<nn::SGD>(nn::SGDOptions{.learning_rate = 0.01}), "sparse_categorical_crossentropy");
    model.fit(xs, ys, {.batch_size = 16, .epochs = 1, .verbose = 0});
    check(!same(value(*base, "base_conv1", "kernel"), kernel0), "fine-tuning: the base's convolutions moved");
    const bool stats_moved = !same(value(*base, "base_bn1", "moving_mean"), mean0);
    check(stats_moved == keras3, keras3 ? "fine-tuning under Keras 3's rule: the base's moving statistics moved"
                                        : "fine-tuning: base(x, training=False) kept its moving statistics");
    const auto logs = model.evaluate(xs, ys, 32);
    std::printf("  loss after fine-tuning: %.4f\n", logs.at("loss"));
  }
  std::filesystem::remove(file);
  return example::verdict();
} catch (const std::exception& e) {
  std::fprintf(stderr, "transfer_learning_cnn: %s\n", e.what());
  return 1;
}
