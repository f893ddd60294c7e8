#include "keras_config.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <map>
#include <optional>
#include <regex>

#include "bnorm/core/text.hpp"
#include "bnorm/io/error.hpp"
#include "bnorm/kernels/activation.hpp"
#include "bnorm/nn/conv.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/merge.hpp"
#include "bnorm/nn/spatial.hpp"

namespace bnorm::io::keras {

using nlohmann::json;

namespace {



// ------------------------------------------------------------------ reading

struct Reading {
  const std::string& file;
  nn::KerasVersion version;

  [[noreturn]] void fail(const std::string& where, const std::string& expected, const std::string& received) const {
    throw FormatError(file, where, expected, received);
  }
};

// A JSON value of the file as a message shows it: its text escaped and cut (core/text.hpp),
// never the raw dump of a whole node.
std::string shown(const json& j) {
  return printable_quoted(j.dump());
}

std::string kind_of(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "the string " + shown(j);
    case json::value_t::array: return "a list";
    case json::value_t::object: return "an object";
    default: return "the number " + printable(j.dump());
  }
}

// "layer 'dense' (Dense)", from a layer entry's name and class (both from the file).
std::string entry_label(const std::string& name, const std::string& cls) {
  return "layer " + printable_quoted(name) + " (" + printable(cls) + ")";
}

// A key of a layer's config, with a default when missing or null.
template <typename T>
T get(const Reading& r, const json& config, const std::string& where, const char* key, T fallback) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    r.fail(where + " config \"" + key + "\"", "a value of the right type", kind_of(*it));
  }
}

// Shapes: [null, 10] -> {-1, 10}.
std::vector<std::int64_t> shape_of(const Reading& r, const json& j, const std::string& where) {
  if (!j.is_array() || j.size() > 9) r.fail(where, "a shape (a list of sizes)", kind_of(j));
  std::vector<std::int64_t> out;
  for (const json& d : j) {
    if (d.is_null()) {
      out.push_back(-1);
    } else if (d.is_number_integer() && d.get<std::int64_t>() >= 0 && d.get<std::int64_t>() < (std::int64_t{1} << 40)) {
      out.push_back(d.get<std::int64_t>());
    } else {
      r.fail(where, "sizes >= 0 or null", kind_of(d));
    }
  }
  return out;
}

// The object a (possibly wrapped) serialized Keras object names: "relu",
// {"class_name": "L2", "config": {...}}, {"module": ..., "class_name": "function",
// "config": "relu"}.
std::string activation_of(const Reading& r, const json& j, const std::string& where) {
  if (j.is_null()) return "linear";
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("config") && j["config"].is_string()) return j["config"].get<std::string>();
  r.fail(where, "an activation name", kind_of(j));
}

kernels::Activation activation_value(const Reading& r, const json& j, const std::string& where) {
  const std::string name = activation_of(r, j, where);
  try {
    return kernels::activation_from_name(name, r.version == nn::KerasVersion::keras2 ? kernels::ActivationVersion::keras2
                                                                                    : kernels::ActivationVersion::keras3);
  } catch (const Error& e) {
    r.fail(where, "an activation bnorm supports", printable_quoted(name));
  }
}

std::optional<std::uint64_t> seed_of(const json& config) {
  const auto it = config.find("seed");
  if (it == config.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<std::uint64_t>();
}

nn::Initializer initializer_of(const Reading& r, const json& j, const std::string& where, nn::Initializer fallback) {
  if (j.is_null()) return fallback;
  if (j.is_string()) {
    try {
      return nn::Initializer::from_name(j.get<std::string>());
    } catch (const Error&) {
      r.fail(where, "a supported initializer", kind_of(j));
    }
  }
  if (!j.is_object() || !j.contains("class_name") || !j["class_name"].is_string()) {
    r.fail(where, "an initializer", kind_of(j));
  }
  const std::string cls = j["class_name"].get<std::string>();
  const json config = j.contains("config") && j["config"].is_object() ? j["config"] : json::object();
  const std::uint64_t seed = seed_of(config).value_or(0);
  auto num = [&](const char* key, double fallback_value) {
    return static_cast<float>(get<double>(r, config, where, key, fallback_value));
  };
  if (cls == "Zeros") return nn::Initializer::zeros();
  if (cls == "Ones") return nn::Initializer::ones();
  if (cls == "Constant") return nn::Initializer::constant(num("value", 0.0));
  if (cls == "RandomNormal") return nn::Initializer::random_normal(num("mean", 0.0), num("stddev", 0.05), seed);
  if (cls == "RandomUniform") return nn::Initializer::random_uniform(num("minval", -0.05), num("maxval", 0.05), seed);
  if (cls == "GlorotUniform") return nn::Initializer::glorot_uniform(seed);
  // Another initializer only matters for training from scratch: the file's weights
  // replace what it would draw. Keep bnorm's default rather than refusing the model.
  return fallback;
}

nn::Regularizer regularizer_of(const Reading& r, const json& j, const std::string& where) {
  if (j.is_null()) return {};
  if (!j.is_object() || !j.contains("class_name") || !j["class_name"].is_string()) r.fail(where, "a regularizer", kind_of(j));
  const std::string cls = j["class_name"].get<std::string>();
  const json config = j.contains("config") && j["config"].is_object() ? j["config"] : json::object();
  const auto l1 = static_cast<float>(get<double>(r, config, where, "l1", 0.0));
  const auto l2 = static_cast<float>(get<double>(r, config, where, "l2", 0.0));
  if (cls == "L1") return nn::Regularizer::l1(l1);
  if (cls == "L2") return nn::Regularizer::l2(l2);
  if (cls == "L1L2") return nn::Regularizer::l1_l2(l1, l2);
  r.fail(where, "a regularizer L1, L2 or L1L2", printable_quoted(cls));
}

nn::Constraint constraint_of(const Reading& r, const json& j, const std::string& where) {
  if (j.is_null()) return {};
  if (!j.is_object() || !j.contains("class_name") || !j["class_name"].is_string()) r.fail(where, "a constraint", kind_of(j));
  const std::string cls = j["class_name"].get<std::string>();
  const json config = j.contains("config") && j["config"].is_object() ? j["config"] : json::object();
  auto num = [&](const char* key, double fallback) { return static_cast<float>(get<double>(r, config, where, key, fallback)); };
  if (cls == "NonNeg") return nn::Constraint::non_neg();
  if (cls == "UnitNorm") return nn::Constraint::unit_norm();
  if (cls == "MaxNorm") return nn::Constraint::max_norm(num("max_value", 2.0));
  if (cls == "MinMaxNorm") return nn::Constraint::min_max_norm(num("min_value", 0.0), num("max_value", 1.0), num("rate", 1.0));
  r.fail(where, "a constraint NonNeg, UnitNorm, MaxNorm or MinMaxNorm", printable_quoted(cls));
}

// Keras's int-or-list settings: 3 -> {3, 3}; [3, 1] -> {3, 1}.
template <std::size_t N>
std::array<std::int64_t, N> ints_of(const Reading& r, const json& config, const std::string& where, const char* key,
                                    std::int64_t fallback) {
  std::array<std::int64_t, N> out;
  out.fill(fallback);
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return out;
  if (it->is_number_integer()) {
    out.fill(it->get<std::int64_t>());
  } else if (it->is_array() && it->size() == N && std::all_of(it->begin(), it->end(), [](const json& v) { return v.is_number_integer(); })) {
    for (std::size_t i = 0; i < N; ++i) out[i] = (*it)[i].get<std::int64_t>();
  } else {
    r.fail(where + " config \"" + key + "\"", "an integer or a list of " + std::to_string(N), kind_of(*it));
  }
  for (auto v : out)
    if (v <= 0 || v > (std::int64_t{1} << 20)) r.fail(where + " config \"" + key + "\"", "positive sizes", shown(*it));
  return out;
}

nn::DataFormat data_format_of(const Reading& r, const json& config, const std::string& where) {
  const std::string f = get<std::string>(r, config, where, "data_format", "channels_last");
  try {
    return nn::data_format_from_name(f);
  } catch (const Error&) {
    r.fail(where + " config \"data_format\"", "channels_last or channels_first", printable_quoted(f));
  }
}

nn::Padding padding_of(const Reading& r, const json& config, const std::string& where) {
  const std::string p = get<std::string>(r, config, where, "padding", "valid");
  try {
    return nn::padding_from_name(p);
  } catch (const Error&) {
    r.fail(where + " config \"padding\"", "valid, same or causal", printable_quoted(p));
  }
}

std::vector<std::int64_t> declared_input_shape(const Reading& r, const json& config, const std::string& where) {
  if (config.contains("batch_input_shape") && config["batch_input_shape"].is_array()) {
    auto s = shape_of(r, config["batch_input_shape"], where + " batch_input_shape");
    if (!s.empty()) return {s.begin() + 1, s.end()};
  }
  return {};
}

nn::LayerPtr conv_from_config(const Reading& r, const std::string& cls, const json& config, const std::string& where,
                              const std::string& name, bool trainable) {
  if (const auto lora = config.find("lora_rank"); lora != config.end() && !lora->is_null()) {
    r.fail(where + " config \"lora_rank\"", "no LoRA adapter", shown(*lora));
  }
  if (const auto a = config.find("activity_regularizer"); a != config.end() && !a->is_null()) {
    r.fail(where + " config \"activity_regularizer\"", "null (activity regularizers are not supported)", shown(*a));
  }
  const std::string act = kernels::activation_unique_name(activation_value(r, config.value("activation", json()), where + " activation"));
  auto init = [&](const char* key, nn::Initializer fallback) {
    return initializer_of(r, config.value(key, json()), where + " " + key, fallback);
  };
  auto reg = [&](const char* key) { return regularizer_of(r, config.value(key, json()), where + " " + key); };
  auto con = [&](const char* key) { return constraint_of(r, config.value(key, json()), where + " " + key); };
  const bool use_bias = get<bool>(r, config, where, "use_bias", true);
  const auto format = data_format_of(r, config, where);
  const auto padding = padding_of(r, config, where);
  const auto input_shape = declared_input_shape(r, config, where);
  // The settings the options structs share, field for field.
  auto common = [&](auto& o) {
    o.padding = padding;
    o.data_format = format;
    o.activation = act;
    o.use_bias = use_bias;
    o.bias_initializer = init("bias_initializer", nn::Initializer::zeros());
    o.bias_regularizer = reg("bias_regularizer");
    o.bias_constraint = con("bias_constraint");
    o.input_shape = input_shape;
    o.trainable = trainable;
    o.name = name;
  };
  auto kernel = [&](auto& o) {  // Conv1D, Conv2D
    o.groups = get<std::int64_t>(r, config, where, "groups", 1);
    o.kernel_initializer = init("kernel_initializer", nn::Initializer::glorot_uniform());
    o.kernel_regularizer = reg("kernel_regularizer");
    o.kernel_constraint = con("kernel_constraint");
  };
  auto depthwise = [&](auto& o) {  // DepthwiseConv2D, SeparableConv2D
    o.depth_multiplier = get<std::int64_t>(r, config, where, "depth_multiplier", 1);
    o.depthwise_initializer = init("depthwise_initializer", nn::Initializer::glorot_uniform());
    o.depthwise_regularizer = reg("depthwise_regularizer");
    o.depthwise_constraint = con("depthwise_constraint");
  };
  const auto filters = [&] { return get<std::int64_t>(r, config, where, "filters", 0); };
  try {
    if (cls == "Conv1D") {
      nn::Conv1DOptions o;
      common(o);
      kernel(o);
      o.strides = ints_of<1>(r, config, where, "strides", 1)[0];
      o.dilation_rate = ints_of<1>(r, config, where, "dilation_rate", 1)[0];
      return std::make_shared<nn::Conv1D>(filters(), ints_of<1>(r, config, where, "kernel_size", 1)[0], o);
    }
    const auto kernel_size = ints_of<2>(r, config, where, "kernel_size", 1);
    auto spatial = [&](auto& o) {
      common(o);
      o.strides = ints_of<2>(r, config, where, "strides", 1);
      o.dilation_rate = ints_of<2>(r, config, where, "dilation_rate", 1);
    };
    if (cls == "Conv2D") {
      nn::Conv2DOptions o;
      spatial(o);
      kernel(o);
      return std::make_shared<nn::Conv2D>(filters(), kernel_size, o);
    }
    if (cls == "DepthwiseConv2D") {
      nn::DepthwiseConv2DOptions o;
      spatial(o);
      depthwise(o);
      return std::make_shared<nn::DepthwiseConv2D>(kernel_size, o);
    }
    nn::SeparableConv2DOptions o;
    spatial(o);
    depthwise(o);
    o.pointwise_initializer = init("pointwise_initializer", nn::Initializer::glorot_uniform());
    o.pointwise_regularizer = reg("pointwise_regularizer");
    o.pointwise_constraint = con("pointwise_constraint");
    return std::make_shared<nn::SeparableConv2D>(filters(), kernel_size, o);
  } catch (const FormatError&) {
    throw;
  } catch (const Error& e) {
    r.fail(where, "valid " + cls + " settings", e.what());
  }
}

// ((top, bottom), (left, right)) from Keras's int, (sym_h, sym_w) or ((t, b), (l, r)).
nn::Margins2D margins_of(const Reading& r, const json& config, const std::string& where, const char* key, std::int64_t fallback) {
  nn::Margins2D m{{{fallback, fallback}, {fallback, fallback}}};
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return m;
  auto size = [&](const json& v) {
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() > (std::int64_t{1} << 20)) {
      r.fail(where + " config \"" + key + "\"", "sizes >= 0", shown(*it));
    }
    return v.get<std::int64_t>();
  };
  if (it->is_number_integer()) {
    const auto v = size(*it);
    return {{{v, v}, {v, v}}};
  }
  if (it->is_array() && it->size() == 2) {
    for (std::size_t i = 0; i < 2; ++i) {
      const json& e = (*it)[i];
      if (e.is_number_integer()) {
        m[i] = {size(e), size(e)};
      } else if (e.is_array() && e.size() == 2) {
        m[i] = {size(e[0]), size(e[1])};
      } else {
        r.fail(where + " config \"" + key + "\"", "an int, 2 ints or 2 pairs", shown(*it));
      }
    }
    return m;
  }
  r.fail(where + " config \"" + key + "\"", "an int, 2 ints or 2 pairs", shown(*it));
}

std::vector<double> numbers_of(const Reading& r, const json& config, const std::string& where, const char* key, double fallback) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return {fallback};
  if (it->is_number()) return {it->get<double>()};
  std::vector<double> out;
  if (it->is_array()) {
    for (const json& v : *it) {
      if (!v.is_number()) r.fail(where + " config \"" + key + "\"", "numbers", shown(*it));
      out.push_back(v.get<double>());
    }
    if (!out.empty()) return out;
  }
  r.fail(where + " config \"" + key + "\"", "a number or a list of numbers", kind_of(*it));
}

// Pooling, padding, reshaping, ReLU-family and preprocessing layers (nn/spatial.hpp);
// the codec table routes only those classes here.
nn::LayerPtr spatial_from_config(const Reading& r, const std::string& cls, const json& config, const std::string& where,
                                 const std::string& name) {
  try {
    if (cls == "ZeroPadding2D") {
      return std::make_shared<nn::ZeroPadding2D>(
          nn::ZeroPadding2DOptions{margins_of(r, config, where, "padding", 1), data_format_of(r, config, where), name});
    }
    if (cls == "Cropping2D") {
      return std::make_shared<nn::Cropping2D>(
          nn::Cropping2DOptions{margins_of(r, config, where, "cropping", 0), data_format_of(r, config, where), name});
    }
    if (cls == "MaxPooling2D" || cls == "AveragePooling2D") {
      nn::Pooling2DOptions o;
      o.pool_size = ints_of<2>(r, config, where, "pool_size", 2);
      if (config.contains("strides") && !config["strides"].is_null()) o.strides = ints_of<2>(r, config, where, "strides", 1);
      o.padding = padding_of(r, config, where);
      o.data_format = data_format_of(r, config, where);
      o.name = name;
      if (cls == "MaxPooling2D") return std::make_shared<nn::MaxPooling2D>(o);
      return std::make_shared<nn::AveragePooling2D>(o);
    }
    if (cls == "GlobalAveragePooling2D" || cls == "GlobalMaxPooling2D") {
      nn::GlobalPooling2DOptions o{data_format_of(r, config, where), get<bool>(r, config, where, "keepdims", false), name};
      if (cls == "GlobalMaxPooling2D") return std::make_shared<nn::GlobalMaxPooling2D>(o);
      return std::make_shared<nn::GlobalAveragePooling2D>(o);
    }
    if (cls == "UpSampling2D") {
      nn::UpSampling2DOptions o;
      o.size = ints_of<2>(r, config, where, "size", 2);
      o.data_format = data_format_of(r, config, where);
      o.interpolation = nn::interpolation_from_name(get<std::string>(r, config, where, "interpolation", "nearest"));
      o.name = name;
      return std::make_shared<nn::UpSampling2D>(o);
    }
    if (cls == "Reshape") {
      const json t = config.value("target_shape", json());
      std::vector<std::int64_t> target;
      if (!t.is_array()) r.fail(where + " config \"target_shape\"", "a list of sizes", kind_of(t));
      for (const json& d : t) {
        if (!d.is_number_integer()) r.fail(where + " config \"target_shape\"", "integer sizes", shown(t));
        target.push_back(d.get<std::int64_t>());
      }
      return std::make_shared<nn::Reshape>(nn::ReshapeOptions{target, name});
    }
    if (cls == "Permute") {
      const json d = config.value("dims", json());
      std::vector<int> dims;
      if (!d.is_array()) r.fail(where + " config \"dims\"", "a list of axes", kind_of(d));
      for (const json& v : d) {
        if (!v.is_number_integer()) r.fail(where + " config \"dims\"", "integer axes", shown(d));
        dims.push_back(v.get<int>());
      }
      return std::make_shared<nn::Permute>(nn::PermuteOptions{dims, name});
    }
    if (cls == "ReLU") {
      nn::ReLUOptions o;
      if (const auto it = config.find("max_value"); it != config.end() && it->is_number()) o.max_value = it->get<double>();
      o.negative_slope = get<double>(r, config, where, "negative_slope", 0.0);
      o.threshold = get<double>(r, config, where, "threshold", 0.0);
      o.name = name;
      return std::make_shared<nn::ReLU>(o);
    }
    if (cls == "LeakyReLU") {
      const double slope = config.contains("negative_slope") ? get<double>(r, config, where, "negative_slope", 0.3)
                                                             : get<double>(r, config, where, "alpha", 0.3);
      return std::make_shared<nn::LeakyReLU>(nn::LeakyReLUOptions{slope, name});
    }
    if (cls == "Rescaling") {
      nn::RescalingOptions o;
      o.scale = numbers_of(r, config, where, "scale", 1.0);
      o.offset = numbers_of(r, config, where, "offset", 0.0);
      o.name = name;
      return std::make_shared<nn::Rescaling>(o);
    }
    if (cls == "Normalization") {
      nn::NormalizationOptions o;
      const json axis = config.value("axis", json(-1));
      o.axis.clear();
      if (axis.is_number_integer()) {
        o.axis.push_back(axis.get<int>());
      } else if (axis.is_array()) {
        for (const json& a : axis) {
          if (!a.is_number_integer()) r.fail(where + " config \"axis\"", "integer axes", shown(axis));
          o.axis.push_back(a.get<int>());
        }
      } else if (!axis.is_null()) {
        r.fail(where + " config \"axis\"", "an axis, a list of axes or null", kind_of(axis));
      }
      if (config.contains("mean") && !config["mean"].is_null()) {
        o.mean = numbers_of(r, config, where, "mean", 0.0);
        o.variance = numbers_of(r, config, where, "variance", 1.0);
      }
      o.invert = get<bool>(r, config, where, "invert", false);
      o.name = name;
      return std::make_shared<nn::Normalization>(o);
    }
  } catch (const FormatError&) {
    throw;
  } catch (const Error& e) {
    r.fail(where, "valid " + cls + " settings", e.what());
  }
  r.fail(where, "a pooling, padding, reshaping, ReLU or preprocessing layer class", "class " + printable_quoted(cls));
}

// What a reader gets of one layer entry (the class, its config, the name for messages).
struct LayerEntry {
  const std::string& cls;
  const json& config;
  const std::string& where;
  const std::string& name;
  bool trainable;
};

// One Keras layer class: how its config becomes a bnorm layer, and how a bnorm layer of
// that class is written back (the config keys beyond name, trainable and dtype). The
// table, codecs(), is the one list of the classes Keras files may hold; adding a class
// adds a row there.
struct LayerCodec {
  const char* class_name;
  nn::LayerPtr (*read)(const Reading&, const LayerEntry&);
  void (*write)(nn::Layer&, json&, Style);
};
const LayerCodec* find_codec(const std::string& class_name);
std::string supported_classes();

nn::LayerPtr read_dense(const Reading& r, const LayerEntry& entry) {
  [[maybe_unused]] const auto& [cls, config, where, name, trainable] = entry;
  nn::LayerPtr layer;
    nn::DenseOptions o;
    o.activation = kernels::activation_unique_name(activation_value(r, config.value("activation", json()), where + " activation"));
    o.use_bias = get<bool>(r, config, where, "use_bias", true);
    o.kernel_initializer = initializer_of(r, config.value("kernel_initializer", json()), where + " kernel_initializer",
                                          nn::Initializer::glorot_uniform());
    o.bias_initializer =
        initializer_of(r, config.value("bias_initializer", json()), where + " bias_initializer", nn::Initializer::zeros());
    o.kernel_regularizer = regularizer_of(r, config.value("kernel_regularizer", json()), where + " kernel_regularizer");
    o.bias_regularizer = regularizer_of(r, config.value("bias_regularizer", json()), where + " bias_regularizer");
    o.kernel_constraint = constraint_of(r, config.value("kernel_constraint", json()), where + " kernel_constraint");
    o.bias_constraint = constraint_of(r, config.value("bias_constraint", json()), where + " bias_constraint");
    o.input_shape = declared_input_shape(r, config, where);
    if (const auto lora = config.find("lora_rank"); lora != config.end() && !lora->is_null()) {
      r.fail(where + " config \"lora_rank\"", "no LoRA adapter", shown(*lora));
    }
    if (const auto q = config.find("quantization_config"); q != config.end() && !q->is_null()) {
      r.fail(where + " config \"quantization_config\"", "a float32 layer (null)", "a quantized layer");
    }
    const auto units = get<std::int64_t>(r, config, where, "units", -1);
    if (units <= 0 || units > (std::int64_t{1} << 30)) r.fail(where + " config \"units\"", "a positive number", std::to_string(units));
    o.name = name;
    o.trainable = trainable;
    layer = std::make_shared<nn::Dense>(units, o);
  return layer;
}

// renorm, renorm_clipping, renorm_momentum, virtual_batch_size of a BatchNormalization
// config, and the refusal of adjustment (a Python callable tf_keras never serializes;
// a config that names one cannot be rebuilt). tf_keras's get_config writes the axes of
// a built ghost-batch layer shifted by one (its build adds the ghost-batch dimension at
// index 1 and changes self.axis), so with virtual_batch_size a non-negative axis is
// read as axis - 1; bnorm writes negative axes there, which tf_keras also reads.
void read_batch_normalization_variants(const Reading& r, const json& config, const std::string& where,
                                       nn::BatchNormalizationOptions& o) {
  if (const auto a = config.find("adjustment"); a != config.end() && !a->is_null()) {
    r.fail(where + " config \"adjustment\"", "null (adjustment is a Python callable; it cannot be read from a file)",
           kind_of(*a));
  }
  o.renorm = get<bool>(r, config, where, "renorm", false);
  o.renorm_momentum = get<double>(r, config, where, "renorm_momentum", 0.99);
  if (const auto c = config.find("renorm_clipping"); c != config.end() && !c->is_null()) {
    if (!c->is_object()) r.fail(where + " config \"renorm_clipping\"", "an object with keys rmax, rmin, dmax", kind_of(*c));
    for (const auto& [key, value] : c->items()) {
      std::optional<double>* slot = key == "rmax"   ? &o.renorm_clipping.rmax
                                    : key == "rmin" ? &o.renorm_clipping.rmin
                                    : key == "dmax" ? &o.renorm_clipping.dmax
                                                    : nullptr;
      if (slot == nullptr) {
        r.fail(where + " config \"renorm_clipping\"", "the keys rmax, rmin, dmax", "the key " + printable_quoted(key));
      }
      if (value.is_null()) continue;
      if (!value.is_number()) r.fail(where + " config \"renorm_clipping\" " + key, "a number", kind_of(value));
      *slot = value.get<double>();
    }
  }
  if (const auto v = config.find("virtual_batch_size"); v != config.end() && !v->is_null()) {
    if (!v->is_number_integer()) r.fail(where + " config \"virtual_batch_size\"", "an integer or null", kind_of(*v));
    o.virtual_batch_size = v->get<std::int64_t>();
    for (int& a : o.axis)
      if (a > 0) --a;
  }
}

nn::LayerPtr read_batch_normalization(const Reading& r, const LayerEntry& entry) {
  [[maybe_unused]] const auto& [cls, config, where, name, trainable] = entry;
  nn::LayerPtr layer;
    nn::BatchNormalizationOptions o;
    o.version = r.version;
    const json axis = config.value("axis", json(-1));
    if (axis.is_number_integer()) {
      o.axis = {axis.get<int>()};
    } else if (axis.is_array() && !axis.empty() && axis.size() <= 8) {
      o.axis.clear();
      for (const json& a : axis) {
        if (!a.is_number_integer()) r.fail(where + " config \"axis\"", "integers", kind_of(a));
        o.axis.push_back(a.get<int>());
      }
    } else {
      r.fail(where + " config \"axis\"", "an integer or a list of integers", kind_of(axis));
    }
    o.momentum = get<double>(r, config, where, "momentum", 0.99);
    o.epsilon = get<double>(r, config, where, "epsilon", 1e-3);
    o.center = get<bool>(r, config, where, "center", true);
    o.scale = get<bool>(r, config, where, "scale", true);
    o.beta_initializer = initializer_of(r, config.value("beta_initializer", json()), where + " beta_initializer", nn::Initializer::zeros());
    o.gamma_initializer = initializer_of(r, config.value("gamma_initializer", json()), where + " gamma_initializer", nn::Initializer::ones());
    o.moving_mean_initializer = initializer_of(r, config.value("moving_mean_initializer", json()),
                                               where + " moving_mean_initializer", nn::Initializer::zeros());
    o.moving_variance_initializer = initializer_of(r, config.value("moving_variance_initializer", json()),
                                                   where + " moving_variance_initializer", nn::Initializer::ones());
    o.beta_regularizer = regularizer_of(r, config.value("beta_regularizer", json()), where + " beta_regularizer");
    o.gamma_regularizer = regularizer_of(r, config.value("gamma_regularizer", json()), where + " gamma_regularizer");
    o.beta_constraint = constraint_of(r, config.value("beta_constraint", json()), where + " beta_constraint");
    o.gamma_constraint = constraint_of(r, config.value("gamma_constraint", json()), where + " gamma_constraint");
    read_batch_normalization_variants(r, config, where, o);
    // Keras 3's synchronized (tf_keras keeps it out of the config): the layer synchronizes
    // when a data-parallel fit attaches a communicator (docs/distributed.md).
    o.synchronized = get<bool>(r, config, where, "synchronized", false);
    if (const auto v = config.find("fused"); v != config.end() && v->is_boolean()) {
      o.fused = v->get<bool>() ? nn::Fused::yes : nn::Fused::no;
    }
    o.name = name;
    o.trainable = trainable;
    try {
      layer = std::make_shared<nn::BatchNormalization>(o);
    } catch (const Error& e) {
      r.fail(where, "valid BatchNormalization options", e.what());
    }
  return layer;
}

nn::LayerPtr read_activation(const Reading& r, const LayerEntry& entry) {
  [[maybe_unused]] const auto& [cls, config, where, name, trainable] = entry;
  nn::LayerPtr layer;
    const std::string act = kernels::activation_unique_name(activation_value(r, config.value("activation", json()), where + " activation"));
    layer = std::make_shared<nn::Activation>(act, name);
  return layer;
}

nn::LayerPtr read_dropout(const Reading& r, const LayerEntry& entry) {
  [[maybe_unused]] const auto& [cls, config, where, name, trainable] = entry;
  nn::LayerPtr layer;
    const double rate = get<double>(r, config, where, "rate", 0.0);
    if (!(rate >= 0.0 && rate < 1.0)) r.fail(where + " config \"rate\"", "a value in [0, 1)", std::to_string(rate));
    auto dropout = std::make_shared<nn::Dropout>(rate, seed_of(config).value_or(0), name);
    if (const auto v = config.find("noise_shape"); v != config.end() && !v->is_null()) {
      const auto shape = shape_of(r, *v, where + " config \"noise_shape\"");
      dropout->set_noise_shape(shape);
    }
    layer = dropout;
  return layer;
}

nn::LayerPtr read_conv(const Reading& r, const LayerEntry& e) {
  return conv_from_config(r, e.cls, e.config, e.where, e.name, e.trainable);
}

nn::LayerPtr read_spatial(const Reading& r, const LayerEntry& e) {
  return spatial_from_config(r, e.cls, e.config, e.where, e.name);
}

nn::LayerPtr read_merge(const Reading&, const LayerEntry& e) {
  static const std::map<std::string, nn::MergeOp> kOps{{"Add", nn::MergeOp::add},         {"Subtract", nn::MergeOp::subtract},
                                                        {"Multiply", nn::MergeOp::multiply}, {"Average", nn::MergeOp::average},
                                                        {"Maximum", nn::MergeOp::maximum},   {"Minimum", nn::MergeOp::minimum}};
  return std::make_shared<nn::ElementwiseMerge>(kOps.at(e.cls), e.name);
}

nn::LayerPtr read_concatenate(const Reading& r, const LayerEntry& e) {
  return std::make_shared<nn::Concatenate>(get<int>(r, e.config, e.where, "axis", -1), e.name);
}

nn::LayerPtr read_flatten(const Reading& r, const LayerEntry& e) {
  return std::make_shared<nn::Flatten>(e.name, data_format_of(r, e.config, e.where));
}

// One layer entry of a model config -> a bnorm layer (not an InputLayer).
nn::LayerPtr layer_from_config(const Reading& r, const json& entry) {
  if (!entry.is_object() || !entry.contains("class_name") || !entry["class_name"].is_string()) {
    r.fail("config.layers", "layer entries with a class_name", kind_of(entry));
  }
  const std::string cls = entry["class_name"].get<std::string>();
  const json config = entry.contains("config") && entry["config"].is_object() ? entry["config"] : json::object();
  const std::string name = get<std::string>(r, config, "layer", "name", "");
  const std::string where = entry_label(name, cls);
  const bool trainable = get<bool>(r, config, where, "trainable", true);
  if (const auto it = config.find("dtype"); it != config.end() && !it->is_null()) {
    std::string dtype = it->is_string() ? it->get<std::string>() : "";
    if (it->is_object() && it->contains("config") && (*it)["config"].is_object()) {
      dtype = get<std::string>(r, (*it)["config"], where, "name", "float32");
    }
    if (dtype != "float32") r.fail(where + " config \"dtype\"", "float32 (bnorm computes in float32)", printable_quoted(dtype));
  }
  const LayerCodec* codec = find_codec(cls);
  if (!codec) r.fail(where, "a layer class bnorm supports (" + supported_classes() + ")", "class " + printable_quoted(cls));
  nn::LayerPtr layer = codec->read(r, LayerEntry{cls, config, where, name, trainable});
  layer->set_trainable(trainable);
  return layer;
}

// Hostile sizes: the configuration is read before any weights, and building a layer
// allocates its variables, so sizes are checked first. A variable may hold at most 2^28
// values (1 GiB of float32; VGG-16's largest Dense kernel holds 2^26.6), an input at
// most 2^31 values per example.
constexpr std::int64_t kMaxVariable = std::int64_t{1} << 28;
constexpr std::int64_t kMaxInput = std::int64_t{1} << 31;

void check_sizes(const Reading& r, const std::vector<std::int64_t>& input, const std::vector<nn::LayerPtr>& layers) {
  std::int64_t per_example = 1;
  for (const auto d : input) {
    per_example *= std::max<std::int64_t>(d, 1);
    if (per_example > kMaxInput) r.fail("input shape", "at most 2^31 values per example", Shape(input).str());
  }
  std::vector<std::int64_t> dims{-1};
  dims.insert(dims.end(), input.begin(), input.end());
  Shape shape(dims);
  for (const auto& layer : layers) {
    if (const auto* dense = dynamic_cast<const nn::Dense*>(layer.get())) {
      const std::int64_t fan_in = shape.rank() > 1 ? shape[shape.rank() - 1] : 1;
      if (fan_in > 0 && dense->units() > kMaxVariable / fan_in) {
        r.fail(layer_label(*layer), "a kernel of at most 2^28 values",
               std::to_string(fan_in) + " x " + std::to_string(dense->units()));
      }
    }
    try {
      shape = layer->compute_output_shape(shape);
    } catch (const Error& e) {
      r.fail(layer_label(*layer), "a layer that fits its input shape " + shape.str(), e.what());
    }
  }
}

std::vector<std::int64_t> input_layer_shape(const Reading& r, const json& entry) {
  const json config = entry.contains("config") && entry["config"].is_object() ? entry["config"] : json::object();
  for (const char* key : {"batch_shape", "batch_input_shape"}) {
    if (config.contains(key) && !config[key].is_null()) {
      auto s = shape_of(r, config[key], std::string("InputLayer config \"") + key + "\"");
      if (s.empty()) r.fail("InputLayer", "a batch dimension", "an empty shape");
      s.erase(s.begin());
      for (auto d : s)
        if (d < 0) r.fail("InputLayer", "known sizes after the batch dimension", "an unknown size");
      return s;
    }
  }
  if (config.contains("shape") && config["shape"].is_array()) return shape_of(r, config["shape"], "InputLayer shape");
  r.fail("InputLayer", "a batch_shape", "none");
}

bool is_model_class(const json& cls) { return cls == "Functional" || cls == "Model" || cls == "Sequential"; }
std::unique_ptr<nn::Model> model_from_entry(const Reading& r, const json& entry);

std::unique_ptr<nn::Model> sequential_from_config(const Reading& r, const json& config) {
  const std::string name = get<std::string>(r, config, "Sequential", "name", "");
  const json layers = config.value("layers", json::array());
  if (!layers.is_array()) r.fail("Sequential config \"layers\"", "a list of layers", kind_of(layers));
  std::vector<nn::LayerPtr> built;
  std::optional<std::vector<std::int64_t>> input;
  std::string input_name;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const json& entry = layers[i];
    if (entry.is_object() && entry.value("class_name", json()) == "InputLayer") {
      if (i != 0) r.fail("Sequential config \"layers\"", "an InputLayer only first", "one at position " + std::to_string(i));
      input = input_layer_shape(r, entry);
      if (entry.contains("config") && entry["config"].is_object()) input_name = get<std::string>(r, entry["config"], "InputLayer", "name", "");
      continue;
    }
    built.push_back(is_model_class(entry.value("class_name", json())) ? nn::LayerPtr(model_from_entry(r, entry))
                                                                       : layer_from_config(r, entry));
  }
  if (!input) {
    for (const char* key : {"build_input_shape"}) {
      if (config.contains(key) && config[key].is_array()) {
        auto s = shape_of(r, config[key], "Sequential build_input_shape");
        if (!s.empty()) input.emplace(s.begin() + 1, s.end());
      }
    }
  }
  if (!input && !layers.empty() && layers[0].is_object() && layers[0].contains("config") && layers[0]["config"].is_object()) {
    // tf.keras: the first layer's batch_input_shape
    auto s = declared_input_shape(r, layers[0]["config"], "Sequential first layer");
    if (!s.empty()) input = s;
  }
  if (input) check_sizes(r, *input, built);
  auto model = std::make_unique<nn::Sequential>(std::vector<nn::LayerPtr>{}, name);
  try {
    if (input) model->add(std::make_shared<nn::InputLayer>(*input, input_name));
    for (auto& l : built) model->add(l);
  } catch (const Error& e) {
    r.fail("Sequential " + printable_quoted(name), "layers that fit the input shape", e.what());
  }
  if (!model->input_shape()) {
    r.fail("Sequential " + printable_quoted(name), "a known input shape (an InputLayer or build_input_shape)", "none");
  }
  return model;
}

// One tensor an inbound node reads: the producing layer, its call (node) index within
// the model, and the kwargs the call carried (legacy files keep them on each input).
struct TensorRef {
  std::string layer;
  std::size_t node = 0;
  json kwargs = json::object();
};

TensorRef tensor_ref(const Reading& r, const json& t, const std::string& where) {
  if (t.is_object()) {  // Keras 3 {"class_name": "__keras_tensor__", "config": {"keras_history": [name, node, index]}}
    const json cfg = t.value("config", json::object());
    const json hist = cfg.is_object() ? cfg.value("keras_history", json()) : json();
    if (!hist.is_array() || hist.size() < 2 || !hist[0].is_string() || !hist[1].is_number_integer() || hist[1].get<std::int64_t>() < 0) {
      r.fail(where, "a keras_history [layer, node, tensor]", shown(hist));
    }
    if (hist.size() > 2 && hist[2] != 0) r.fail(where, "the first output of a layer (layers with one output)", shown(hist));
    return {hist[0].get<std::string>(), hist[1].get<std::size_t>(), json::object()};
  }
  if (t.is_array() && t.size() >= 3 && t[0].is_string() && t[1].is_number_integer() && t[1].get<std::int64_t>() >= 0) {  // legacy [name, node, index, kwargs]
    if (t[2] != 0) r.fail(where, "the first output of a layer (layers with one output)", shown(t));
    return {t[0].get<std::string>(), t[1].get<std::size_t>(), t.size() > 3 && t[3].is_object() ? t[3] : json::object()};
  }
  r.fail(where, "an input tensor reference", shown(t));
}

// One call of a layer: its input tensors and its training argument, from a Keras 3 node
// {"args": [tensor] | [[tensor, ...]], "kwargs": {...}} or a legacy [[name, node, index,
// kwargs], ...].
struct Call {
  std::vector<TensorRef> inputs;
  bool list = false;  // the inputs were passed as a list (merge layers)
  std::optional<bool> training;
};

Call call_of(const Reading& r, const json& node, const std::string& where) {
  Call call;
  json kwargs = json::object();
  if (node.is_object()) {
    const json args = node.value("args", json::array());
    if (!args.is_array() || args.empty()) r.fail(where, "the call's input tensors", shown(args));
    if (args[0].is_array()) {
      call.list = true;
      for (const json& t : args[0]) call.inputs.push_back(tensor_ref(r, t, where));
    } else {
      call.inputs.push_back(tensor_ref(r, args[0], where));
    }
    kwargs = node.value("kwargs", json::object());
  } else if (node.is_array() && !node.empty()) {
    for (const json& t : node) call.inputs.push_back(tensor_ref(r, t, where));
    call.list = call.inputs.size() > 1;
    kwargs = call.inputs.front().kwargs;
  } else {
    r.fail(where, "a call (inbound node)", shown(node));
  }
  if (kwargs.is_object()) {
    if (const auto t = kwargs.find("training"); t != kwargs.end() && t->is_boolean()) call.training = t->get<bool>();
  }
  return call;
}

// ["name", 0, 0] or [["name", 0, 0]]: one input or output of the model.
TensorRef endpoint(const Reading& r, const json& j, const char* what) {
  const std::string where = std::string("Functional config \"") + what + "\"";
  if (j.is_array() && !j.empty() && j[0].is_string()) return tensor_ref(r, j, where);
  if (j.is_array() && j.size() == 1 && j[0].is_array()) return tensor_ref(r, j[0], where);
  r.fail(where, "one tensor (bnorm models have one input and one output)", shown(j));
}

std::unique_ptr<nn::Model> functional_from_config(const Reading& r, const json& config) {
  const std::string name = get<std::string>(r, config, "Functional", "name", "");
  const json layers = config.value("layers", json::array());
  if (!layers.is_array()) r.fail("Functional config \"layers\"", "a list of layers", kind_of(layers));
  const TensorRef input_ref = endpoint(r, config.value("input_layers", json()), "input_layers");
  const TensorRef output_ref = endpoint(r, config.value("output_layers", json()), "output_layers");
  struct Entry {
    const json* node;
    std::string name, cls;
    nn::LayerPtr layer;  // null for the InputLayer
    std::vector<Call> calls;
  };
  std::vector<Entry> entries;
  std::map<std::string, std::size_t> by_name;
  for (const json& e : layers) {
    if (!e.is_object()) r.fail("Functional config \"layers\"", "layer objects", kind_of(e));
    std::string lname = e.value("name", json("")).is_string() ? e.value("name", std::string()) : std::string();
    if (lname.empty() && e.contains("config") && e["config"].is_object()) lname = get<std::string>(r, e["config"], "layer", "name", "");
    const json cls = e.value("class_name", json());
    Entry entry{&e, lname, cls.is_string() ? cls.get<std::string>() : "?", nullptr, {}};
    if (!by_name.emplace(lname, entries.size()).second) {
      r.fail("Functional config \"layers\"", "unique layer names", printable_quoted(lname) + " twice");
    }
    entries.push_back(std::move(entry));
  }
  const auto input_it = by_name.find(input_ref.layer);
  if (input_it == by_name.end() || entries[input_it->second].cls != "InputLayer") {
    r.fail("Functional config \"input_layers\"", "an InputLayer", printable_quoted(input_ref.layer));
  }
  // Layers (the first unsupported class is refused in the file's order), then their calls.
  for (Entry& e : entries) {
    if (e.cls == "InputLayer") continue;
    const std::string where = entry_label(e.name, e.cls) + " inbound_nodes";
    const json nodes = e.node->value("inbound_nodes", json());
    if (!nodes.is_array()) r.fail(where, "a list of calls", kind_of(nodes));
    for (const json& node : nodes) e.calls.push_back(call_of(r, node, where));
    e.layer = is_model_class(e.cls) ? nn::LayerPtr(model_from_entry(r, *e.node)) : layer_from_config(r, *e.node);
  }
  // Legacy files number a nested model's calls from 1 (its call 0 is its own construction).
  auto node_of = [&](const TensorRef& t) {
    const auto it = by_name.find(t.layer);
    if (it == by_name.end()) r.fail("Functional config", "a layer named " + printable_quoted(t.layer), "none");
    const Entry& producer = entries[it->second];
    std::size_t node = t.node;
    if (r.version == nn::KerasVersion::keras2 && is_model_class(producer.cls) && node > 0) --node;
    return std::make_pair(it->second, node);
  };
  const auto shape = input_layer_shape(r, *entries[input_it->second].node);
  std::map<std::pair<std::size_t, std::size_t>, nn::SymbolicTensor> made;
  try {
    const nn::SymbolicTensor in = nn::Input(shape, input_ref.layer);
    made.emplace(std::make_pair(input_it->second, std::size_t{0}), in);
    // Resolve calls whose inputs exist until none is left (Keras's reconstruction loop).
    std::vector<std::size_t> next_call(entries.size(), 0);
    for (bool progress = true; progress;) {
      progress = false;
      for (std::size_t i = 0; i < entries.size(); ++i) {
        Entry& e = entries[i];
        while (next_call[i] < e.calls.size()) {
          const Call& call = e.calls[next_call[i]];
          std::vector<nn::SymbolicTensor> xs;
          for (const TensorRef& t : call.inputs) {
            const auto found = made.find(node_of(t));
            if (found == made.end()) break;
            xs.push_back(found->second);
          }
          if (xs.size() != call.inputs.size()) break;
          nn::SymbolicTensor y = call.list || e.layer->takes_input_list() ? (*e.layer)(xs, call.training)
                                                                          : (*e.layer)(xs.front(), call.training);
          made.emplace(std::make_pair(i, next_call[i]), y);
          ++next_call[i];
          progress = true;
        }
      }
    }
    for (std::size_t i = 0; i < entries.size(); ++i) {
      if (next_call[i] < entries[i].calls.size()) {
        r.fail("Functional config", "calls whose inputs the graph computes (no cycle, no missing layer)",
               entry_label(entries[i].name, entries[i].cls) + " call " + std::to_string(next_call[i]) + " unresolved");
      }
    }
    const auto out = made.find(node_of(output_ref));
    if (out == made.end()) r.fail("Functional config \"output_layers\"", "a computed tensor", printable_quoted(output_ref.layer));
    return std::make_unique<nn::Model>(in, out->second, name);
  } catch (const FormatError&) {
    throw;
  } catch (const Error& e) {
    r.fail("Functional " + printable_quoted(name), "layers that fit their inputs", e.what());
  }
}

// ------------------------------------------------------------------ writing

json wrap(const std::string& module, const std::string& cls, json config, Style style) {
  json j;
  if (style == Style::keras3) j["module"] = module;
  j["class_name"] = cls;
  j["config"] = std::move(config);
  if (style == Style::keras3) j["registered_name"] = nullptr;
  return j;
}

json dtype_json(Style style) {
  if (style == Style::legacy) return "float32";
  return wrap("keras", "DTypePolicy", {{"name", "float32"}}, style);
}

json seed_json(std::uint64_t seed) { return seed == 0 ? json(nullptr) : json(seed); }

json initializer_json(const nn::Initializer& init, Style style) {
  json c = json::object();
  switch (init.kind()) {
    case nn::Initializer::Kind::zeros:
    case nn::Initializer::Kind::ones: break;
    case nn::Initializer::Kind::constant: c["value"] = init.a(); break;
    case nn::Initializer::Kind::random_normal:
      c = {{"mean", init.a()}, {"stddev", init.b()}, {"seed", seed_json(init.seed())}};
      break;
    case nn::Initializer::Kind::random_uniform:
      c = {{"minval", init.a()}, {"maxval", init.b()}, {"seed", seed_json(init.seed())}};
      break;
    case nn::Initializer::Kind::glorot_uniform: c = {{"seed", seed_json(init.seed())}}; break;
  }
  return wrap("keras.initializers", init.keras_class_name(), c, style);
}

json regularizer_json(const nn::Regularizer& reg, Style style) {
  if (!reg.active()) return nullptr;
  if (reg.l1_factor() == 0.0f) return wrap("keras.regularizers", "L2", {{"l2", reg.l2_factor()}}, style);
  if (reg.l2_factor() == 0.0f) return wrap("keras.regularizers", "L1", {{"l1", reg.l1_factor()}}, style);
  return wrap("keras.regularizers", "L1L2", {{"l1", reg.l1_factor()}, {"l2", reg.l2_factor()}}, style);
}

json constraint_json(const nn::Constraint& c, Style style) {
  switch (c.kind()) {
    case nn::Constraint::Kind::none: return nullptr;
    case nn::Constraint::Kind::non_neg: return wrap("keras.constraints", "NonNeg", json::object(), style);
    case nn::Constraint::Kind::unit_norm: return wrap("keras.constraints", "UnitNorm", {{"axis", 0}}, style);
    case nn::Constraint::Kind::max_norm:
      return wrap("keras.constraints", "MaxNorm", {{"max_value", c.max_value()}, {"axis", 0}}, style);
    case nn::Constraint::Kind::min_max_norm:
      return wrap("keras.constraints", "MinMaxNorm",
                  {{"min_value", c.min_value()}, {"max_value", c.max_value()}, {"rate", c.rate()}, {"axis", 0}}, style);
  }
  return nullptr;
}

json shape_json(const Shape& s) {
  json j = json::array();
  for (int i = 0; i < s.rank(); ++i) j.push_back(s[i] < 0 ? json(nullptr) : json(s[i]));
  return j;
}

json base_config(const nn::Layer& layer, Style style) {
  return {{"name", layer.name()}, {"trainable", layer.trainable()}, {"dtype", dtype_json(style)}};
}

json pair_json(const std::array<std::int64_t, 2>& v) { return json::array({v[0], v[1]}); }

// The settings of a convolution layer, as Keras 3 / tf.keras write them (CNN.md 1.1).
void conv_json(nn::ConvLayerBase& layer, json& c, Style style) {
  auto common = [&](const auto& o) {
    c["padding"] = nn::padding_name(o.padding);
    c["data_format"] = nn::data_format_name(o.data_format);
    c["activation"] = kernels::activation_name(layer.activation());  // the Keras name (both hard_sigmoid forms)
    c["use_bias"] = o.use_bias;
    c["bias_initializer"] = initializer_json(o.bias_initializer, style);
    c["bias_regularizer"] = regularizer_json(o.bias_regularizer, style);
    c["activity_regularizer"] = nullptr;
    c["bias_constraint"] = constraint_json(o.bias_constraint, style);
  };
  auto kernel = [&](const auto& o) {
    c["groups"] = o.groups;
    c["kernel_initializer"] = initializer_json(o.kernel_initializer, style);
    c["kernel_regularizer"] = regularizer_json(o.kernel_regularizer, style);
    c["kernel_constraint"] = constraint_json(o.kernel_constraint, style);
  };
  auto depthwise = [&](const auto& o) {
    c["depth_multiplier"] = o.depth_multiplier;
    if (style == Style::legacy) c["groups"] = 1;  // tf.keras writes it (Keras 3 refuses it: CNN.md 1.1)
    c["depthwise_initializer"] = initializer_json(o.depthwise_initializer, style);
    c["depthwise_regularizer"] = regularizer_json(o.depthwise_regularizer, style);
    c["depthwise_constraint"] = constraint_json(o.depthwise_constraint, style);
  };
  auto spatial = [&](const auto& o, const std::array<std::int64_t, 2>& kernel_size) {
    c["kernel_size"] = pair_json(kernel_size);
    c["strides"] = pair_json(o.strides);
    c["dilation_rate"] = pair_json(o.dilation_rate);
    common(o);
  };
  if (auto* l = dynamic_cast<nn::Conv2D*>(&layer)) {
    c["filters"] = l->filters();
    spatial(l->options(), l->kernel_size());
    kernel(l->options());
  } else if (auto* l1 = dynamic_cast<nn::Conv1D*>(&layer)) {
    const auto& o = l1->options();
    c["filters"] = l1->filters();
    c["kernel_size"] = json::array({l1->kernel_size()});
    c["strides"] = json::array({o.strides});
    c["dilation_rate"] = json::array({o.dilation_rate});
    common(o);
    kernel(o);
  } else if (auto* d = dynamic_cast<nn::DepthwiseConv2D*>(&layer)) {
    spatial(d->options(), d->kernel_size());
    depthwise(d->options());
  } else if (auto* sp = dynamic_cast<nn::SeparableConv2D*>(&layer)) {
    const auto& o = sp->options();
    c["filters"] = sp->filters();
    spatial(o, sp->kernel_size());
    depthwise(o);
    c["pointwise_initializer"] = initializer_json(o.pointwise_initializer, style);
    c["pointwise_regularizer"] = regularizer_json(o.pointwise_regularizer, style);
    c["pointwise_constraint"] = constraint_json(o.pointwise_constraint, style);
  }
}

json margins_json(const nn::Margins2D& m) {
  return json::array({json::array({m[0][0], m[0][1]}), json::array({m[1][0], m[1][1]})});
}

json numbers_json(const std::vector<double>& v) { return v.size() == 1 ? json(v[0]) : json(v); }

// The settings of a layer of nn/spatial.hpp; false for another class.
bool spatial_json(nn::Layer& layer, json& c, Style style) {
  if (auto* z = dynamic_cast<nn::ZeroPadding2D*>(&layer)) {
    c["padding"] = margins_json(z->options().padding);
    c["data_format"] = nn::data_format_name(z->options().data_format);
  } else if (auto* cr = dynamic_cast<nn::Cropping2D*>(&layer)) {
    c["cropping"] = margins_json(cr->options().cropping);
    c["data_format"] = nn::data_format_name(cr->options().data_format);
  } else if (auto* p = dynamic_cast<nn::Pooling2D*>(&layer)) {
    const auto& o = p->options();
    c["pool_size"] = pair_json(o.pool_size);
    c["padding"] = nn::padding_name(o.padding);
    c["strides"] = pair_json(o.strides.value_or(o.pool_size));
    c["data_format"] = nn::data_format_name(o.data_format);
  } else if (auto* g = dynamic_cast<nn::GlobalPooling2D*>(&layer)) {
    c["data_format"] = nn::data_format_name(g->options().data_format);
    c["keepdims"] = g->options().keepdims;
  } else if (auto* u = dynamic_cast<nn::UpSampling2D*>(&layer)) {
    c["size"] = pair_json(u->options().size);
    c["data_format"] = nn::data_format_name(u->options().data_format);
    c["interpolation"] = u->options().interpolation == nn::Interpolation::nearest ? "nearest" : "bilinear";
  } else if (auto* rs = dynamic_cast<nn::Reshape*>(&layer)) {
    c["target_shape"] = rs->options().target_shape;
  } else if (auto* pm = dynamic_cast<nn::Permute*>(&layer)) {
    c["dims"] = pm->options().dims;
  } else if (auto* re = dynamic_cast<nn::ReLU*>(&layer)) {
    c["max_value"] = re->options().max_value ? json(*re->options().max_value) : json(nullptr);
    c["negative_slope"] = re->options().negative_slope;
    c["threshold"] = re->options().threshold;
  } else if (auto* lr = dynamic_cast<nn::LeakyReLU*>(&layer)) {
    // Keras 3 reads negative_slope (alpha deprecated), tf.keras only alpha.
    c[style == Style::keras3 ? "negative_slope" : "alpha"] = lr->options().negative_slope;
  } else if (auto* sc = dynamic_cast<nn::Rescaling*>(&layer)) {
    c["scale"] = numbers_json(sc->options().scale);
    c["offset"] = numbers_json(sc->options().offset);
  } else if (auto* nz = dynamic_cast<nn::Normalization*>(&layer)) {
    const auto& o = nz->options();
    c["axis"] = o.axis;
    c["mean"] = o.mean ? json(*o.mean) : json(nullptr);
    c["variance"] = o.variance ? json(*o.variance) : json(nullptr);
    c["invert"] = o.invert;
  } else {
    return false;
  }
  return true;
}

void write_dense(nn::Layer& layer, json& c, Style style) {
  auto* d = &dynamic_cast<nn::Dense&>(layer);
    const auto& o = d->options();
    c["units"] = d->units();
    c["activation"] = kernels::activation_name(d->activation());
    c["use_bias"] = o.use_bias;
    c["kernel_initializer"] = initializer_json(o.kernel_initializer, style);
    c["bias_initializer"] = initializer_json(o.bias_initializer, style);
    c["kernel_regularizer"] = regularizer_json(o.kernel_regularizer, style);
    c["bias_regularizer"] = regularizer_json(o.bias_regularizer, style);
    c["kernel_constraint"] = constraint_json(o.kernel_constraint, style);
    c["bias_constraint"] = constraint_json(o.bias_constraint, style);
    if (style == Style::keras3) c["quantization_config"] = nullptr;
}

void write_batch_normalization(nn::Layer& layer, json& c, Style style) {
  auto* bn = &dynamic_cast<nn::BatchNormalization&>(layer);
    const auto& o = bn->options();
    if (o.axis.size() == 1) {
      c["axis"] = o.axis.front();
    } else {
      c["axis"] = o.axis;
    }
    c["momentum"] = o.momentum;
    c["epsilon"] = o.epsilon;
    c["center"] = o.center;
    c["scale"] = o.scale;
    c["beta_initializer"] = initializer_json(o.beta_initializer, style);
    c["gamma_initializer"] = initializer_json(o.gamma_initializer, style);
    c["moving_mean_initializer"] = initializer_json(o.moving_mean_initializer, style);
    c["moving_variance_initializer"] = initializer_json(o.moving_variance_initializer, style);
    c["beta_regularizer"] = regularizer_json(o.beta_regularizer, style);
    c["gamma_regularizer"] = regularizer_json(o.gamma_regularizer, style);
    c["beta_constraint"] = constraint_json(o.beta_constraint, style);
    c["gamma_constraint"] = constraint_json(o.gamma_constraint, style);
    // renorm_clipping: the bounds given ({} with none), null without renorm, as Keras 3.
    json clipping = nullptr;
    if (o.renorm) {
      clipping = json::object();
      if (o.renorm_clipping.rmax) clipping["rmax"] = *o.renorm_clipping.rmax;
      if (o.renorm_clipping.rmin) clipping["rmin"] = *o.renorm_clipping.rmin;
      if (o.renorm_clipping.dmax) clipping["dmax"] = *o.renorm_clipping.dmax;
    }
    if (style == Style::keras3) {
      c["synchronized"] = o.synchronized;
      c["renorm"] = o.renorm;
      c["renorm_clipping"] = clipping;
      c["renorm_momentum"] = o.renorm_momentum;
    } else if (o.renorm) {  // tf_keras writes the renorm keys only with renorm
      c["renorm"] = true;
      c["renorm_clipping"] = clipping;
      c["renorm_momentum"] = o.renorm_momentum;
    }
    if (o.virtual_batch_size) {
      if (style == Style::keras3) {
        throw ArgumentError("BatchNormalization '" + bn->name() + "'", "virtual_batch_size",
                            "none in a Keras 3 file (Keras 3 has no ghost batches; save as legacy .h5)",
                            std::to_string(*o.virtual_batch_size));
      }
      c["virtual_batch_size"] = *o.virtual_batch_size;
      // Negative axes (built layer): read back unshifted by tf_keras and by bnorm; an
      // unbuilt layer's non-negative axes are written shifted as tf_keras does (see the reader).
      json axes = json::array();
      if (bn->built()) {
        for (int a : bn->axes()) axes.push_back(a - bn->built_rank());
      } else {
        for (int a : o.axis) axes.push_back(a >= 0 ? a + 1 : a);
      }
      c["axis"] = axes.size() == 1 ? axes.front() : axes;
    }
}

void write_activation(nn::Layer& layer, json& c, Style) {
  auto* a = &dynamic_cast<nn::Activation&>(layer);
    c["activation"] = kernels::activation_name(a->activation());
}

void write_dropout(nn::Layer& layer, json& c, Style) {
  auto* dr = &dynamic_cast<nn::Dropout&>(layer);
    c["rate"] = dr->rate();
    c["noise_shape"] = dr->noise_shape().empty() ? json(nullptr) : shape_json(Shape(dr->noise_shape()));
    c["seed"] = seed_json(dr->seed());
}

void write_conv(nn::Layer& layer, json& c, Style style) { conv_json(dynamic_cast<nn::ConvLayerBase&>(layer), c, style); }
void write_spatial(nn::Layer& layer, json& c, Style style) { (void)spatial_json(layer, c, style); }
void write_merge(nn::Layer&, json&, Style) {}  // name, trainable, dtype only
void write_concatenate(nn::Layer& layer, json& c, Style) { c["axis"] = dynamic_cast<nn::Concatenate&>(layer).axis(); }
void write_flatten(nn::Layer& layer, json& c, Style) {
  c["data_format"] = nn::data_format_name(dynamic_cast<nn::Flatten&>(layer).data_format());
}

const std::vector<LayerCodec>& codecs() {
  static const std::vector<LayerCodec> table{
      {"Dense", read_dense, write_dense},
      {"BatchNormalization", read_batch_normalization, write_batch_normalization},
      {"Activation", read_activation, write_activation},
      {"Dropout", read_dropout, write_dropout},
      {"Flatten", read_flatten, write_flatten},
      {"Conv1D", read_conv, write_conv},
      {"Conv2D", read_conv, write_conv},
      {"DepthwiseConv2D", read_conv, write_conv},
      {"SeparableConv2D", read_conv, write_conv},
      {"ZeroPadding2D", read_spatial, write_spatial},
      {"Cropping2D", read_spatial, write_spatial},
      {"MaxPooling2D", read_spatial, write_spatial},
      {"AveragePooling2D", read_spatial, write_spatial},
      {"GlobalAveragePooling2D", read_spatial, write_spatial},
      {"GlobalMaxPooling2D", read_spatial, write_spatial},
      {"UpSampling2D", read_spatial, write_spatial},
      {"Reshape", read_spatial, write_spatial},
      {"Permute", read_spatial, write_spatial},
      {"ReLU", read_spatial, write_spatial},
      {"LeakyReLU", read_spatial, write_spatial},
      {"Rescaling", read_spatial, write_spatial},
      {"Normalization", read_spatial, write_spatial},
      {"Add", read_merge, write_merge},
      {"Subtract", read_merge, write_merge},
      {"Multiply", read_merge, write_merge},
      {"Average", read_merge, write_merge},
      {"Maximum", read_merge, write_merge},
      {"Minimum", read_merge, write_merge},
      {"Concatenate", read_concatenate, write_concatenate},
  };
  return table;
}

const LayerCodec* find_codec(const std::string& class_name) {
  for (const auto& c : codecs())
    if (class_name == c.class_name) return &c;
  return nullptr;
}

std::string supported_classes() {
  std::string out = "InputLayer";
  for (const auto& c : codecs()) out += std::string(", ") + c.class_name;
  return out + ", or a nested Sequential / Functional model";
}

// One layer's {"class_name", "config", ...} entry; `input` is its input shape.
json layer_json(nn::Layer& layer, const Shape& input, Style style) {
  json c = base_config(layer, style);
  const std::string cls = layer.class_name();
  const LayerCodec* codec = find_codec(cls);
  if (!codec) {
    throw ArgumentError("save_model", "layer '" + layer.name() + "'",
                        "a layer class Keras files can hold (" + supported_classes() + ")", "class " + cls);
  }
  codec->write(layer, c, style);
  const bool has_weights = !layer.weights().empty();
  json j = wrap("keras.layers", cls, std::move(c), style);
  if (style == Style::keras3 && has_weights) j["build_config"] = {{"input_shape", shape_json(input)}};
  return j;
}

json input_layer_json(const std::string& name, const Shape& input, Style style) {
  json c;
  c[style == Style::keras3 ? "batch_shape" : "batch_input_shape"] = shape_json(input);
  c["dtype"] = "float32";
  c["sparse"] = false;
  c["ragged"] = false;
  c["name"] = name;
  if (style == Style::keras3) c["optional"] = false;
  return wrap("keras.layers", "InputLayer", c, style);
}

}  // namespace

std::string layer_label(const nn::Layer& layer) { return entry_label(layer.name(), layer.class_name()); }

std::string input_layer_name(const nn::Model& model) {
  return model.input_name().empty() ? "input_layer" : model.input_name();
}

std::string snake_case(const std::string& class_name) {
  // Keras's to_snake_case: re.sub("(.)([A-Z][a-z]+)", r"\1_\2"), then
  // re.sub("([a-z])([A-Z])", r"\1_\2"), lower case: Conv2D -> conv2d, ReLU -> re_lu,
  // DepthwiseConv2D -> depthwise_conv2d, BatchNormalization -> batch_normalization.
  static const std::regex first("(.)([A-Z][a-z]+)"), second("([a-z])([A-Z])");
  std::string out = std::regex_replace(class_name, first, "$1_$2");
  out = std::regex_replace(out, second, "$1_$2");
  for (char& ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return out;
}

namespace {
std::unique_ptr<nn::Model> model_from_entry(const Reading& r, const json& config) {
  if (!config.is_object() || !config.contains("class_name") || !config["class_name"].is_string()) {
    r.fail("model config", "an object with a class_name", kind_of(config));
  }
  const std::string cls = config["class_name"].get<std::string>();
  const json inner = config.contains("config") && config["config"].is_object() ? config["config"] : json::object();
  std::unique_ptr<nn::Model> model;
  if (cls == "Sequential") model = sequential_from_config(r, inner);
  if (cls == "Functional" || cls == "Model") model = functional_from_config(r, inner);
  if (model) {
    if (!get<bool>(r, inner, "model", "trainable", true)) model->set_trainable(false);
    return model;
  }
  r.fail("model config", "a Sequential or Functional model", "class " + printable_quoted(cls));
}
}  // namespace

std::unique_ptr<nn::Model> model_from_config(const json& config, const std::string& file, nn::KerasVersion version) {
  return model_from_entry(Reading{file, version}, config);
}

json model_to_config(const nn::Model& model, Style style) {
  const auto& input = model.input_shape();
  if (!input) {
    throw ArgumentError("save_model", "model '" + model.name() + "'",
                        "a model with a known input shape (an Input, an InputLayer, or build())", "an unbuilt model");
  }
  const bool sequential = dynamic_cast<const nn::Sequential*>(&model) != nullptr;
  const std::string input_name = input_layer_name(model);
  const auto& nodes = model.nodes();
  // Tensor t: its shape, producing layer and that layer's call index in this model.
  std::vector<Shape> shapes{*input};
  std::vector<std::pair<std::string, std::size_t>> producer{{input_name, 0}};
  std::map<const nn::Layer*, std::size_t> calls_so_far;
  for (const auto& n : nodes) {
    shapes.push_back(n.output_shape);
    std::size_t k = calls_so_far[n.layer.get()]++;
    // tf.keras numbers a nested model's calls from 1 (call 0 is its construction).
    if (style == Style::legacy && dynamic_cast<const nn::Model*>(n.layer.get())) ++k;
    producer.emplace_back(n.layer->name(), k);
  }
  auto entry_of = [&](const nn::Layer& layer, const Shape& in) {
    if (const auto* nested = dynamic_cast<const nn::Model*>(&layer)) return model_to_config(*nested, style);
    return layer_json(const_cast<nn::Layer&>(layer), in, style);
  };
  json layers = json::array();
  layers.push_back(input_layer_json(input_name, *input, style));
  if (!sequential) layers.back()["name"] = input_name, layers.back()["inbound_nodes"] = json::array();
  for (const auto& layer : model.layers()) {
    std::vector<const nn::Model::Node*> calls;
    for (const auto& n : nodes)
      if (n.layer == layer) calls.push_back(&n);
    const Shape in = calls.empty() || calls.front()->inputs.empty() ? *input : shapes[static_cast<std::size_t>(calls.front()->inputs.front())];
    json entry = entry_of(*layer, in);
    if (!sequential) {
      entry["name"] = layer->name();
      json inbound = json::array();
      for (const auto* n : calls) {
        json kwargs = json::object();
        if (n->training) kwargs["training"] = *n->training;
        if (style == Style::keras3) {
          if (layer->class_name() == "BatchNormalization" || dynamic_cast<const nn::Model*>(layer.get())) kwargs["mask"] = nullptr;
          json tensors = json::array();
          for (int t : n->inputs) {
            const auto& [from, k] = producer[static_cast<std::size_t>(t)];
            tensors.push_back({{"class_name", "__keras_tensor__"},
                               {"config", {{"shape", shape_json(shapes[static_cast<std::size_t>(t)])},
                                           {"dtype", "float32"},
                                           {"keras_history", {from, k, 0}}}}});
          }
          json args = layer->takes_input_list() ? json::array({tensors}) : tensors;
          inbound.push_back({{"args", args}, {"kwargs", kwargs}});
        } else {
          json refs = json::array();
          for (int t : n->inputs) {
            const auto& [from, k] = producer[static_cast<std::size_t>(t)];
            refs.push_back(json::array({from, k, 0, kwargs}));
          }
          inbound.push_back(refs);
        }
      }
      entry["inbound_nodes"] = inbound;
    }
    layers.push_back(std::move(entry));
  }
  json config = {{"name", model.name()}, {"trainable", model.trainable()}, {"layers", layers}};
  if (sequential) {
    if (style == Style::keras3) {
      config["dtype"] = dtype_json(style);
      config["build_input_shape"] = shape_json(*input);
    }
    json j = wrap("keras", "Sequential", config, style);
    if (style == Style::keras3) j["build_config"] = {{"input_shape", shape_json(*input)}};
    return j;
  }
  const auto& out = producer[static_cast<std::size_t>(model.output_tensor())];
  if (style == Style::keras3) {
    config["input_layers"] = {input_name, 0, 0};
    config["output_layers"] = {out.first, out.second, 0};
    json j = wrap("keras.src.models.functional", "Functional", config, style);
    j["registered_name"] = "Functional";
    j["build_config"] = {{"input_shape", nullptr}};
    return j;
  }
  config["input_layers"] = json::array({json::array({input_name, 0, 0})});
  config["output_layers"] = json::array({json::array({out.first, out.second, 0})});
  return wrap("keras", "Functional", config, style);
}

}  // namespace bnorm::io::keras
