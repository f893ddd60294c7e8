// safetensors reader and PyTorch state_dict loaders: contract in bnorm/io/safetensors.hpp.
// The checks follow the reference implementation (huggingface/safetensors,
// safetensors/src/tensor.rs: MAX_HEADER_SIZE, validate()).
#include "bnorm/io/safetensors.hpp"

#include "file_bytes.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "bnorm/nn/batch_normalization.hpp"

namespace bnorm::io {

static_assert(std::endian::native == std::endian::little, "the safetensors reader assumes a little-endian host");

namespace {

constexpr std::uint64_t kMaxHeader = 100'000'000;  // the reference reader's MAX_HEADER_SIZE

struct DtypeInfo {
  const char* name;
  std::size_t size;
};
// Every dtype of the format (safetensors Dtype enum), with its element size.
constexpr DtypeInfo kDtypes[] = {{"BOOL", 1}, {"U8", 1},     {"I8", 1},     {"F8_E5M2", 1}, {"F8_E4M3", 1},
                                 {"I16", 2},  {"U16", 2},    {"F16", 2},    {"BF16", 2},    {"I32", 4},
                                 {"U32", 4},  {"F32", 4},    {"F64", 8},    {"I64", 8},     {"U64", 8},
                                 {"C64", 8}};

std::size_t dtype_size(const std::string& dtype) {
  for (const auto& d : kDtypes)
    if (dtype == d.name) return d.size;
  return 0;
}

std::string tensor_arg(const std::string& name) { return "tensor '" + name + "'"; }

std::string shape_str(const std::vector<std::int64_t>& s) {
  std::string out = "(";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t mant = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

// A throwing SAX-callback guard: repeated keys and nesting deeper than the format has.
struct HeaderGuard {
  std::vector<std::set<std::string>> keys;
  std::string problem;
};

}  // namespace

std::int64_t SafetensorsTensor::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

SafetensorsFile::SafetensorsFile(std::string_view bytes, std::string path) : path_(std::move(path)) {
  if (bytes.size() < 8) {
    throw FormatError(path_, "header length", "8 bytes (u64 little-endian)",
                      std::to_string(bytes.size()) + " bytes in the file (truncated, or not a safetensors file)");
  }
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  if (n > kMaxHeader) {
    throw FormatError(path_, "header length", "at most 100000000 bytes", std::to_string(n) + " (not a safetensors file?)");
  }
  if (n > bytes.size() - 8) {
    throw FormatError(path_, "header length", "at most the " + std::to_string(bytes.size() - 8) + " bytes after it",
                      std::to_string(n) + " (truncated file)");
  }
  if (n < 2 || bytes[8] != '{') throw FormatError(path_, "header", "a JSON object starting with '{'", "other content");
  const std::string_view text = bytes.substr(8, static_cast<std::size_t>(n));
  const std::string_view buffer = bytes.substr(8 + static_cast<std::size_t>(n));

  using json = nlohmann::json;
  HeaderGuard guard;
  json::parser_callback_t callback = [&guard](int depth, json::parse_event_t event, json& parsed) {
    if (!guard.problem.empty()) return false;
    if (depth > 3) guard.problem = "nesting deeper than the format's 3 levels";
    if (event == json::parse_event_t::object_start) guard.keys.emplace_back();
    if (event == json::parse_event_t::object_end && !guard.keys.empty()) guard.keys.pop_back();
    if (event == json::parse_event_t::key && !guard.keys.empty() && parsed.is_string()) {
      if (!guard.keys.back().insert(parsed.get<std::string>()).second) {
        guard.problem = "the key \"" + parsed.get<std::string>() + "\" repeated";
      }
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text.begin(), text.end(), callback);
  } catch (const json::exception& e) {
    throw FormatError(path_, "header", "valid JSON", std::string("a parse error (") + e.what() + ")");
  }
  if (!guard.problem.empty()) throw FormatError(path_, "header", "a safetensors header", guard.problem);
  if (!header.is_object()) throw FormatError(path_, "header", "a JSON object", "another JSON value");

  struct Span {
    std::uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  std::map<std::string, SafetensorsTensor> tensors;
  std::map<std::string, std::string> metadata;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) throw FormatError(path_, "__metadata__", "an object of strings", "another JSON value");
      for (const auto& [k, v] : info.items()) {
        if (!v.is_string()) throw FormatError(path_, "__metadata__ \"" + k + "\"", "a string", "another JSON value");
        metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string arg = tensor_arg(name);
    if (!info.is_object() || info.size() != 3 || !info.contains("dtype") || !info.contains("shape") ||
        !info.contains("data_offsets")) {
      throw FormatError(path_, arg, "an object with exactly \"dtype\", \"shape\", \"data_offsets\"", info.dump().substr(0, 200));
    }
    SafetensorsTensor t;
    if (!info["dtype"].is_string()) throw FormatError(path_, arg, "a dtype string", info["dtype"].dump().substr(0, 100));
    t.dtype = info["dtype"].get<std::string>();
    const std::size_t size = dtype_size(t.dtype);
    if (size == 0) throw FormatError(path_, arg, "a safetensors dtype (F32, F64, F16, BF16, I64, ...)", "\"" + t.dtype + "\"");
    const json& shape = info["shape"];
    if (!shape.is_array()) throw FormatError(path_, arg, "a shape array", shape.dump().substr(0, 100));
    // numel x size must fit the buffer, which bounds every product below (no overflow).
    for (const json& d : shape) {
      if (!d.is_number_unsigned()) throw FormatError(path_, arg, "non-negative integer dimensions", "shape " + shape.dump().substr(0, 100));
      const auto v = d.get<std::uint64_t>();
      if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        throw FormatError(path_, arg, "dimensions below 2^63", std::to_string(v));
      }
      t.shape.push_back(static_cast<std::int64_t>(v));
    }
    std::uint64_t numel = std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end() ? 0 : 1;
    for (auto v : t.shape) {
      if (numel == 0) break;
      if (numel > buffer.size() / static_cast<std::uint64_t>(v)) {
        throw FormatError(path_, arg, "a shape whose data fits the file's " + std::to_string(buffer.size()) + "-byte buffer",
                          "shape " + shape.dump().substr(0, 100));
      }
      numel *= static_cast<std::uint64_t>(v);
    }
    const json& offsets = info["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      throw FormatError(path_, arg, "data_offsets [begin, end] (non-negative integers)", offsets.dump().substr(0, 100));
    }
    const auto begin = offsets[0].get<std::uint64_t>(), end = offsets[1].get<std::uint64_t>();
    if (begin > end || end > buffer.size()) {
      throw FormatError(path_, arg, "data_offsets inside the " + std::to_string(buffer.size()) + "-byte buffer",
                        "[" + std::to_string(begin) + ", " + std::to_string(end) + "]");
    }
    if (end - begin != numel * size) {
      throw FormatError(path_, arg,
                        std::to_string(numel * size) + " bytes (" + shape_str(t.shape) + " of " + t.dtype + ")",
                        std::to_string(end - begin) + " bytes in data_offsets");
    }
    t.bytes.assign(buffer.substr(static_cast<std::size_t>(begin), static_cast<std::size_t>(end - begin)));
    auto [it, inserted] = tensors.emplace(name, std::move(t));
    spans.push_back({begin, end, &it->first});
  }
  // The buffer must be covered exactly: no overlap, no hole, nothing after the last.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t at = 0;
  for (const Span& s : spans) {
    if (s.begin < at) {
      throw FormatError(path_, tensor_arg(*s.name), "data not overlapping another tensor's",
                        "data_offsets starting at " + std::to_string(s.begin) + ", before the end " + std::to_string(at) + " of the previous tensor");
    }
    if (s.begin > at) {
      throw FormatError(path_, tensor_arg(*s.name), "data starting at " + std::to_string(at) + " (no hole in the buffer)",
                        "data_offsets starting at " + std::to_string(s.begin));
    }
    at = s.end;
  }
  if (at != buffer.size()) {
    throw FormatError(path_, "data buffer", std::to_string(at) + " bytes (the tensors' data)",
                      std::to_string(buffer.size()) + " bytes (trailing data)");
  }
  tensors_ = std::move(tensors);
  metadata_ = std::move(metadata);
}

const SafetensorsTensor& SafetensorsFile::at(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw FormatError(path_, tensor_arg(name), "a tensor of that name", "none (missing key)");
  return it->second;
}

Tensor SafetensorsFile::to_float(const std::string& name) const {
  const SafetensorsTensor& t = at(name);
  Tensor out{Shape(t.shape)};
  float* y = out.data();
  const auto n = static_cast<std::size_t>(t.numel());
  const char* raw = t.bytes.data();
  if (t.dtype == "F32") {
    if (n) std::memcpy(y, raw, n * 4);
  } else if (t.dtype == "F64") {
    for (std::size_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, raw + 8 * i, 8);
      y[i] = static_cast<float>(v);
    }
  } else if (t.dtype == "F16" || t.dtype == "BF16") {
    for (std::size_t i = 0; i < n; ++i) {
      std::uint16_t v;
      std::memcpy(&v, raw + 2 * i, 2);
      y[i] = t.dtype == "F16" ? half_to_float(v) : std::bit_cast<float>(static_cast<std::uint32_t>(v) << 16);
    }
  } else {
    throw FormatError(path_, tensor_arg(name), "a floating-point dtype (F32, F64, F16, BF16)", "\"" + t.dtype + "\"");
  }
  return out;
}

std::vector<std::int64_t> SafetensorsFile::to_int64(const std::string& name) const {
  const SafetensorsTensor& t = at(name);
  const auto n = static_cast<std::size_t>(t.numel());
  std::vector<std::int64_t> out(n);
  const char* raw = t.bytes.data();
  auto read = [&](auto type_tag) {
    using T = decltype(type_tag);
    for (std::size_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, raw + sizeof(T) * i, sizeof(T));
      out[i] = static_cast<std::int64_t>(v);
    }
  };
  if (t.dtype == "I64") read(std::int64_t{});
  else if (t.dtype == "I32") read(std::int32_t{});
  else if (t.dtype == "I16") read(std::int16_t{});
  else if (t.dtype == "I8") read(std::int8_t{});
  else if (t.dtype == "U8" || t.dtype == "BOOL") read(std::uint8_t{});
  else throw FormatError(path_, tensor_arg(name), "an integer dtype (I64, I32, I16, I8, U8, BOOL)", "\"" + t.dtype + "\"");
  return out;
}

SafetensorsFile read_safetensors(const std::string& path) {
  return SafetensorsFile(read_file_bytes("read_safetensors", path), path);
}

// ---------------------------------------------------------------- loaders

namespace {

// A float tensor of an exact shape.
Tensor expect_float(const SafetensorsFile& f, const std::string& name, const std::vector<std::int64_t>& shape,
                    const std::string& what) {
  Tensor t = f.to_float(name);
  if (t.shape().dims() != shape) {
    throw FormatError(f.path(), tensor_arg(name), "shape " + shape_str(shape) + " (" + what + ")", shape_str(t.shape().dims()));
  }
  return t;
}

// num_batches_tracked: an integer scalar >= 0 (PyTorch: 0-dim I64).
std::int64_t expect_counter(const SafetensorsFile& f, const std::string& name) {
  const auto& t = f.tensors().at(name);
  if (!t.shape.empty() && !(t.shape.size() == 1 && t.shape[0] == 1)) {
    throw FormatError(f.path(), tensor_arg(name), "a scalar (shape ())", shape_str(t.shape));
  }
  const auto v = f.to_int64(name);
  if (v.size() != 1 || v[0] < 0) throw FormatError(f.path(), tensor_arg(name), "a count >= 0", std::to_string(v.empty() ? 0 : v[0]));
  return v[0];
}

void require(const SafetensorsFile& f, const std::string& name, const std::string& what) {
  if (!f.contains(name)) throw FormatError(f.path(), tensor_arg(name), "a tensor of that name (" + what + ")", "none (missing key)");
}

// Keys "<prefix>..." not in `used`: PyTorch's unexpected keys.
void refuse_others(const SafetensorsFile& f, const std::string& prefix, const std::set<std::string>& used,
                   const std::string& what) {
  for (const auto& [name, t] : f.tensors()) {
    if (name.compare(0, prefix.size(), prefix) == 0 && !used.count(name)) {
      throw FormatError(f.path(), tensor_arg(name), "only the tensors of " + what, "an unexpected key");
    }
  }
}

struct StagedLinear {
  Tensor kernel;               // (in, out)
  std::optional<Tensor> bias;  // (out)
  std::int64_t in = 0;
};

StagedLinear stage_linear(nn::Dense& dense, const SafetensorsFile& f, const std::string& prefix) {
  const std::string what = "Linear for Dense '" + dense.name() + "'";
  const std::string w = prefix + "weight", b = prefix + "bias";
  require(f, w, what);
  Tensor weight = f.to_float(w);
  const std::int64_t out = dense.units();
  if (weight.rank() != 2 || weight.dim(0) != out) {
    throw FormatError(f.path(), tensor_arg(w), "shape (" + std::to_string(out) + ", in) (" + what + ")", shape_str(weight.shape().dims()));
  }
  const std::int64_t in = weight.dim(1);
  if (!dense.built() && in < 1) {
    throw FormatError(f.path(), tensor_arg(w), "an input size >= 1 to build Dense '" + dense.name() + "'", shape_str(weight.shape().dims()));
  }
  if (dense.built() && dense.kernel()->value.shape() != Shape{in, out}) {
    throw FormatError(f.path(), tensor_arg(w),
                      "shape (" + std::to_string(out) + ", " + std::to_string(dense.kernel()->value.dim(0)) + ") (" + what + ")",
                      shape_str(weight.shape().dims()));
  }
  StagedLinear s;
  s.in = in;
  s.kernel = Tensor(Shape{in, out});
  for (std::int64_t o = 0; o < out; ++o)
    for (std::int64_t i = 0; i < in; ++i) s.kernel[i * out + o] = weight[o * in + i];  // (out, in) -> (in, out)
  std::set<std::string> used{w};
  if (dense.options().use_bias) {
    require(f, b, what);
    s.bias = expect_float(f, b, {out}, what);
    used.insert(b);
  }
  refuse_others(f, prefix, used, what + (dense.options().use_bias ? "" : " (use_bias false: no bias)"));
  return s;
}

void assign_linear(nn::Dense& dense, StagedLinear s) {
  if (!dense.built()) dense.build(Shape{-1, s.in});
  dense.kernel()->value = std::move(s.kernel);
  if (s.bias) dense.bias()->value = std::move(*s.bias);
}

struct StagedBatchNorm {
  std::optional<Tensor> weight, bias, running_mean, running_var;
  std::int64_t num_batches_tracked = 0;
};

// The PyTorch module's keys for C channels; `affine` / `running` say which it has.
StagedBatchNorm stage_batch_norm(const SafetensorsFile& f, const std::string& prefix, std::int64_t channels, bool affine,
                                 bool running, const std::string& what) {
  StagedBatchNorm s;
  std::set<std::string> used;
  auto take = [&](const std::string& key) {
    require(f, prefix + key, what);
    used.insert(prefix + key);
    return expect_float(f, prefix + key, {channels}, what);
  };
  if (affine) {
    s.weight = take("weight");
    s.bias = take("bias");
  }
  if (running) {
    s.running_mean = take("running_mean");
    s.running_var = take("running_var");
    require(f, prefix + "num_batches_tracked", what);
    used.insert(prefix + "num_batches_tracked");
    s.num_batches_tracked = expect_counter(f, prefix + "num_batches_tracked");
  }
  refuse_others(f, prefix, used, what);
  return s;
}

// "features.10" < "features.2"? No: dotted paths compare component by component,
// numbers as numbers (nn.Sequential's order).
bool module_less(const std::string& a, const std::string& b) {
  auto split = [](const std::string& s) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (std::size_t dot; (dot = s.find('.', start)) != std::string::npos; start = dot + 1) parts.push_back(s.substr(start, dot - start));
    parts.push_back(s.substr(start));
    return parts;
  };
  auto numeric = [](const std::string& s) {
    return !s.empty() && s.size() < 19 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  const auto pa = split(a), pb = split(b);
  for (std::size_t i = 0; i < std::min(pa.size(), pb.size()); ++i) {
    if (pa[i] == pb[i]) continue;
    if (numeric(pa[i]) && numeric(pb[i])) return std::stoll(pa[i]) < std::stoll(pb[i]);
    return pa[i] < pb[i];
  }
  return pa.size() < pb.size();
}

}  // namespace

void load_torch_batch_norm(nn::TorchBatchNorm& bn, const SafetensorsFile& file, const std::string& prefix) {
  if (!bn.initialized()) {
    throw StateError("load_torch_batch_norm", "bn", "an initialized module (num_features known)",
                     "a lazy module before its first call");
  }
  StagedBatchNorm s = stage_batch_norm(file, prefix, bn.num_features(), bn.affine(), bn.has_running_stats(),
                                       "BatchNorm of " + std::to_string(bn.num_features()) + " features at '" + prefix + "'");
  if (s.weight) {
    *bn.weight() = std::move(*s.weight);
    *bn.bias() = std::move(*s.bias);
  }
  if (s.running_mean) {
    *bn.running_mean() = std::move(*s.running_mean);
    *bn.running_var() = std::move(*s.running_var);
    bn.set_num_batches_tracked(s.num_batches_tracked);
  }
}

void load_torch_linear(nn::Dense& dense, const SafetensorsFile& file, const std::string& prefix) {
  assign_linear(dense, stage_linear(dense, file, prefix));
}

void load_torch_state_dict(nn::Model& model, const SafetensorsFile& file, const std::string& prefix) {
  // Modules: key prefixes (up to the last '.') under `prefix`, in nn.Sequential order.
  std::vector<std::string> modules;
  for (const auto& [name, t] : file.tensors()) {
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = name.substr(prefix.size());
    const auto dot = rest.rfind('.');
    const std::string module = dot == std::string::npos ? "" : rest.substr(0, dot);
    if (std::find(modules.begin(), modules.end(), module) == modules.end()) modules.push_back(module);
  }
  std::sort(modules.begin(), modules.end(), module_less);
  std::vector<nn::Layer*> layers;
  for (const auto& l : model.layers()) {
    if (l->weights().empty() && l->built()) continue;
    if (!dynamic_cast<nn::Dense*>(l.get()) && !dynamic_cast<nn::BatchNormalization*>(l.get())) {
      if (l->weights().empty()) continue;
      throw ArgumentError("load_torch_state_dict", "model", "layers with weights that are Dense or BatchNormalization",
                          l->class_name() + " '" + l->name() + "'");
    }
    layers.push_back(l.get());
  }
  if (modules.size() != layers.size()) {
    std::string names;
    for (const auto& m : modules) names += (names.empty() ? "" : ", ") + ("'" + prefix + m + "'");
    throw FormatError(file.path(), "modules",
                      std::to_string(layers.size()) + " modules with weights (the model's Dense and BatchNormalization layers)",
                      std::to_string(modules.size()) + " (" + names + ")");
  }
  // Stage every module, then assign.
  std::vector<StagedLinear> linears;
  std::vector<StagedBatchNorm> norms;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const std::string p = prefix + (modules[i].empty() ? "" : modules[i] + ".");
    const bool is_norm = file.contains(p + "running_mean");
    const bool is_linear = !is_norm && file.contains(p + "weight") && file.tensors().at(p + "weight").shape.size() == 2;
    if (auto* dense = dynamic_cast<nn::Dense*>(layers[i])) {
      if (!is_linear) {
        throw FormatError(file.path(), "module '" + p + "'", "a Linear (2-D weight) for Dense '" + dense->name() + "'",
                          is_norm ? "a BatchNorm (running_mean)" : "another module");
      }
      linears.push_back(stage_linear(*dense, file, p));
    } else {
      auto* bn = dynamic_cast<nn::BatchNormalization*>(layers[i]);
      const std::string what = "BatchNorm for BatchNormalization '" + bn->name() + "'";
      if (!is_norm) {
        throw FormatError(file.path(), "module '" + p + "'", "a BatchNorm (running_mean) for BatchNormalization '" + bn->name() + "'",
                          is_linear ? "a Linear (2-D weight)" : "another module");
      }
      if (!bn->built()) {
        throw StateError("load_torch_state_dict", "BatchNormalization '" + bn->name() + "'", "a built layer (known input shape)",
                         "a layer not built yet");
      }
      if (bn->moving_mean()->value.rank() != 1) {
        throw ArgumentError("load_torch_state_dict", "BatchNormalization '" + bn->name() + "'",
                            "one channel axis (parameter shape (C))", "parameter shape " + bn->moving_mean()->value.shape().str());
      }
      if (bn->options().center != bn->options().scale) {
        throw ArgumentError("load_torch_state_dict", "BatchNormalization '" + bn->name() + "'",
                            "center and scale both on (PyTorch affine) or both off", "only one of them on");
      }
      norms.push_back(stage_batch_norm(file, p, bn->moving_mean()->value.dim(0), bn->options().scale, true, what));
    }
  }
  std::size_t li = 0, ni = 0;
  for (nn::Layer* l : layers) {
    if (auto* dense = dynamic_cast<nn::Dense*>(l)) {
      assign_linear(*dense, std::move(linears[li++]));
    } else {
      auto* bn = dynamic_cast<nn::BatchNormalization*>(l);
      StagedBatchNorm& s = norms[ni++];
      if (s.weight) {
        bn->gamma()->value = std::move(*s.weight);
        bn->beta()->value = std::move(*s.bias);
      }
      bn->moving_mean()->value = std::move(*s.running_mean);
      bn->moving_variance()->value = std::move(*s.running_var);
    }
  }
}

}  // namespace bnorm::io
