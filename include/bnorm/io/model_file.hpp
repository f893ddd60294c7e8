// bnorm/io/model_file.hpp: Keras's model and weights files, by the Keras names.
//
//   Python                                  C++
//   model.save("m.keras")                   io::save_model(model, "m.keras");
//   model.save("m.h5")                      io::save_model(model, "m.h5");         // legacy tf.keras
//   keras.models.load_model("m.keras")      auto model = io::load_model("m.keras");
//   model.save_weights("w.weights.h5")      io::save_weights(model, "w.weights.h5");
//   model.load_weights("w.weights.h5")      io::load_weights(model, "w.weights.h5");
//   model.load_weights("my_weights.h5")     io::load_weights(model, "my_weights.h5"); // legacy
//
// The format is chosen from the file's contents when reading (a zip archive is .keras,
// HDF5 with a "layer_names" attribute is legacy tf.keras, HDF5 with a "layers" group is
// Keras 3, "BNRMCKPT"/"BNRMWTS" is bnorm's native checkpoint), and from the suffix when
// writing (.keras, .weights.h5, .h5). Formats: ../../../docs/formats.md.
//
// Errors (bnorm::Error, io/error.hpp): FileError when the file cannot be opened or
// written; FormatError naming the file, the layer and the variable when its contents do
// not match (truncated, wrong shape, missing or extra variable, wrong dtype, unsupported
// layer class). Loading validates everything before assigning: after an error the model
// is unchanged. Writing is atomic (a temporary file renamed over the target).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "bnorm/io/error.hpp"
#include "bnorm/nn/model.hpp"

namespace bnorm::io {

// Keras keras.models.load_model: builds the model from the file's configuration
// (.keras config.json, or a legacy .h5's model_config attribute) and loads its weights.
// A layer class bnorm does not support is refused by name.
//
// compile = true (Keras's default): when the file says how the model was compiled
// (.keras compile_config, legacy training_config) with an optimizer bnorm has (SGD, Adam,
// RMSprop with a constant learning rate) and a loss it has, the model comes back compiled
// with them, and the optimizer's state (iterations, learning rate, slots) is restored
// from the file when the file holds it for exactly these trainable variables: fit then
// continues Keras's training where it stopped. Anything else leaves the model
// uncompiled, as Keras does when it cannot compile (it warns; bnorm's caller compiles).
//
// nested_training: the rule for a training argument recorded on a call in the file
// (`base(x, training=False)`; nn::NestedTraining). Whatever wrote the file, bnorm honours
// it by default (recorded_wins: tf.keras and the Keras guide); outer_mode_wins reproduces
// Keras 3's fit. When `notes` is given and the file is Keras 3's with such a call, a
// sentence saying that the two rules differ there is appended to it.
struct LoadModelOptions {
  bool compile = true;
  nn::NestedTraining nested_training = nn::NestedTraining::recorded_wins;
  std::vector<std::string>* notes = nullptr;
};
std::unique_ptr<nn::Model> load_model(const std::string& path, const LoadModelOptions& options = {});

// Keras model.save: ".keras" (Keras 3 archive) or ".h5" (legacy tf.keras full model).
void save_model(nn::Model& model, const std::string& path);

// Keras model.load_weights / save_weights: ".weights.h5" (Keras 3), ".h5" (legacy
// tf.keras weights), ".keras" (weights of an archive), or a bnorm native checkpoint.
void load_weights(nn::Model& model, const std::string& path);
void save_weights(nn::Model& model, const std::string& path);

// The optimizer's iteration count (training steps) a Keras file recorded: Keras 3's
// optimizer/vars/0 in a .keras or .weights.h5 file, tf.keras's "iteration:0" (or
// "iterations:0") optimizer weight in a full-model .h5 file; nullopt when the file has
// none (weights-only legacy files, files bnorm wrote). `bnorm inspect` uses it to
// estimate how many updates the moving statistics have had. Errors as load_model.
std::optional<std::int64_t> saved_optimizer_iterations(const std::string& path);

// The same from the file's bytes in memory (`name` stands for the file in errors): what
// the readers do after reading the file, and what the fuzz targets drive.
std::unique_ptr<nn::Model> load_model_bytes(const std::string& bytes, const std::string& name,
                                            const LoadModelOptions& options = {});
void load_weights_bytes(nn::Model& model, const std::string& bytes, const std::string& name);

}  // namespace bnorm::io
