// Internal: Keras model configurations (the config.json of a .keras archive, the
// model_config attribute of a legacy .h5 file) to and from bnorm models.
//
// Supported: Sequential and Functional models (graphs with one input and one output,
// nested models included) of the classes docs/formats.md lists. Any other class is
// refused by name. Unknown keys are ignored and missing keys take Keras's defaults (the
// keys change between versions).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/model.hpp"

namespace bnorm::io::keras {

enum class Style {
  keras3,  // config.json of a .keras archive ("module" keys, DTypePolicy, batch_shape)
  legacy,  // model_config of a tf.keras .h5 file ("batch_input_shape", nested inbound nodes)
};

// Builds the model a {"class_name", "config"} object describes. `file` names the file in
// errors (FormatError). BatchNormalization layers follow `version`'s conventions.
std::unique_ptr<nn::Model> model_from_config(const nlohmann::json& config, const std::string& file,
                                             nn::KerasVersion version);

// The configuration Keras's model.get_config() would give, wrapped as
// {"class_name", "config"} (plus "module" etc. in keras3 style). The model's input shape
// must be known; ArgumentError otherwise or for a layer class Keras files cannot hold.
nlohmann::json model_to_config(const nn::Model& model, Style style);

// "layer 'name' (Class)": how the Keras file readers name a layer in errors.
std::string layer_label(const nn::Layer& layer);

// The name Keras files give the model's input: the Input / InputLayer name, or Keras's
// default "input_layer" when none was declared.
std::string input_layer_name(const nn::Model& model);

// Keras's snake_case of a class name ("BatchNormalization" -> "batch_normalization").
std::string snake_case(const std::string& class_name);

}  // namespace bnorm::io::keras
