#include "bnorm/io/checkpoint.hpp"

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace bnorm::io {

namespace {

constexpr char kMagic[8] = {'B', 'N', 'R', 'M', 'W', 'T', 'S', '\0'};
constexpr std::uint32_t kVersion = 1;

struct Entry {
  std::string name;
  Shape shape;
  std::vector<float> values;
};

// Model variables with their file names, in model order.
std::vector<std::pair<std::string, nn::Variable*>> named_variables(nn::Model& model) {
  std::vector<std::pair<std::string, nn::Variable*>> out;
  for (const auto& layer : model.layers())
    for (nn::Variable* v : layer->weights()) out.emplace_back(layer->name() + "/" + v->name, v);
  return out;
}

template <typename T>
void put(std::string& buf, T v) {
  buf.append(reinterpret_cast<const char*>(&v), sizeof v);
}

class Reader {
 public:
  Reader(const std::string& data, std::string path) : data_(data), path_(std::move(path)) {}
  template <typename T>
  T get(const std::string& what) {
    T v;
    need(sizeof v, what);
    std::memcpy(&v, data_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }
  std::string bytes(std::size_t n, const std::string& what) {
    need(n, what);
    std::string s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  bool at_end() const { return pos_ == data_.size(); }

 private:
  void need(std::size_t n, const std::string& what) {
    if (data_.size() - pos_ < n) {
      throw FormatError(path_, what, std::to_string(n) + " more bytes", "end of file after " + std::to_string(pos_) + " bytes (truncated)");
    }
  }
  const std::string& data_;
  std::string path_;
  std::size_t pos_ = 0;
};

}  // namespace

void save_checkpoint(nn::Model& model, const std::string& path) {
  std::string buf(kMagic, sizeof kMagic);
  const auto vars = named_variables(model);
  put(buf, kVersion);
  put(buf, static_cast<std::uint32_t>(vars.size()));
  for (const auto& [name, v] : vars) {
    put(buf, static_cast<std::uint32_t>(name.size()));
    buf += name;
    put(buf, static_cast<std::uint32_t>(v->value.rank()));
    for (auto d : v->value.shape().dims()) put(buf, static_cast<std::int64_t>(d));
    buf.append(reinterpret_cast<const char*>(v->value.data()), static_cast<std::size_t>(v->value.numel()) * sizeof(float));
  }
  // Atomic replace: write a temporary file beside the target, fsync, rename.
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw FileError(path, "path", "a writable location", std::strerror(errno));
  std::size_t written = 0;
  while (written < buf.size()) {
    const ssize_t n = ::write(fd, buf.data() + written, buf.size() - written);
    if (n <= 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      throw FileError(path, "write", "all bytes written", why);
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0 || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw FileError(path, "save", "the file replaced atomically", why);
  }
}

void load_checkpoint(nn::Model& model, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path, "path", "a readable bnorm weights file", "cannot open it");
  const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Reader r(data, path);
  if (r.bytes(sizeof kMagic, "magic") != std::string(kMagic, sizeof kMagic)) {
    throw FormatError(path, "magic", "a bnorm weights file (\"BNRMWTS\")", "other content");
  }
  const auto version = r.get<std::uint32_t>("version");
  if (version != kVersion) throw FormatError(path, "version", "1", std::to_string(version));
  const auto vars = named_variables(model);
  const auto count = r.get<std::uint32_t>("count");
  if (count != vars.size()) {
    throw FormatError(path, "count", std::to_string(vars.size()) + " variables (the model's)", std::to_string(count));
  }
  std::vector<Entry> entries;
  for (const auto& [name, v] : vars) {
    Entry e;
    const auto len = r.get<std::uint32_t>("name length");
    if (len > 4096) throw FormatError(path, "name length", "at most 4096", std::to_string(len));
    e.name = r.bytes(len, "variable name");
    if (e.name != name) throw FormatError(path, "variable " + name, "that name at this position", "'" + e.name + "'");
    const auto rank = r.get<std::uint32_t>(name + " rank");
    if (rank != static_cast<std::uint32_t>(v->value.rank())) {
      throw FormatError(path, name, "rank " + std::to_string(v->value.rank()), "rank " + std::to_string(rank));
    }
    std::vector<std::int64_t> dims;
    for (std::uint32_t i = 0; i < rank; ++i) dims.push_back(r.get<std::int64_t>(name + " shape"));
    e.shape = Shape(dims);
    if (e.shape != v->value.shape()) throw FormatError(path, name, "shape " + v->value.shape().str(), e.shape.str());
    const std::string raw = r.bytes(static_cast<std::size_t>(v->value.numel()) * sizeof(float), name + " values");
    e.values.resize(static_cast<std::size_t>(v->value.numel()));
    std::memcpy(e.values.data(), raw.data(), raw.size());
    entries.push_back(std::move(e));
  }
  if (!r.at_end()) throw FormatError(path, "file size", "no bytes after the last variable", "trailing bytes");
  for (std::size_t i = 0; i < vars.size(); ++i) {  // everything checked: assign
    vars[i].second->value = Tensor(entries[i].shape, std::move(entries[i].values));
  }
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
  save_checkpoint(model, path);
  last_saved_ = path;
  if (options_.verbose > 0) std::printf("Epoch %d: saving model to %s\n", epoch + 1, path.c_str());
}

}  // namespace bnorm::io
