// bnorm native checkpoint: format and contract in bnorm/io/checkpoint.hpp.
#include "bnorm/io/checkpoint.hpp"

#include "file_bytes.hpp"

#include <atomic>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <zlib.h>

#include "bnorm/nn/layers.hpp"

namespace bnorm::io {

static_assert(std::endian::native == std::endian::little, "the checkpoint reader and writer assume a little-endian host");

namespace {

constexpr char kMagicV1[8] = {'B', 'N', 'R', 'M', 'W', 'T', 'S', '\0'};
constexpr char kMagicV2[8] = {'B', 'N', 'R', 'M', 'C', 'K', 'P', 'T'};
constexpr std::uint32_t kVersion = 2;
constexpr std::uint32_t kFlagOptimizer = 1;
constexpr std::uint32_t kMaxString = 4096;

// Model variables with their file names ("<layer>/<variable>", the innermost layer for
// models nested in the model), in model order.
std::vector<std::pair<std::string, nn::Variable*>> named_variables(nn::Model& model) {
  std::vector<std::pair<std::string, nn::Variable*>> out;
  for (const auto& [path, layer] : model.flattened_layers()) {
    if (dynamic_cast<nn::Model*>(layer.get())) continue;  // its layers follow
    for (nn::Variable* v : layer->weights()) out.emplace_back(layer->name() + "/" + v->name, v);
  }
  return out;
}

// ---------------------------------------------------------------- writing

template <typename T>
void put(std::string& buf, T v) {
  buf.append(reinterpret_cast<const char*>(&v), sizeof v);
}
void put_string(std::string& buf, const std::string& s) {
  put(buf, static_cast<std::uint32_t>(s.size()));
  buf += s;
}
void put_values(std::string& buf, const Tensor& t) {
  buf.append(reinterpret_cast<const char*>(t.data()), static_cast<std::size_t>(t.numel()) * sizeof(float));
}

// zlib's CRC-32 (crc32_z takes a size_t length: no 4 GiB limit).
std::uint32_t checksum(std::string_view bytes) {
  return static_cast<std::uint32_t>(
      crc32_z(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
}

// ---------------------------------------------------------------- reading

class Reader {
 public:
  Reader(std::string_view data, const std::string& path) : data_(data), path_(path) {}
  template <typename T>
  T get(const std::string& what) {
    T v;
    need(sizeof v, what);
    std::memcpy(&v, data_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }
  std::string_view bytes(std::size_t n, const std::string& what) {
    need(n, what);
    const std::string_view s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string string(const std::string& what) {
    const auto len = get<std::uint32_t>(what + " length");
    if (len > kMaxString) throw FormatError(path_, what, "a length of at most 4096", std::to_string(len));
    return std::string(bytes(len, what));
  }
  // A count of entries that take at least `min_bytes` each: larger than the rest of the
  // file can hold is a hostile or corrupt count, refused before any allocation.
  std::uint32_t count(std::size_t min_bytes, const std::string& what) {
    const auto n = get<std::uint32_t>(what);
    if (static_cast<std::uint64_t>(n) * min_bytes > remaining()) {
      throw FormatError(path_, what, "at most " + std::to_string(remaining() / min_bytes) + " (what the rest of the file can hold)",
                        std::to_string(n) + " (truncated or corrupt)");
    }
    return n;
  }
  // numel float32 values of `shape`.
  Tensor tensor(const Shape& shape, const std::string& what) {
    const std::string_view raw = bytes(static_cast<std::size_t>(shape.numel()) * sizeof(float), what);
    Tensor t(shape);
    if (!raw.empty()) std::memcpy(t.data(), raw.data(), raw.size());
    return t;
  }
  std::size_t remaining() const { return data_.size() - pos_; }
  std::size_t position() const { return pos_; }
  bool at_end() const { return pos_ == data_.size(); }
  const std::string& path() const { return path_; }

 private:
  void need(std::size_t n, const std::string& what) {
    if (remaining() < n) {
      throw FormatError(path_, what, std::to_string(n) + " more bytes",
                        "end of file after " + std::to_string(pos_) + " bytes (truncated)");
    }
  }
  std::string_view data_;
  const std::string& path_;
  std::size_t pos_ = 0;
};

// A shape read from the file, checked against the model variable's before anything
// the size of it is allocated.
Shape read_shape(Reader& r, const std::string& name, const Tensor& expected) {
  const auto rank = r.get<std::uint32_t>(name + " rank");
  if (rank != static_cast<std::uint32_t>(expected.rank())) {
    throw FormatError(r.path(), name, "rank " + std::to_string(expected.rank()), "rank " + std::to_string(rank));
  }
  std::vector<std::int64_t> dims;
  for (std::uint32_t i = 0; i < rank; ++i) dims.push_back(r.get<std::int64_t>(name + " shape"));
  if (dims != expected.shape().dims()) {
    std::string got = "(";
    for (std::size_t i = 0; i < dims.size(); ++i) got += (i ? ", " : "") + std::to_string(dims[i]);
    throw FormatError(r.path(), name, "shape " + expected.shape().str(), got + (dims.size() == 1 ? ",)" : ")"));
  }
  return expected.shape();
}

// ---------------------------------------------------------------- optimizer identity

// The hyper-parameters that must agree for a resumed run to follow the saved one (the
// learning rate is state, restored). NaN marks an unset clip option.
std::vector<std::pair<std::string, double>> hyper_parameters(const nn::Optimizer& o) {
  const double unset = std::numeric_limits<double>::quiet_NaN();
  const auto& clip = o.clip_options();
  std::vector<std::pair<std::string, double>> h;
  if (const auto* sgd = dynamic_cast<const nn::SGD*>(&o)) {
    h = {{"momentum", sgd->options().momentum}, {"nesterov", sgd->options().nesterov ? 1.0 : 0.0}};
  } else if (const auto* adam = dynamic_cast<const nn::Adam*>(&o)) {
    h = {{"beta_1", adam->options().beta_1},
         {"beta_2", adam->options().beta_2},
         {"epsilon", adam->options().epsilon},
         {"amsgrad", adam->options().amsgrad ? 1.0 : 0.0}};
  } else if (const auto* rms = dynamic_cast<const nn::RMSprop*>(&o)) {
    h = {{"rho", rms->options().rho},
         {"momentum", rms->options().momentum},
         {"epsilon", rms->options().epsilon},
         {"centered", rms->options().centered ? 1.0 : 0.0}};
  }
  h.emplace_back("clipnorm", clip.clipnorm.value_or(unset));
  h.emplace_back("clipvalue", clip.clipvalue.value_or(unset));
  h.emplace_back("global_clipnorm", clip.global_clipnorm.value_or(unset));
  return h;
}

std::string number(double v) {
  if (std::isnan(v)) return "unset";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// ---------------------------------------------------------------- layer state

struct LayerState {
  std::string layer, class_name;
  std::vector<std::pair<std::string, std::uint64_t>> values;
};

std::vector<LayerState> layer_states(nn::Model& model) {
  std::vector<LayerState> out;
  for (const auto& [path, layer] : model.flattened_layers()) {
    if (auto* d = dynamic_cast<nn::Dropout*>(layer.get())) {
      out.push_back({d->name(), d->class_name(), {{"seed", d->seed()}, {"calls", d->calls()}}});
    }
  }
  return out;
}

// ---------------------------------------------------------------- version 1

void load_v1(nn::Model& model, Reader& r) {
  const auto version = r.get<std::uint32_t>("version");
  if (version != 1) throw FormatError(r.path(), "version", "1 (magic BNRMWTS)", std::to_string(version));
  const auto vars = named_variables(model);
  const auto count = r.get<std::uint32_t>("count");
  if (count != vars.size()) {
    throw FormatError(r.path(), "count", std::to_string(vars.size()) + " variables (the model's)", std::to_string(count));
  }
  std::vector<Tensor> values;
  for (const auto& [name, v] : vars) {
    const auto len = r.get<std::uint32_t>("name length");
    if (len > kMaxString) throw FormatError(r.path(), "name length", "at most 4096", std::to_string(len));
    const std::string_view got = r.bytes(len, "variable name");
    if (got != name) throw FormatError(r.path(), "variable " + name, "that name at this position", "'" + std::string(got) + "'");
    values.push_back(r.tensor(read_shape(r, name, v->value), name + " values"));
  }
  if (!r.at_end()) throw FormatError(r.path(), "file size", "no bytes after the last variable", "trailing bytes");
  for (std::size_t i = 0; i < vars.size(); ++i) vars[i].second->value = std::move(values[i]);  // all checked: assign
}

// ---------------------------------------------------------------- version 2

struct Staged {
  std::vector<Tensor> weights;  // model order
  std::vector<std::pair<nn::Dropout*, std::pair<std::uint64_t, std::uint64_t>>> dropouts;  // (seed, calls)
  std::int64_t epochs_completed = 0;
  bool optimizer = false;  // restore the optimizer below
  double learning_rate = 0;
  std::int64_t iterations = 0;
  std::vector<nn::Optimizer::VariableSlotState> slots;
};

void load_v2(nn::Model& model, Reader& r, std::string_view data) {
  const std::string& path = r.path();
  const auto version = r.get<std::uint32_t>("version");
  if (version != kVersion) throw FormatError(path, "version", "2 (magic BNRMCKPT)", std::to_string(version));
  const auto flags = r.get<std::uint32_t>("flags");
  if ((flags & ~kFlagOptimizer) != 0) throw FormatError(path, "flags", "only bit 0 (optimizer) set", std::to_string(flags));
  // The checksum covers every byte before the trailer.
  if (data.size() < r.position() + 4) {
    throw FormatError(path, "trailer", "a CRC-32 after the sections", "end of file after " + std::to_string(data.size()) + " bytes (truncated)");
  }
  std::uint32_t stored = 0;
  std::memcpy(&stored, data.data() + data.size() - 4, 4);
  if (stored != checksum(data.substr(0, data.size() - 4))) {
    throw FormatError(path, "checksum", "the CRC-32 of the contents", "a different one (truncated or corrupt file)");
  }
  Reader body(data.substr(0, data.size() - 4), path);
  body.bytes(r.position(), "header");

  Staged s;
  // Weights.
  const auto vars = named_variables(model);
  const auto count = body.count(8, "weight count");
  if (count != vars.size()) {
    throw FormatError(path, "weight count", std::to_string(vars.size()) + " variables (the model's)", std::to_string(count));
  }
  for (const auto& [name, v] : vars) {
    const std::string got = body.string("variable name");
    if (got != name) throw FormatError(path, "variable " + name, "that name at this position", "'" + got + "'");
    s.weights.push_back(body.tensor(read_shape(body, name, v->value), name + " values"));
  }
  // Layer state: one entry per stateful layer (Dropout), in model order, keys in the
  // order the writer writes them.
  const auto expected_layers = layer_states(model);
  const auto layer_count = body.count(12, "layer state count");
  if (layer_count != expected_layers.size()) {
    throw FormatError(path, "layer state count", std::to_string(expected_layers.size()) + " (the model's Dropout layers)",
                      std::to_string(layer_count));
  }
  for (const LayerState& want : expected_layers) {
    const std::string layer = body.string("layer name");
    const std::string class_name = body.string("layer " + layer + " class");
    if (layer != want.layer || class_name != want.class_name) {
      throw FormatError(path, "layer " + want.layer, "the state of " + want.class_name + " '" + want.layer + "' at this position",
                        "state of " + class_name + " '" + layer + "'");
    }
    const auto n = body.count(12, "layer " + layer + " value count");
    if (n != want.values.size()) {
      throw FormatError(path, "layer " + layer, std::to_string(want.values.size()) + " values", std::to_string(n));
    }
    std::vector<std::uint64_t> values;
    for (const auto& [want_key, unused] : want.values) {
      const std::string key = body.string("layer " + layer + " key");
      if (key != want_key) throw FormatError(path, "layer " + layer, "the key \"" + want_key + "\"", "\"" + key + "\"");
      values.push_back(body.get<std::uint64_t>("layer " + layer + " " + key));
    }
    auto* dropout = dynamic_cast<nn::Dropout*>(model.get_layer(layer).get());
    s.dropouts.push_back({dropout, {values.at(0), values.at(1)}});
  }
  // Training position.
  s.epochs_completed = body.get<std::int64_t>("epochs_completed");
  if (s.epochs_completed < 0 || s.epochs_completed > std::numeric_limits<int>::max()) {
    throw FormatError(path, "epochs_completed", "a count in [0, 2^31)", std::to_string(s.epochs_completed));
  }
  // Optimizer.
  if (flags & kFlagOptimizer) {
    nn::Optimizer* optimizer = model.optimizer();
    const std::string class_name = body.string("optimizer class");
    if (optimizer && class_name != optimizer->class_name()) {
      throw FormatError(path, "optimizer", optimizer->class_name() + " (the model's optimizer)", class_name);
    }
    const auto expected = optimizer ? hyper_parameters(*optimizer) : std::vector<std::pair<std::string, double>>{};
    const auto n = body.count(12, "optimizer hyper-parameter count");
    if (optimizer && n != expected.size()) {
      throw FormatError(path, "optimizer hyper-parameters", std::to_string(expected.size()), std::to_string(n));
    }
    for (std::uint32_t i = 0; i < n; ++i) {
      const std::string name = body.string("optimizer hyper-parameter name");
      const auto value = body.get<double>("optimizer " + name);
      if (!optimizer) continue;
      if (name != expected[i].first) {
        throw FormatError(path, "optimizer hyper-parameter " + std::to_string(i), "\"" + expected[i].first + "\"", "\"" + name + "\"");
      }
      // Bit for bit (an unset option is the one NaN the writer writes).
      if (std::bit_cast<std::uint64_t>(value) != std::bit_cast<std::uint64_t>(expected[i].second)) {
        throw FormatError(path, "optimizer " + name, number(expected[i].second) + " (the model's " + class_name + ")",
                          number(value));
      }
    }
    const float lr = std::bit_cast<float>(body.get<std::uint32_t>("optimizer learning_rate"));
    if (!(std::isfinite(lr) && lr >= 0.0f)) throw FormatError(path, "optimizer learning_rate", "a finite number >= 0", number(lr));
    s.learning_rate = static_cast<double>(lr);
    s.iterations = body.get<std::int64_t>("optimizer iterations");
    if (s.iterations < 0) throw FormatError(path, "optimizer iterations", "a count >= 0", std::to_string(s.iterations));
    const auto k = body.count(4, "optimizer slot name count");
    std::vector<std::string> slot_names;
    for (std::uint32_t i = 0; i < k; ++i) slot_names.push_back(body.string("optimizer slot name"));
    if (optimizer && slot_names != optimizer->slot_names()) {
      std::string want, got;
      for (const auto& x : optimizer->slot_names()) want += (want.empty() ? "" : ", ") + x;
      for (const auto& x : slot_names) got += (got.empty() ? "" : ", ") + x;
      throw FormatError(path, "optimizer slots", "(" + want + ")", "(" + got + ")");
    }
    std::map<std::string, nn::Variable*> by_name(vars.begin(), vars.end());
    const auto m = body.count(4, "optimizer slot variable count");
    std::set<std::string> with_slots;
    for (std::uint32_t i = 0; i < m; ++i) {
      const std::string name = body.string("optimizer slot variable");
      auto it = by_name.find(name);
      if (it == by_name.end()) throw FormatError(path, "optimizer slots of " + name, "a variable of the model", "an unknown name");
      if (!with_slots.insert(name).second) throw FormatError(path, "optimizer slots of " + name, "one entry", "a repeated entry");
      nn::Optimizer::VariableSlotState state{it->second, {}};
      for (const auto& slot : slot_names) state.tensors.push_back(body.tensor(it->second->value.shape(), name + " " + slot));
      s.slots.push_back(std::move(state));
    }
    s.optimizer = optimizer != nullptr;
  }
  if (!body.at_end()) throw FormatError(path, "file size", "no bytes between the last section and the checksum", "trailing bytes");

  // Everything checked: assign (nothing below throws for a validated file).
  if (s.optimizer) model.optimizer()->import_state(s.iterations, s.learning_rate, std::move(s.slots));
  for (std::size_t i = 0; i < vars.size(); ++i) vars[i].second->value = std::move(s.weights[i]);
  for (const auto& [d, state] : s.dropouts) d->set_generator_state(state.first, state.second);
  model.set_epochs_completed(static_cast<int>(s.epochs_completed));
}

// ---------------------------------------------------------------- atomic write

// Removes "<name>.tmp-<pid>-<n>" files beside `target` whose writer process is gone.
void remove_stale_temporaries(const std::filesystem::path& dir, const std::string& base) {
  std::error_code ec;
  const std::string prefix = base + ".tmp-";
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string file = it->path().filename().string();
    if (file.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = file.substr(prefix.size());
    char* stop = nullptr;
    const long pid = std::strtol(rest.c_str(), &stop, 10);
    if (pid <= 0 || stop == rest.c_str() || *stop != '-') continue;
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      std::error_code ignored;
      std::filesystem::remove(it->path(), ignored);
    }
  }
}

}  // namespace

void write_file_atomically(const std::string& path, std::string_view bytes) {
  namespace fs = std::filesystem;
  static std::atomic<std::uint64_t> counter{0};
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  remove_stale_temporaries(dir, target.filename().string());
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw FileError(path, "path", "a writable location", std::strerror(errno));
  auto fail = [&](const std::string& step) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    ::unlink(tmp.c_str());
    throw FileError(path, step, "success", why);
  };
  std::size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("write");
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) fail("fsync");
  if (::close(fd) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw FileError(path, "close", "success", why);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw FileError(path, "rename", "the file replaced atomically", why);
  }
  // The rename is durable once the folder is flushed. Some file systems refuse fsync on
  // a folder (EINVAL): the rename has happened and nothing better can be done there.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    const int rc = ::fsync(dfd);
    const int err = errno;
    ::close(dfd);
    if (rc != 0 && err != EINVAL) throw FileError(path, "fsync of the folder", "success", std::strerror(err));
  }
}

std::string checkpoint_bytes(nn::Model& model, const CheckpointOptions& options) {
  nn::Optimizer* optimizer = options.include_optimizer ? model.optimizer() : nullptr;
  std::string buf(kMagicV2, sizeof kMagicV2);
  put(buf, kVersion);
  put(buf, optimizer ? kFlagOptimizer : 0u);
  const auto vars = named_variables(model);
  put(buf, static_cast<std::uint32_t>(vars.size()));
  for (const auto& [name, v] : vars) {
    put_string(buf, name);
    put(buf, static_cast<std::uint32_t>(v->value.rank()));
    for (auto d : v->value.shape().dims()) put(buf, static_cast<std::int64_t>(d));
    put_values(buf, v->value);
  }
  const auto layers = layer_states(model);
  put(buf, static_cast<std::uint32_t>(layers.size()));
  for (const auto& l : layers) {
    put_string(buf, l.layer);
    put_string(buf, l.class_name);
    put(buf, static_cast<std::uint32_t>(l.values.size()));
    for (const auto& [key, value] : l.values) {
      put_string(buf, key);
      put(buf, value);
    }
  }
  put(buf, static_cast<std::int64_t>(model.epochs_completed()));
  if (optimizer) {
    put_string(buf, optimizer->class_name());
    const auto hyper = hyper_parameters(*optimizer);
    put(buf, static_cast<std::uint32_t>(hyper.size()));
    for (const auto& [name, value] : hyper) {
      put_string(buf, name);
      put(buf, value);
    }
    put(buf, std::bit_cast<std::uint32_t>(static_cast<float>(optimizer->learning_rate())));
    put(buf, static_cast<std::int64_t>(optimizer->iterations()));
    const auto slot_names = optimizer->slot_names();
    put(buf, static_cast<std::uint32_t>(slot_names.size()));
    for (const auto& n : slot_names) put_string(buf, n);
    std::map<const nn::Variable*, std::string> names;
    for (const auto& [name, v] : vars) names[v] = name;
    std::vector<std::pair<std::string, std::vector<Tensor>>> slots;
    for (auto& s : optimizer->export_slots()) {
      auto it = names.find(s.variable);
      if (it != names.end()) slots.emplace_back(it->second, std::move(s.tensors));  // not the model's: cannot be named
    }
    put(buf, static_cast<std::uint32_t>(slots.size()));
    for (const auto& [name, tensors] : slots) {
      put_string(buf, name);
      for (const Tensor& t : tensors) put_values(buf, t);
    }
  }
  put(buf, checksum(buf));
  return buf;
}

void save_checkpoint(nn::Model& model, const std::string& path, const CheckpointOptions& options) {
  const std::string bytes = checkpoint_bytes(model, options);
  write_file_atomically(path, bytes);
}

void load_checkpoint_bytes(nn::Model& model, std::string_view bytes, const std::string& name) {
  Reader r(bytes, name);
  const std::string_view magic = r.bytes(8, "magic");
  if (magic == std::string_view(kMagicV2, 8)) return load_v2(model, r, bytes);
  if (magic == std::string_view(kMagicV1, 8)) return load_v1(model, r);
  throw FormatError(name, "magic", "a bnorm checkpoint (\"BNRMCKPT\", or version 1 \"BNRMWTS\")", "other content");
}

void load_checkpoint(nn::Model& model, const std::string& path) {
  load_checkpoint_bytes(model, read_file_bytes("load_checkpoint", path), path);
}

bool is_checkpoint(std::string_view bytes) {
  return bytes.size() >= 8 && (bytes.substr(0, 8) == std::string_view(kMagicV2, 8) ||
                               bytes.substr(0, 8) == std::string_view(kMagicV1, 8));
}

ModelCheckpoint::ModelCheckpoint(std::string filepath, ModelCheckpointOptions options)
    : filepath_(std::move(filepath)), options_(std::move(options)) {
  if (options_.mode != "auto" && options_.mode != "min" && options_.mode != "max") {
    throw ArgumentError("ModelCheckpoint", "mode", "\"auto\", \"min\" or \"max\"", "\"" + options_.mode + "\"");
  }
  maximize_ = options_.mode == "max" || (options_.mode == "auto" && options_.monitor.find("acc") != std::string::npos);
}

void ModelCheckpoint::on_train_begin(nn::Model&, int, std::int64_t) {
  best_ = maximize_ ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
}

void ModelCheckpoint::on_epoch_end(nn::Model& model, int epoch, const nn::Logs& logs) {
  if (options_.save_best_only) {
    auto it = logs.find(options_.monitor);
    if (it == logs.end()) {
      throw ArgumentError("ModelCheckpoint", "monitor", "a logged metric", "\"" + options_.monitor + "\"");
    }
    if (!(maximize_ ? it->second > best_ : it->second < best_)) return;
    best_ = it->second;
  }
  std::string path = filepath_;
  if (auto p = path.find("{epoch}"); p != std::string::npos) path.replace(p, 7, std::to_string(epoch + 1));
  save_checkpoint(model, path, {.include_optimizer = !options_.save_weights_only});
  last_saved_ = path;
  if (options_.verbose > 0) std::printf("Epoch %d: saving model to %s\n", epoch + 1, path.c_str());
}

}  // namespace bnorm::io
