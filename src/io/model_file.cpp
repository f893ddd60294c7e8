// Keras model and weights files: .keras archives, Keras 3 .weights.h5, legacy tf.keras
// .h5 (full model and weights-only). Formats: docs/formats.md and
// ../shared/spec/INTEROP.md section 1.
#include "bnorm/io/model_file.hpp"

#include <zip.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <map>
#include <set>

#include "bnorm/core/text.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/losses.hpp"
#include "bnorm/nn/optimizers.hpp"
#include "file_bytes.hpp"
#include "hdf5.hpp"
#include "keras_config.hpp"

namespace bnorm::io {

using nlohmann::json;
using nn::Variable;

namespace {

constexpr std::size_t kMaxConfigBytes = std::size_t{64} << 20;    // config.json
constexpr std::uint64_t kMaxWeightsBytes = std::uint64_t{8} << 30;  // model.weights.h5
// The Keras versions whose formats bnorm writes (what the files say they are).
constexpr const char* kKeras3Version = "3.15.1";
constexpr const char* kLegacyKerasVersion = "2.21.0";

enum class Kind { keras_archive, hdf5, checkpoint, other };

Kind kind_of(std::string_view bytes) {
  if (bytes.size() >= 4 && std::memcmp(bytes.data(), "PK\x03\x04", 4) == 0) return Kind::keras_archive;
  if (h5::has_signature(bytes)) return Kind::hdf5;
  if (is_checkpoint(bytes)) return Kind::checkpoint;
  return Kind::other;
}

std::string describe(std::string_view bytes) {
  if (bytes.empty()) return "an empty file";
  return "a file of " + std::to_string(bytes.size()) + " bytes in another format";
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void require_built(nn::Model& model, const char* what) {
  for (const auto& layer : model.layers()) {
    if (!layer->built()) {
      throw ArgumentError(what, "model '" + model.name() + "'",
                          "a built model (an Input/InputLayer, build(), or one call)",
                          keras::layer_label(*layer) + " not built yet");
    }
  }
}

// ------------------------------------------------------------------ zip (.keras)

struct ZipArchive {
  zip_t* za = nullptr;
  ~ZipArchive() {
    if (za) zip_discard(za);
  }
};

struct Archive {
  std::string config;
  std::string weights;
};

Archive read_archive(const std::string& bytes, const std::string& name) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* src = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  if (!src) throw FormatError(name, "archive", "a zip archive", "one libzip cannot open");
  ZipArchive archive;
  archive.za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &error);
  if (!archive.za) {
    zip_source_free(src);
    const std::string why = zip_error_strerror(&error);
    zip_error_fini(&error);
    throw FormatError(name, "archive", "a complete zip archive (.keras)", "a damaged one (libzip: " + why + ")");
  }
  zip_error_fini(&error);
  auto member = [&](const char* member_name, std::uint64_t limit) {
    const zip_int64_t index = zip_name_locate(archive.za, member_name, 0);
    if (index < 0) throw FormatError(name, member_name, std::string("an archive member ") + member_name, "none (not a .keras archive)");
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(archive.za, static_cast<zip_uint64_t>(index), 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
      throw FormatError(name, member_name, "a readable archive member", "one libzip cannot describe");
    }
    if (st.size > limit) {
      throw FormatError(name, member_name, "at most " + count_of(static_cast<long long>(limit), "byte"),
                        count_of(static_cast<long long>(st.size), "byte"));
    }
    zip_file_t* f = zip_fopen_index(archive.za, static_cast<zip_uint64_t>(index), 0);
    if (!f) throw FormatError(name, member_name, "a readable archive member", "one libzip cannot open (unsupported compression or encryption)");
    std::string out(static_cast<std::size_t>(st.size), '\0');
    zip_uint64_t done = 0;
    while (done < st.size) {
      const zip_int64_t n = zip_fread(f, out.data() + done, st.size - done);
      if (n <= 0) break;
      done += static_cast<zip_uint64_t>(n);
    }
    char extra;
    const bool longer = zip_fread(f, &extra, 1) > 0;
    const bool failed = zip_fclose(f) != 0;
    if (done != st.size || longer || failed) {
      throw FormatError(name, member_name, std::to_string(st.size) + " intact bytes", "a truncated or corrupt member");
    }
    return out;
  };
  Archive out;
  out.config = member("config.json", kMaxConfigBytes);
  out.weights = member("model.weights.h5", kMaxWeightsBytes);
  return out;
}

// The archive's model.weights.h5, opened.
h5::Reader archive_weights(const Archive& archive, const std::string& name) {
  return h5::Reader::open_image(archive.weights, name + " (model.weights.h5)");
}

std::string write_archive(const std::vector<std::pair<std::string, std::string>>& members, const std::string& path) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* src = zip_source_buffer_create(nullptr, 0, 0, &error);
  if (!src) throw FileError("save_model", path, "an in-memory zip archive", "libzip could not create one");
  zip_source_keep(src);
  zip_t* za = zip_open_from_source(src, ZIP_TRUNCATE, &error);
  if (!za) {
    zip_source_free(src);
    throw FileError("save_model", path, "an in-memory zip archive", "libzip could not open one");
  }
  for (const auto& [member_name, data] : members) {
    zip_source_t* m = zip_source_buffer(za, data.data(), data.size(), 0);
    const zip_int64_t index = m ? zip_file_add(za, member_name.c_str(), m, ZIP_FL_OVERWRITE | ZIP_FL_ENC_UTF_8) : -1;
    if (index < 0) {
      if (m) zip_source_free(m);
      zip_discard(za);
      zip_source_free(src);
      throw FileError("save_model", path, "archive member " + member_name, "libzip could not add it");
    }
    // Stored, as Python's zipfile (and so Keras) writes them.
    zip_set_file_compression(za, static_cast<zip_uint64_t>(index), ZIP_CM_STORE, 0);
  }
  if (zip_close(za) != 0) {
    zip_discard(za);
    zip_source_free(src);
    throw FileError("save_model", path, "a finished zip archive", "libzip could not write it");
  }
  std::string bytes;
  zip_stat_t st;
  zip_stat_init(&st);
  if (zip_source_stat(src, &st) == 0 && zip_source_open(src) == 0) {
    bytes.resize(static_cast<std::size_t>(st.size));
    const zip_int64_t n = zip_source_read(src, bytes.data(), st.size);
    zip_source_close(src);
    if (n != static_cast<zip_int64_t>(st.size)) bytes.clear();
  }
  zip_source_free(src);
  if (bytes.empty()) throw FileError("save_model", path, "the archive's bytes", "libzip gave none");
  return bytes;
}

// ------------------------------------------------------------------ Keras 3 weights

// The member names of a Keras 3 `vars` group as numbers, sorted numerically ("10" after
// "9"). A name that is not a number of at most 5 digits: empty result, *not_numeric set.
std::vector<std::size_t> numeric_children(const h5::Reader& f, const std::string& group, std::string* not_numeric) {
  std::vector<std::size_t> out;
  for (const auto& n : f.children(group)) {
    if (n.empty() || n.size() > 5 || !std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      if (not_numeric) *not_numeric = n;
      return {};
    }
    out.push_back(std::stoul(n));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// "layers/<snake_case class>[_k]" for each model layer, in order (Keras's container
// naming); `functional` adds the InputLayer entry Keras's Functional.layers holds.
std::vector<std::string> keras3_layer_keys(const nn::Model& model, bool functional, std::string* input_key) {
  std::map<std::string, int> used;
  auto key_for = [&](const std::string& cls) {
    const std::string base = keras::snake_case(cls);
    const int k = used[base]++;
    return k == 0 ? base : base + "_" + std::to_string(k);
  };
  if (functional) {
    const std::string key = key_for("InputLayer");
    if (input_key) *input_key = key;
  }
  std::vector<std::string> keys;
  for (const auto& layer : model.layers()) keys.push_back(key_for(layer->class_name()));
  return keys;
}

bool is_functional(const nn::Model& model) { return dynamic_cast<const nn::Sequential*>(&model) == nullptr; }

// The variables of `model`'s layers under `layers_group` ("/layers", or a nested model's
// "<group>/layers"), appended to `out` in model.weights() order.
void read_keras3_layers(nn::Model& model, const h5::Reader& f, const std::string& layers_group, std::vector<Tensor>& out) {
  const auto keys = keras3_layer_keys(model, is_functional(model), nullptr);
  std::set<std::string> visited;
  for (std::size_t li = 0; li < model.layers().size(); ++li) {
    nn::Layer& layer = *model.layers()[li];
    const std::vector<Variable*> vars = layer.weights();
    const std::string group = layers_group + "/" + keys[li] + "/vars";
    visited.insert(keys[li]);
    if (vars.empty()) continue;
    if (auto* nested = dynamic_cast<nn::Model*>(&layer)) {
      read_keras3_layers(*nested, f, layers_group + "/" + keys[li] + "/layers", out);
      continue;
    }
    if (!f.has_group(group)) {
      throw FormatError(f.name(), keras::layer_label(layer),
                        std::to_string(vars.size()) + " variables in the group " + group, "no such group");
    }
    std::string not_numeric;
    const std::vector<std::size_t> indices = numeric_children(f, group, &not_numeric);
    if (!not_numeric.empty()) {
      throw FormatError(f.name(), keras::layer_label(layer), "variables named 0, 1, 2, ... in " + printable(group), printable_quoted(not_numeric));
    }
    if (indices.size() != vars.size()) {
      std::string expected;
      for (const Variable* v : vars) expected += (expected.empty() ? "" : ", ") + v->name;
      throw FormatError(f.name(), keras::layer_label(layer), std::to_string(vars.size()) + " variables (" + expected + ") in " + group,
                        std::to_string(indices.size()));
    }
    for (std::size_t i = 0; i < vars.size(); ++i) {
      if (indices[i] != i) throw FormatError(f.name(), keras::layer_label(layer), "variables 0.." + std::to_string(vars.size() - 1), "a gap at " + std::to_string(i));
      const std::string what = keras::layer_label(layer) + " variable " + vars[i]->name + " (" + group + "/" + std::to_string(i) + ")";
      Tensor t = f.read_floats(group + "/" + std::to_string(i), what, vars[i]->name == "count");
      if (t.shape() != vars[i]->value.shape()) {
        throw FormatError(f.name(), what, "shape " + vars[i]->value.shape().str(), "shape " + t.shape().str());
      }
      out.push_back(std::move(t));
    }
  }
  // Layers with variables in the file that the model does not have.
  if (f.has_group(layers_group)) {
    for (const std::string& key : f.children(layers_group)) {
      if (visited.count(key)) continue;
      const std::string group = layers_group + "/" + key + "/vars";
      if (f.has_group(group) && !f.children(group).empty()) {
        throw FormatError(f.name(), layers_group + "/" + key,
                          "only the model's layers (" + std::to_string(model.layers().size()) + ")",
                          "variables of a layer the model does not have");
      }
    }
  }
}

std::vector<Tensor> read_keras3_weights(nn::Model& model, const h5::Reader& f) {
  std::string layers_group = "/layers";
  if (!f.has_group(layers_group) && f.has_group("/_layer_checkpoint_dependencies")) {
    layers_group = "/_layer_checkpoint_dependencies";  // Keras 2.13 files
  }
  std::vector<Tensor> out;
  read_keras3_layers(model, f, layers_group, out);
  return out;
}

// The optimizer slots in Keras's `optimizer.variables` order (after iteration and
// learning_rate): for each slot group, for each variable, the group's slots. One order
// for the writers (Keras 3 and tf.keras) and for the reader (import_slots).
std::vector<std::pair<Variable*, std::string>> keras_slot_order(const std::vector<Variable*>& vars,
                                                                const std::vector<std::vector<std::string>>& groups) {
  std::vector<std::pair<Variable*, std::string>> order;
  for (const auto& group : groups)
    for (Variable* v : vars)
      for (const std::string& slot : group) order.emplace_back(v, slot);
  return order;
}

// The slot's value, or the zeros Keras creates for a slot bnorm has not created yet.
Tensor slot_or_zeros(const nn::Optimizer& opt, const Variable* v, const std::string& slot) {
  const Tensor* t = opt.slot(v, slot);
  return t ? *t : Tensor(v->value.shape(), 0.0f);
}

// Keras 3's optimizer/vars for a compiled model: 0 iterations (int64), 1 learning rate
// (float32), then for each slot group, for each trainable variable, its slots (a slot
// bnorm has not created yet is zeros, as Keras creates it).
void write_keras3_optimizer(nn::Model& model, h5::Writer& w) {
  const nn::Optimizer* opt = model.optimizer();
  if (!opt) return;
  const std::string group = "/optimizer/vars";
  w.make_groups(group);
  w.string_attribute(group, "name", opt->name());
  w.write_int64(group + "/0", opt->iterations());
  Tensor lr{Shape{}};
  lr[0] = static_cast<float>(opt->learning_rate());
  w.write_floats(group + "/1", lr);
  std::size_t index = 2;
  for (const auto& [v, slot] : keras_slot_order(model.trainable_weights(), opt->slot_name_groups())) {
    w.write_floats(group + "/" + std::to_string(index++), slot_or_zeros(*opt, v, slot));
  }
}

// Keras 3's compile_config for a compiled model (null when not compiled).
json keras3_compile_config(const nn::Model& model) {
  const nn::Optimizer* opt = model.optimizer();
  if (!opt || !model.loss()) return nullptr;
  json c = {{"name", opt->name()},
            {"learning_rate", opt->learning_rate()},
            {"weight_decay", nullptr},
            {"clipnorm", opt->clip_options().clipnorm ? json(*opt->clip_options().clipnorm) : json(nullptr)},
            {"global_clipnorm", opt->clip_options().global_clipnorm ? json(*opt->clip_options().global_clipnorm) : json(nullptr)},
            {"clipvalue", opt->clip_options().clipvalue ? json(*opt->clip_options().clipvalue) : json(nullptr)},
            {"use_ema", false},
            {"ema_momentum", 0.99},
            {"ema_overwrite_frequency", nullptr},
            {"loss_scale_factor", nullptr},
            {"gradient_accumulation_steps", nullptr}};
  if (const auto* sgd = dynamic_cast<const nn::SGD*>(opt)) {
    c["momentum"] = sgd->options().momentum;
    c["nesterov"] = sgd->options().nesterov;
  } else if (const auto* adam = dynamic_cast<const nn::Adam*>(opt)) {
    c["beta_1"] = adam->options().beta_1;
    c["beta_2"] = adam->options().beta_2;
    c["epsilon"] = adam->options().epsilon;
    c["amsgrad"] = adam->options().amsgrad;
  } else if (const auto* rms = dynamic_cast<const nn::RMSprop*>(opt)) {
    c["rho"] = rms->options().rho;
    c["momentum"] = rms->options().momentum;
    c["epsilon"] = rms->options().epsilon;
    c["centered"] = rms->options().centered;
  } else {
    return nullptr;
  }
  json metrics = model.metric_names().empty() ? json(nullptr) : json(model.metric_names());
  return {{"optimizer", {{"module", "keras.optimizers"}, {"class_name", opt->class_name()}, {"config", c}, {"registered_name", nullptr}}},
          {"loss", model.loss()->name()},
          {"loss_weights", nullptr},
          {"metrics", metrics},
          {"weighted_metrics", nullptr},
          {"run_eagerly", false},
          {"steps_per_execution", 1},
          {"jit_compile", false}};
}

void write_keras3_layers(nn::Model& model, h5::Writer& w, const std::string& layers_group) {
  std::string input_key;
  const bool functional = is_functional(model);
  const auto keys = keras3_layer_keys(model, functional, &input_key);
  w.make_groups(layers_group);
  if (functional) {
    w.make_groups(layers_group + "/" + input_key + "/vars");
    w.string_attribute(layers_group + "/" + input_key + "/vars", "name", keras::input_layer_name(model));
  }
  for (std::size_t li = 0; li < model.layers().size(); ++li) {
    nn::Layer& layer = *model.layers()[li];
    const std::string group = layers_group + "/" + keys[li] + "/vars";
    w.make_groups(group);
    w.string_attribute(group, "name", layer.name());
    if (auto* nested = dynamic_cast<nn::Model*>(&layer)) {
      write_keras3_layers(*nested, w, layers_group + "/" + keys[li] + "/layers");
      continue;
    }
    const auto vars = layer.weights();
    for (std::size_t i = 0; i < vars.size(); ++i) w.write_floats(group + "/" + std::to_string(i), vars[i]->value);
  }
}

void write_keras3_weights(nn::Model& model, h5::Writer& w) {
  write_keras3_layers(model, w, "/layers");
  w.make_groups("/vars");
  w.string_attribute("/vars", "name", model.name());
  write_keras3_optimizer(model, w);
}

// ------------------------------------------------------------------ legacy weights

std::string strip_suffix(std::string s) {
  if (const auto colon = s.rfind(':'); colon != std::string::npos) s.resize(colon);
  if (const auto slash = s.rfind('/'); slash != std::string::npos) s = s.substr(slash + 1);
  return s;
}

// The variables of a model's layers with the (innermost) layer holding each, in
// model.weights() order.
std::vector<std::pair<nn::Layer*, Variable*>> leaf_variables(nn::Model& model) {
  std::vector<std::pair<nn::Layer*, Variable*>> out;
  for (const auto& [path, layer] : model.flattened_layers()) {
    if (dynamic_cast<nn::Model*>(layer.get())) continue;  // its layers follow
    for (Variable* v : layer->weights()) out.emplace_back(layer.get(), v);
  }
  return out;
}

std::vector<Tensor> read_legacy_weights(nn::Model& model, const h5::Reader& f, const std::string& root) {
  const std::vector<std::string> names = f.string_list_attribute(root, "layer_names");
  struct FileLayer {
    std::string name;
    std::vector<std::string> weight_names;
  };
  std::vector<FileLayer> file_layers;
  for (const auto& n : names) {
    const std::string group = (root == "/" ? "" : root) + "/" + n;
    if (!f.has_group(group)) throw FormatError(f.name(), "layer " + printable_quoted(n), "a group " + printable(group) + " (listed in layer_names)", "none");
    std::vector<std::string> weight_names = f.has_attribute(group, "weight_names") ? f.string_list_attribute(group, "weight_names")
                                                                                   : std::vector<std::string>{};
    if (!weight_names.empty()) file_layers.push_back({n, std::move(weight_names)});
  }
  std::vector<nn::Layer*> model_layers;
  for (const auto& layer : model.layers())
    if (!layer->weights().empty()) model_layers.push_back(layer.get());
  if (file_layers.size() != model_layers.size()) {
    std::string file_list, model_list;
    for (const auto& fl : file_layers) file_list += (file_list.empty() ? "" : ", ") + printable(fl.name);
    for (const auto* l : model_layers) model_list += (model_list.empty() ? "" : ", ") + l->name();
    throw FormatError(f.name(), "layer_names", std::to_string(model_layers.size()) + " layers with weights (" + model_list + ")",
                      std::to_string(file_layers.size()) + " (" + printable(file_list, 200) + ")");
  }
  std::vector<Tensor> out;
  for (std::size_t i = 0; i < model_layers.size(); ++i) {
    nn::Layer& layer = *model_layers[i];
    const FileLayer& fl = file_layers[i];
    const auto vars = layer.weights();
    const std::string label = keras::layer_label(layer) + " (file layer " + printable_quoted(fl.name) + ")";
    if (fl.weight_names.size() != vars.size()) {
      std::string expected, got;
      for (const Variable* v : vars) expected += (expected.empty() ? "" : ", ") + v->name;
      for (const auto& wn : fl.weight_names) got += (got.empty() ? "" : ", ") + printable(wn);
      throw FormatError(f.name(), label, std::to_string(vars.size()) + " weights (" + expected + ")",
                        std::to_string(fl.weight_names.size()) + " (" + printable(got, 200) + ")");
    }
    if (auto* nested = dynamic_cast<nn::Model*>(&layer)) {
      // A nested model's group lists "<inner layer>/<variable>:0" in tf.keras's order
      // (trainable first, which moves with the trainable flags): matched by name.
      std::map<std::string, std::string> by_name;
      for (const auto& wn : fl.weight_names) {
        std::string key = wn;
        if (const auto colon = key.rfind(':'); colon != std::string::npos) key.resize(colon);
        by_name.emplace(key, wn);
      }
      for (const auto& [leaf, v] : leaf_variables(*nested)) {
        std::vector<std::string> keys{leaf->name() + "/" + v->name};
        if (v->name == "kernel" && leaf->class_name() == "DepthwiseConv2D") keys.push_back(leaf->name() + "/depthwise_kernel");
        const std::string what = label + " variable " + leaf->name() + "/" + v->name;
        std::string found;
        for (const auto& key : keys)
          if (const auto it = by_name.find(key); it != by_name.end()) found = it->second;
        if (found.empty()) throw FormatError(f.name(), what, "a weight named " + printable_quoted(keys.front() + ":0"), "none");
        Tensor t = f.read_floats((root == "/" ? "" : root) + "/" + fl.name + "/" + found, what, v->name == "count");
        if (t.shape() != v->value.shape()) {
          throw FormatError(f.name(), what, "shape " + v->value.shape().str(), "shape " + t.shape().str());
        }
        out.push_back(std::move(t));
      }
      continue;
    }
    for (std::size_t k = 0; k < vars.size(); ++k) {
      const std::string path = (root == "/" ? "" : root) + "/" + fl.name + "/" + fl.weight_names[k];
      const std::string what = label + " variable " + vars[k]->name + " (" + printable_quoted(fl.weight_names[k]) + ")";
      // Positional, as Keras loads; a name that says another variable is refused.
      static const std::set<std::string> kKnown{"kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"};
      const std::string stored = strip_suffix(fl.weight_names[k]);
      if (kKnown.count(stored) && kKnown.count(vars[k]->name) && stored != vars[k]->name) {
        throw FormatError(f.name(), what, "the weight " + vars[k]->name, printable_quoted(fl.weight_names[k]));
      }
      Tensor t = f.read_floats(path, what, vars[k]->name == "count");
      if (t.shape() != vars[k]->value.shape()) {
        throw FormatError(f.name(), what, "shape " + vars[k]->value.shape().str(), "shape " + t.shape().str());
      }
      out.push_back(std::move(t));
    }
  }
  return out;
}

void write_legacy_weights(nn::Model& model, h5::Writer& w, const std::string& root) {
  std::vector<std::string> names;
  const bool functional = is_functional(model);
  if (functional) names.push_back(keras::input_layer_name(model));
  for (const auto& layer : model.layers()) names.push_back(layer->name());
  const std::string base = root == "/" ? "" : root;
  if (!base.empty()) w.make_groups(base);
  w.string_list_attribute(root, "layer_names", names);
  w.string_attribute(root, "backend", "tensorflow");
  w.string_attribute(root, "keras_version", kLegacyKerasVersion);
  if (functional) {
    w.make_groups(base + "/" + names.front());
    w.string_list_attribute(base + "/" + names.front(), "weight_names", {});
  }
  for (const auto& layer : model.layers()) {
    const std::string group = base + "/" + layer->name();
    w.make_groups(group);
    std::vector<std::string> weight_names;
    if (auto* nested = dynamic_cast<nn::Model*>(layer.get())) {
      // tf.keras's order for a nested model: its trainable weights, then the others.
      const auto leaves = leaf_variables(*nested);
      std::set<const Variable*> trainable;
      for (const Variable* v : nested->trainable_weights()) trainable.insert(v);
      for (const bool pass : {true, false}) {
        for (const auto& [leaf, v] : leaves) {
          if ((trainable.count(v) > 0) != pass) continue;
          weight_names.push_back(leaf->name() + "/" + v->name + ":0");
          w.write_floats(group + "/" + weight_names.back(), v->value);
        }
      }
    } else {
      for (const Variable* v : layer->weights()) {
        weight_names.push_back(layer->name() + "/" + v->name + ":0");
        w.write_floats(group + "/" + weight_names.back(), v->value);
      }
    }
    w.string_list_attribute(group, "weight_names", weight_names);
  }
}

// tf.keras's training_config and optimizer_weights for a compiled model, so that
// tf.keras's load_model compiles it and restores the optimizer: the optimizer config
// under tf.keras's registered name ("Custom>Adam"), iteration:0, then the slots named
// "<Optimizer>/<m|v|...>/<layer>/<variable>:0" in Keras's order (for each slot group,
// for each trainable variable). tf.keras's SGD keeps momentum slots even at momentum 0:
// they are written as zeros.
void write_legacy_training(nn::Model& model, h5::Writer& w) {
  const nn::Optimizer* opt = model.optimizer();
  json compile = keras3_compile_config(model);
  if (!opt || compile.is_null()) return;
  json optimizer = compile["optimizer"];
  json c = optimizer["config"];
  for (const char* key : {"loss_scale_factor", "gradient_accumulation_steps"}) c.erase(key);
  c["jit_compile"] = false;
  c["is_legacy_optimizer"] = false;
  // The loss by its full Keras name: Keras 3's legacy loader cannot deserialize the
  // short aliases ("mse": "Could not deserialize 'keras.metrics.mse'", also for files
  // tf.keras writes), while both frameworks read "mean_squared_error".
  static const std::map<std::string, std::string> kFullName{{"mse", "mean_squared_error"},
                                                            {"mae", "mean_absolute_error"},
                                                            {"mape", "mean_absolute_percentage_error"},
                                                            {"msle", "mean_squared_logarithmic_error"}};
  std::string loss = compile["loss"].get<std::string>();
  if (const auto it = kFullName.find(loss); it != kFullName.end()) loss = it->second;
  json training = {{"loss", loss},
                   {"metrics", compile["metrics"]},
                   {"weighted_metrics", nullptr},
                   {"loss_weights", nullptr},
                   {"optimizer_config", {{"class_name", "Custom>" + opt->class_name()}, {"config", c}}}};
  w.string_attribute("/", "training_config", training.dump());
  // tf.keras's slot names: Adam m, v, vhat; SGD m; RMSprop velocity, momentum, average_gradient.
  auto short_name = [&](const std::string& slot) -> std::string {
    if (opt->class_name() == "RMSprop") return slot;
    if (slot == "momentum") return "m";
    if (slot == "velocity") return "v";
    if (slot == "velocity_hat") return "vhat";
    return slot;
  };
  std::vector<std::vector<std::string>> groups = opt->slot_name_groups();
  if (opt->class_name() == "SGD" && groups.empty()) groups = {{"momentum"}};
  const std::string root = "/optimizer_weights";
  std::vector<std::string> names{"iteration:0"};
  w.write_int64(root + "/iteration:0", opt->iterations());
  // Variable names as tf.keras writes them: "<layer name>/<variable>".
  std::map<const Variable*, std::string> layer_of;
  for (const auto& layer : model.layers())
    for (const Variable* v : layer->weights()) layer_of.emplace(v, layer->name());
  for (const auto& [v, slot] : keras_slot_order(model.trainable_weights(), groups)) {
    names.push_back(opt->class_name() + "/" + short_name(slot) + "/" + layer_of[v] + "/" + v->name + ":0");
    w.write_floats(root + "/" + names.back(), slot_or_zeros(*opt, v, slot));
  }
  w.string_list_attribute(root, "weight_names", names);
}

// The group of a legacy file holding layer_names: the root (weights-only files) or
// model_weights (full-model files).
std::optional<std::string> legacy_root(const h5::Reader& f) {
  if (f.has_attribute("/", "layer_names") || f.has_attribute("/", "layer_names0")) return "/";
  if (f.has_group("/model_weights") &&
      (f.has_attribute("/model_weights", "layer_names") || f.has_attribute("/model_weights", "layer_names0"))) {
    return "/model_weights";
  }
  return std::nullopt;
}

bool is_keras3_weights(const h5::Reader& f) {
  return f.has_group("/layers") || f.has_group("/_layer_checkpoint_dependencies") || f.has_group("/vars");
}

std::vector<Tensor> read_hdf5_weights(nn::Model& model, const h5::Reader& f) {
  if (const auto root = legacy_root(f)) return read_legacy_weights(model, f, *root);
  if (is_keras3_weights(f)) return read_keras3_weights(model, f);
  throw FormatError(f.name(), "", "Keras weights (a 'layers' group, or a 'layer_names' attribute)",
                    "an HDF5 file with neither");
}

json parse_json(const std::string& text, const std::string& name, const std::string& what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(name, what, "valid JSON", "a parse error (" + printable(e.what(), 200) + ")");
  }
}

std::string today() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d@%H:%M:%S", &tm);
  return buf;
}

std::string keras3_weights_bytes(nn::Model& model) {
  h5::Writer w;
  write_keras3_weights(model, w);
  return w.finish();
}

// ------------------------------------------------------------------ compile state

// The optimizer a Keras optimizer config describes, or null when bnorm has no such
// optimizer or an option it does not implement is set (a learning-rate schedule,
// weight decay, EMA, gradient accumulation, loss scaling).
std::shared_ptr<nn::Optimizer> optimizer_from(const json& j) {
  if (!j.is_object() || !j.contains("class_name") || !j["class_name"].is_string()) return nullptr;
  std::string cls = j["class_name"].get<std::string>();
  if (cls.rfind("Custom>", 0) == 0) cls = cls.substr(7);  // tf_keras's registered names
  const json c = j.contains("config") && j["config"].is_object() ? j["config"] : json::object();
  auto number = [&](const char* key, double fallback) -> std::optional<double> {
    const auto it = c.find(key);
    if (it == c.end() || it->is_null()) return fallback;
    if (!it->is_number()) return std::nullopt;
    return it->get<double>();
  };
  auto optional_number = [&](const char* key) -> std::optional<double> {
    const auto it = c.find(key);
    return it == c.end() || !it->is_number() ? std::nullopt : std::optional<double>(it->get<double>());
  };
  for (const char* unsupported : {"weight_decay", "loss_scale_factor", "gradient_accumulation_steps"}) {
    if (c.contains(unsupported) && !c[unsupported].is_null()) return nullptr;
  }
  if (c.value("use_ema", false) == true) return nullptr;
  const auto lr = number("learning_rate", cls == "SGD" ? 0.01 : 0.001);
  if (!lr) return nullptr;  // a schedule
  auto boolean = [&](const char* key) { return c.contains(key) && c[key].is_boolean() && c[key].get<bool>(); };
  auto clip = [&](auto& o) {
    o.clipnorm = optional_number("clipnorm");
    o.clipvalue = optional_number("clipvalue");
    o.global_clipnorm = optional_number("global_clipnorm");
  };
  try {
    if (cls == "SGD") {
      nn::SGDOptions o{.learning_rate = *lr, .momentum = number("momentum", 0.0).value_or(0.0), .nesterov = boolean("nesterov")};
      clip(o);
      return std::make_shared<nn::SGD>(o);
    }
    if (cls == "Adam") {
      nn::AdamOptions o{.learning_rate = *lr, .beta_1 = number("beta_1", 0.9).value_or(0.9),
                        .beta_2 = number("beta_2", 0.999).value_or(0.999), .epsilon = number("epsilon", 1e-7).value_or(1e-7),
                        .amsgrad = boolean("amsgrad")};
      clip(o);
      return std::make_shared<nn::Adam>(o);
    }
    if (cls == "RMSprop") {
      nn::RMSpropOptions o{.learning_rate = *lr, .rho = number("rho", 0.9).value_or(0.9),
                           .momentum = number("momentum", 0.0).value_or(0.0), .epsilon = number("epsilon", 1e-7).value_or(1e-7),
                           .centered = boolean("centered")};
      clip(o);
      return std::make_shared<nn::RMSprop>(o);
    }
  } catch (const Error&) {
    return nullptr;  // hyper-parameters bnorm refuses
  }
  return nullptr;
}

// Compiles `model` as a Keras compile_config / training_config says (`optimizer_key`:
// "optimizer" or "optimizer_config"); false, and the model left uncompiled, when
// something in it is not supported.
bool compile_from(nn::Model& model, const json& config, const char* optimizer_key) {
  if (!config.is_object() || !config.contains(optimizer_key)) return false;
  auto optimizer = optimizer_from(config[optimizer_key]);
  const json loss = config.value("loss", json());
  if (!optimizer || !loss.is_string()) return false;
  for (const char* unsupported : {"loss_weights", "weighted_metrics"}) {
    if (config.contains(unsupported) && !config[unsupported].is_null()) return false;
  }
  std::vector<std::string> metrics;
  if (const json m = config.value("metrics", json()); m.is_array()) {
    for (const json& name : m) {
      if (!name.is_string()) return false;
      metrics.push_back(name.get<std::string>());
    }
  } else if (!m.is_null()) {
    return false;
  }
  try {
    std::shared_ptr<nn::Loss> l(nn::make_loss(loss.get<std::string>()));
    model.compile(std::move(optimizer), std::move(l), metrics);
  } catch (const Error&) {
    return false;
  }
  return true;
}

// Slot tensors in Keras's order (slot_name_groups: for each group, for each trainable
// variable, the group's slots) -> import_state's per-variable lists. False when the count
// or a shape does not fit.
bool import_slots(nn::Model& model, std::int64_t iterations, double learning_rate, std::vector<Tensor> tensors) {
  nn::Optimizer& opt = *model.optimizer();
  const auto vars = model.trainable_weights();
  const auto order = keras_slot_order(vars, opt.slot_name_groups());
  if (tensors.size() != order.size()) return false;
  // import_state takes, per variable, its slots in slot_names() order.
  const std::vector<std::string> names = opt.slot_names();
  std::vector<nn::Optimizer::VariableSlotState> slots;
  std::map<const Variable*, std::size_t> index_of;
  if (!names.empty()) {
    for (Variable* v : vars) {
      index_of[v] = slots.size();
      slots.push_back({v, std::vector<Tensor>(names.size())});
    }
  }
  for (std::size_t i = 0; i < order.size(); ++i) {
    const auto& [v, slot] = order[i];
    if (tensors[i].shape() != v->value.shape()) return false;
    const auto k = static_cast<std::size_t>(std::find(names.begin(), names.end(), slot) - names.begin());
    slots[index_of[v]].tensors[k] = std::move(tensors[i]);
  }
  try {
    opt.import_state(iterations, learning_rate, std::move(slots));
  } catch (const Error&) {
    return false;
  }
  return true;
}

// The optimizer iteration count a file records: Keras 3's optimizer/vars/0, or
// tf.keras's "iteration:0" (older: "iterations:0") optimizer weight, named by the first
// entry of optimizer_weights @weight_names.
std::optional<std::int64_t> keras3_iterations(const h5::Reader& f) { return f.read_integer_scalar("/optimizer/vars/0"); }

std::optional<std::int64_t> legacy_iterations(const h5::Reader& f, const std::vector<std::string>& weight_names) {
  if (weight_names.empty()) return std::nullopt;
  const std::string leaf = strip_suffix(weight_names.front());
  if (leaf != "iteration" && leaf != "iterations") return std::nullopt;
  return f.read_integer_scalar("/optimizer_weights/" + weight_names.front());
}

std::vector<std::string> legacy_optimizer_weight_names(const h5::Reader& f) {
  if (!f.has_group("/optimizer_weights") || !f.has_attribute("/optimizer_weights", "weight_names")) return {};
  return f.string_list_attribute("/optimizer_weights", "weight_names");
}

// Keras 3: optimizer/vars/0 = iterations, 1 = learning_rate, then the slots. Left as
// compiled (fresh state) when the file holds no state for these variables.
void restore_keras3_optimizer(nn::Model& model, const h5::Reader& f) {
  const std::string group = "/optimizer/vars";
  if (!f.has_group(group)) return;
  const auto indices = numeric_children(f, group, nullptr);
  if (indices.size() < 2) return;
  for (std::size_t i = 0; i < indices.size(); ++i)
    if (indices[i] != i) return;
  const auto iterations = keras3_iterations(f);
  if (!iterations || *iterations < 0) return;
  const Tensor lr = f.read_floats(group + "/1", "optimizer learning_rate");
  if (lr.numel() != 1) return;
  std::vector<Tensor> tensors;
  for (std::size_t i = 2; i < indices.size(); ++i) {
    tensors.push_back(f.read_floats(group + "/" + std::to_string(i), "optimizer variable " + std::to_string(i)));
  }
  import_slots(model, *iterations, static_cast<double>(lr[0]), std::move(tensors));
}

// tf.keras: optimizer_weights @weight_names = "iteration:0", then the slots
// ("Adam/m/dense/kernel:0", ...) in the same order as Keras 3; the learning rate is in
// the training config (already set). tf.keras's SGD keeps momentum slots even with
// momentum 0; bnorm's has none, and then only the iteration count is taken.
void restore_legacy_optimizer(nn::Model& model, const h5::Reader& f) {
  const auto names = legacy_optimizer_weight_names(f);
  const auto iterations = legacy_iterations(f, names);
  if (!iterations || *iterations < 0) return;
  std::vector<Tensor> tensors;
  for (std::size_t i = 1; i < names.size(); ++i) {
    tensors.push_back(f.read_floats("/optimizer_weights/" + names[i], "optimizer weight '" + names[i] + "'"));
  }
  nn::Optimizer& opt = *model.optimizer();
  if (opt.slot_names().empty()) tensors.clear();
  import_slots(model, *iterations, opt.learning_rate(), std::move(tensors));
}

}  // namespace

std::unique_ptr<nn::Model> load_model(const std::string& path, const LoadModelOptions& options) {
  return load_model_bytes(read_file_bytes(path), path, options);
}

namespace {
std::unique_ptr<nn::Model> read_model_bytes(const std::string& bytes, const std::string& path,
                                            const LoadModelOptions& options) {
  switch (kind_of(bytes)) {
    case Kind::keras_archive: {
      const Archive archive = read_archive(bytes, path);
      const json config = parse_json(archive.config, path, "config.json");
      auto model = keras::model_from_config(config, path, nn::KerasVersion::keras3);
      const h5::Reader f = archive_weights(archive, path);
      model->set_weights(read_keras3_weights(*model, f));
      if (options.compile && config.contains("compile_config") && compile_from(*model, config["compile_config"], "optimizer")) {
        restore_keras3_optimizer(*model, f);
      }
      if (options.notes && model->has_recorded_training()) {
        options.notes->push_back(
            path + ": a call records a training argument; " +
            (options.nested_training == nn::NestedTraining::recorded_wins
                 ? "bnorm honours it (tf.keras's rule and the Keras guide's), while Keras 3, which wrote the file, replaces "
                   "it with the outer mode: in fit its batch normalization would use and update batch statistics"
                 : "as Keras 3 does, the outer mode replaces it (nested_training = outer_mode_wins)"));
      }
      return model;
    }
    case Kind::hdf5: {
      const h5::Reader f = h5::Reader::open_image(bytes, path);
      if (!f.has_attribute("/", "model_config")) {
        throw FormatError(path, "model_config", "a full model file (legacy .h5 with a model_config attribute)",
                          "a weights-only file: build the model in code and call load_weights");
      }
      const std::string version = f.has_attribute("/", "keras_version") ? f.string_attribute("/", "keras_version") : "1";
      const auto keras_version = version.rfind("3", 0) == 0 ? nn::KerasVersion::keras3 : nn::KerasVersion::keras2;
      auto model = keras::model_from_config(parse_json(f.string_attribute("/", "model_config"), path, "model_config"), path,
                                            keras_version);
      const auto root = legacy_root(f);
      if (!root) throw FormatError(path, "model_weights", "a model_weights group with layer_names", "none");
      model->set_weights(read_legacy_weights(*model, f, *root));
      if (options.compile && f.has_attribute("/", "training_config")) {
        json training;
        try {
          training = json::parse(f.string_attribute("/", "training_config"));
        } catch (const json::exception&) {
          return model;  // not compiled, as Keras when it cannot read the training config
        }
        if (compile_from(*model, training, "optimizer_config")) restore_legacy_optimizer(*model, f);
      }
      return model;
    }
    case Kind::checkpoint:
      throw FormatError(path, "", "a model file (.keras or legacy .h5)",
                        "a bnorm checkpoint (weights only): build the model in code and call load_checkpoint");
    case Kind::other: break;
  }
  throw FormatError(path, "", "a model file (.keras zip archive or legacy .h5 HDF5 file)", describe(bytes));
}
}  // namespace

std::unique_ptr<nn::Model> load_model_bytes(const std::string& bytes, const std::string& path,
                                            const LoadModelOptions& options) {
  auto model = read_model_bytes(bytes, path, options);
  model->set_nested_training(options.nested_training);
  return model;
}

std::optional<std::int64_t> saved_optimizer_iterations(const std::string& path) {
  const std::string bytes = read_file_bytes("saved_optimizer_iterations", path);
  switch (kind_of(bytes)) {
    case Kind::keras_archive: return keras3_iterations(archive_weights(read_archive(bytes, path), path));
    case Kind::hdf5: {
      const h5::Reader f = h5::Reader::open_image(bytes, path);
      if (f.has_group("/optimizer")) return keras3_iterations(f);
      return legacy_iterations(f, legacy_optimizer_weight_names(f));
    }
    case Kind::checkpoint:
    case Kind::other: break;
  }
  return std::nullopt;
}

void save_model(nn::Model& model, const std::string& path) {
  require_built(model, "save_model");
  if (ends_with(path, ".keras")) {
    const json metadata = {{"keras_version", kKeras3Version}, {"date_saved", today()}, {"written_by", "bnorm"}};
    json config = keras::model_to_config(model, keras::Style::keras3);
    if (json compile = keras3_compile_config(model); !compile.is_null()) config["compile_config"] = std::move(compile);
    const std::string bytes = write_archive(
        {{"metadata.json", metadata.dump()}, {"config.json", config.dump()}, {"model.weights.h5", keras3_weights_bytes(model)}},
        path);
    write_file_atomically(path, bytes);
    return;
  }
  if (ends_with(path, ".h5") || ends_with(path, ".hdf5")) {
    if (ends_with(path, ".weights.h5")) {
      throw ArgumentError("save_model", "path", "a model file name (.keras, or .h5 for legacy tf.keras)",
                          "'" + path + "', a weights file name: use save_weights");
    }
    const json config = keras::model_to_config(model, keras::Style::legacy);
    h5::Writer w;
    w.string_attribute("/", "keras_version", kLegacyKerasVersion);
    w.string_attribute("/", "backend", "tensorflow");
    w.string_attribute("/", "model_config", config.dump());
    write_legacy_weights(model, w, "/model_weights");
    write_legacy_training(model, w);
    write_file_atomically(path, w.finish());
    return;
  }
  throw ArgumentError("save_model", "path", "a name ending in .keras (Keras 3) or .h5 (legacy tf.keras)", "'" + path + "'");
}

void load_weights(nn::Model& model, const std::string& path) {
  load_weights_bytes(model, read_file_bytes("load_weights", path), path);
}

void load_weights_bytes(nn::Model& model, const std::string& bytes, const std::string& path) {
  require_built(model, "load_weights");
  switch (kind_of(bytes)) {
    case Kind::keras_archive: {
      const Archive archive = read_archive(bytes, path);
      const h5::Reader f = archive_weights(archive, path);
      model.set_weights(read_keras3_weights(model, f));
      return;
    }
    case Kind::hdf5: {
      const h5::Reader f = h5::Reader::open_image(bytes, path);
      model.set_weights(read_hdf5_weights(model, f));
      return;
    }
    case Kind::checkpoint: load_checkpoint_bytes(model, bytes, path); return;
    case Kind::other: break;
  }
  throw FormatError(path, "", "a weights file (.weights.h5, legacy .h5, .keras, or a bnorm checkpoint)", describe(bytes));
}

void save_weights(nn::Model& model, const std::string& path) {
  require_built(model, "save_weights");
  if (ends_with(path, ".weights.h5")) {
    write_file_atomically(path, keras3_weights_bytes(model));
  } else if (ends_with(path, ".h5") || ends_with(path, ".hdf5")) {
    h5::Writer w;
    write_legacy_weights(model, w, "/");
    write_file_atomically(path, w.finish());
  } else if (ends_with(path, ".bnc")) {
    save_checkpoint(model, path);
  } else {
    throw ArgumentError("save_weights", "path",
                        "a name ending in .weights.h5 (Keras 3), .h5 (legacy tf.keras) or .bnc (bnorm checkpoint)",
                        "'" + path + "'");
  }
}

}  // namespace bnorm::io
