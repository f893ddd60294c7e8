// bnorm/nn/transfer.hpp: the Keras guide's transfer-learning model ("Transfer learning &
// fine-tuning", keras.io), shared by examples/transfer_learning_cnn.cpp and
// `bnorm train --finetune`.
//
//   base_model.trainable = False
//   inputs = keras.Input(shape=base_model.input_shape[1:])
//   x = base_model(inputs, training=False)       # its batch norms stay in inference mode
//   x = keras.layers.GlobalAveragePooling2D()(x) # when the base's output is 4-D
//   x = keras.layers.Dropout(0.2)(x)
//   outputs = keras.layers.Dense(classes, activation="softmax")(x)
//   model = keras.Model(inputs, outputs)
//
// Fine-tuning (the guide's second phase) is then base->set_trainable(true), compile with a
// small learning rate, fit: the base keeps training=False, so its batch normalization
// layers keep their moving statistics (NestedTraining::recorded_wins, the default).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "bnorm/nn/model.hpp"

namespace bnorm::nn {

struct TransferHeadOptions {
  std::int64_t classes = 2;  // Dense units (>= 1)
  double dropout = 0.2;      // Dropout rate, in [0, 1)
  std::uint64_t dropout_seed = 0;
  std::string activation = "softmax";  // of the Dense layer
  std::string head_name = "head";      // the Dense layer's name
};

// The model above around `base` (frozen here: base->set_trainable(false)). The base needs a
// declared input shape; its output must be 4-D (batch, H, W, C: channels-last pooling)
// or 2-D (batch, features: no pooling). ArgumentError naming `base` otherwise (nothing
// changed), or for classes < 1 or a dropout rate outside [0, 1).
std::shared_ptr<Model> transfer_model(const std::shared_ptr<Model>& base,
                                      const TransferHeadOptions& options = {});

}  // namespace bnorm::nn
