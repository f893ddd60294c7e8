#include "bnorm/io/idx.hpp"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <system_error>

#include "bnorm/core/text.hpp"

namespace bnorm::io {

namespace {

// zlib's gzerror text, without the "path: " prefix it adds (the message names the file already).
std::string zlib_message(gzFile file, const std::string& path, int* code) {
  std::string msg = gzerror(file, code);
  if (msg.rfind(path + ": ", 0) == 0) msg.erase(0, path.size() + 2);
  return msg;
}

std::string hex_bytes(const std::vector<std::uint8_t>& b, std::size_t n) {
  std::string s;
  char buf[8];
  for (std::size_t i = 0; i < std::min(n, b.size()); ++i) {
    std::snprintf(buf, sizeof buf, "%s0x%02X", i ? " " : "", b[i]);
    s += buf;
  }
  return s.empty() ? "an empty file" : s;
}

bool known_type(std::uint8_t code) {
  switch (code) {
    case 0x08:
    case 0x09:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x0E:
      return true;
    default:
      return false;
  }
}

// The whole (decompressed) content. gzread passes a file without the gzip magic through
// unchanged, so one path reads both forms.
std::vector<std::uint8_t> read_all(const std::filesystem::path& path) {
  const std::string p = path.string();
  const std::string shown = printable(p, 0);
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) {
    throw FileError(shown, "", "an existing file", "no such file");
  }
  if (std::filesystem::is_directory(status)) {
    throw FileError(shown, "", "a file", "a directory");
  }
  std::unique_ptr<gzFile_s, int (*)(gzFile)> file(gzopen(p.c_str(), "rb"), gzclose);
  if (!file) {
    throw FileError(shown, "", "a readable file", errno ? std::strerror(errno) : "gzopen failed");
  }
  gzbuffer(file.get(), 1u << 20);
  std::vector<std::uint8_t> out;
  constexpr unsigned kChunk = 1u << 22;
  for (;;) {
    const std::size_t at = out.size();
    out.resize(at + kChunk);
    const int got = gzread(file.get(), out.data() + at, kChunk);
    if (got < 0) {
      int code = 0;
      const std::string msg = zlib_message(file.get(), p, &code);
      if (code == Z_ERRNO) throw FileError(shown, "", "a readable file", std::strerror(errno));
      throw FormatError(shown, "", "a valid gzip stream", "a corrupt one (zlib: " + printable(msg) + ")");
    }
    out.resize(at + static_cast<std::size_t>(got));
    if (got == 0) break;
  }
  // A gzip stream cut short reads as a short, error-free read followed by this error.
  int code = 0;
  const std::string msg = zlib_message(file.get(), p, &code);
  if (code != Z_OK) {
    throw FormatError(shown, "", "a complete gzip stream", "a truncated or corrupt one (zlib: " + printable(msg) + ")");
  }
  return out;
}

}  // namespace

std::string to_string(IdxType type) {
  switch (type) {
    case IdxType::u8:
      return "uint8";
    case IdxType::i8:
      return "int8";
    case IdxType::i16:
      return "int16";
    case IdxType::i32:
      return "int32";
    case IdxType::f32:
      return "float32";
    case IdxType::f64:
      return "float64";
  }
  return "unknown";
}

std::size_t element_size(IdxType type) {
  switch (type) {
    case IdxType::u8:
    case IdxType::i8:
      return 1;
    case IdxType::i16:
      return 2;
    case IdxType::i32:
    case IdxType::f32:
      return 4;
    case IdxType::f64:
      return 8;
  }
  return 1;
}

std::int64_t IdxArray::numel() const {
  std::int64_t n = 1;
  for (auto d : dims) n *= d;
  return n;
}

IdxArray read_idx(const std::filesystem::path& path) {
  const std::string file = printable(path.string(), 0);
  std::vector<std::uint8_t> bytes = read_all(path);
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0 || !known_type(bytes[2]) || bytes[3] == 0 ||
      bytes[3] > kMaxRank) {
    throw FormatError(
        file, "",
        "an IDX file (bytes 0x00 0x00, a type code 0x08/0x09/0x0B/0x0C/0x0D/0x0E, a rank 1 to " +
            std::to_string(kMaxRank) + ")",
        "first bytes " + hex_bytes(bytes, 4));
  }
  IdxArray a;
  a.type = static_cast<IdxType>(bytes[2]);
  const std::size_t rank = bytes[3];
  const std::size_t header = 4 + 4 * rank;
  if (bytes.size() < header) {
    throw FormatError(file, "header", count_of(static_cast<long long>(header), "byte") + " for rank " + std::to_string(rank),
                      count_of(static_cast<long long>(bytes.size()), "byte") + " (truncated)");
  }
  std::uint64_t numel = 1;
  for (std::size_t i = 0; i < rank; ++i) {
    const std::uint8_t* d = bytes.data() + 4 + 4 * i;
    const std::uint32_t dim = (std::uint32_t{d[0]} << 24) | (std::uint32_t{d[1]} << 16) |
                              (std::uint32_t{d[2]} << 8) | std::uint32_t{d[3]};
    a.dims.push_back(dim);
    numel *= dim;
    if (numel > (std::numeric_limits<std::uint64_t>::max() >> 4)) {
      throw FormatError(file, "header", "dimensions whose product fits in memory",
                        "dimension " + std::to_string(dim));
    }
  }
  const std::size_t esize = element_size(a.type);
  const std::uint64_t need = numel * esize;
  const std::uint64_t have = bytes.size() - header;
  std::string shape = "(";
  for (std::size_t i = 0; i < rank; ++i) shape += (i ? ", " : "") + std::to_string(a.dims[i]);
  shape += rank == 1 ? ",)" : ")";
  if (have != need) {
    throw FormatError(
        file, "data",
        count_of(static_cast<long long>(need), "byte") + " for " + to_string(a.type) + " elements of shape " + shape,
        std::to_string(have) + (have < need ? " (truncated)" : " (trailing bytes)"));
  }
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(header));
  // Big-endian on disk: swap multi-byte elements on a little-endian host.
  if (esize > 1 && std::endian::native == std::endian::little) {
    for (std::size_t i = 0; i < bytes.size(); i += esize)
      std::reverse(bytes.begin() + i, bytes.begin() + i + esize);
  }
  a.data = std::move(bytes);
  return a;
}

Tensor to_tensor(const IdxArray& array, double scale) {
  Tensor t{Shape(array.dims)};
  const std::uint8_t* src = array.data.data();
  float* y = t.data();
  const std::int64_t n = t.numel();
  auto load = [&]<typename T>(T, std::int64_t i) {
    T v;
    std::memcpy(&v, src + static_cast<std::size_t>(i) * sizeof(T), sizeof(T));
    return v;
  };
  for (std::int64_t i = 0; i < n; ++i) {
    double v = 0.0;
    switch (array.type) {
      case IdxType::u8:
        v = src[i];
        break;
      case IdxType::i8:
        v = load(std::int8_t{}, i);
        break;
      case IdxType::i16:
        v = load(std::int16_t{}, i);
        break;
      case IdxType::i32:
        v = load(std::int32_t{}, i);
        break;
      case IdxType::f32:
        v = load(float{}, i);
        break;
      case IdxType::f64:
        v = load(double{}, i);
        break;
    }
    y[i] = static_cast<float>(v * scale);
  }
  return t;
}

}  // namespace bnorm::io
