#include "bnorm/io/array_file.hpp"

#include "bnorm/core/text.hpp"
#include "bnorm/io/checkpoint.hpp"  // write_file_atomically
#include "file_bytes.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <vector>

namespace bnorm::io {

namespace {

// Errors name the file as `where` (printable: a path is user input too) and the place in
// it as `argument` ("line 2, column 3", "header"); values from the file go through
// printable_quoted(), so that a message stays one line of printable text.
std::string file_label(const std::string& path) {
  return printable(path, 0);
}

// ------------------------------------------------------------------------------ .npy

constexpr char kNpyMagic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};
constexpr const char* kSupported =
    "dtype float32, float64, int32, int64 or uint8 in little-endian byte order "
    "('<f4', '<f8', '<i4', '<i8', '|u1')";

enum class NpyType { f4, f8, i4, i8, u1 };

std::size_t npy_size(NpyType t) {
  switch (t) {
    case NpyType::f4: return 4;
    case NpyType::f8: return 8;
    case NpyType::i4: return 4;
    case NpyType::i8: return 8;
    case NpyType::u1: return 1;
  }
  return 1;
}

// A tiny reader of the header's Python dict literal: string keys, values that are
// strings, True/False, or tuples of integers.
class HeaderParser {
 public:
  HeaderParser(std::string text, std::string file) : s_(std::move(text)), file_(std::move(file)) {}

  void parse(std::string& descr, bool& fortran, std::vector<std::int64_t>& shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip_space();
    expect('{');
    for (;;) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = string_literal();
      skip_space();
      expect(':');
      skip_space();
      if (key == "descr") {
        if (peek() != '\'' && peek() != '"') fail("a string dtype such as '<f4' for 'descr'");
        descr = string_literal();
        have_descr = true;
      } else if (key == "fortran_order") {
        fortran = boolean();
        have_fortran = true;
      } else if (key == "shape") {
        shape = tuple();
        have_shape = true;
      } else {
        fail("only the keys 'descr', 'fortran_order' and 'shape'");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_space();
      if (peek() != '}') fail("',' or '}'");
    }
    if (!have_descr || !have_fortran || !have_shape) {
      throw FormatError(file_, "header", "a dict with 'descr', 'fortran_order' and 'shape'", shown());
    }
  }

 private:
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("'") + c + "'");
    ++pos_;
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError(file_, "header", "a dict literal with " + what + " at character " + std::to_string(pos_),
                      shown());
  }
  // The header without its padding, cut after 100 characters (a numpy header's dict is
  // about 70: the point of failure stays in view).
  std::string shown() const {
    std::string_view t = s_;
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.remove_suffix(1);
    return printable_quoted(t, 100);
  }
  std::string string_literal() {
    const char q = peek();
    if (q != '\'' && q != '"') fail("a quoted key");
    ++pos_;
    const std::size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] != q) ++pos_;
    if (pos_ >= s_.size()) fail("a closing quote");
    std::string out = s_.substr(start, pos_ - start);
    ++pos_;
    return out;
  }
  bool boolean() {
    if (s_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (s_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    fail("True or False for 'fortran_order'");
  }
  std::vector<std::int64_t> tuple() {
    std::vector<std::int64_t> dims;
    expect('(');
    for (;;) {
      skip_space();
      if (peek() == ')') break;
      if (!std::isdigit(static_cast<unsigned char>(peek()))) fail("non-negative integer dimensions in 'shape'");
      std::int64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(peek()))) {
        if (v > (std::numeric_limits<std::int64_t>::max() - 9) / 10) fail("dimensions that fit in 64 bits");
        v = v * 10 + (peek() - '0');
        ++pos_;
      }
      if (peek() == 'L') ++pos_;  // Python 2 long literals
      dims.push_back(v);
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_space();
      if (peek() != ')') fail("',' or ')' in 'shape'");
    }
    ++pos_;
    return dims;
  }

  std::string s_, file_;
  std::size_t pos_ = 0;
};

NpyType parse_descr(const std::string& descr, const std::string& file) {
  // '<' little-endian, '|' not applicable (single bytes), '=' native (x86-64 and
  // aarch64 Linux: little-endian), no prefix as '='. '>' big-endian is refused.
  std::string d = descr;
  char order = '=';
  if (!d.empty() && (d[0] == '<' || d[0] == '>' || d[0] == '|' || d[0] == '=')) {
    order = d[0];
    d = d.substr(1);
  }
  const bool single_byte = d == "u1";
  if (order == '>' && !single_byte) throw FormatError(file, "header 'descr'", kSupported, printable_quoted(descr));
  if (d == "f4") return NpyType::f4;
  if (d == "f8") return NpyType::f8;
  if (d == "i4") return NpyType::i4;
  if (d == "i8") return NpyType::i8;
  if (single_byte) return NpyType::u1;
  throw FormatError(file, "header 'descr'", kSupported, printable_quoted(descr));
}

template <typename T>
void convert(const char* src, std::size_t n, float* dst) {
  for (std::size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, src + i * sizeof(T), sizeof(T));
    dst[i] = static_cast<float>(v);
  }
}

std::uint32_t read_le(const std::string& data, std::size_t pos, std::size_t bytes) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < bytes; ++i)
    v |= static_cast<std::uint32_t>(static_cast<unsigned char>(data[pos + i])) << (8 * i);
  return v;
}

// ------------------------------------------------------------------------------ CSV

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return s;
}

bool parse_number(std::string_view field, float& out) {
  if (field.empty()) return false;
  const std::string s(field);
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return false;
  // Out of float range: +-inf, as numpy.float32(1e300) does; strtod's own ERANGE for
  // doubles (1e999) also gives +-inf. Underflow to 0 is fine.
  out = static_cast<float>(v);
  return true;
}

std::vector<std::string_view> split(std::string_view line, char delimiter) {
  std::vector<std::string_view> fields;
  std::size_t start = 0;
  for (;;) {
    const std::size_t p = line.find(delimiter, start);
    fields.push_back(trim(line.substr(start, p == std::string_view::npos ? std::string_view::npos : p - start)));
    if (p == std::string_view::npos) break;
    start = p + 1;
  }
  return fields;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

Tensor read_npy(const std::string& path) {
  const std::string data = read_file_bytes(path);
  const std::string file = file_label(path);
  if (data.size() < 8 || std::memcmp(data.data(), kNpyMagic, sizeof kNpyMagic) != 0) {
    throw FormatError(file, "", "a NumPy .npy file (starting with \"\\x93NUMPY\")",
                      data.empty() ? std::string("an empty file")
                                   : count_of(static_cast<long long>(data.size()), "byte") + " starting with " +
                                         printable_quoted(std::string_view(data).substr(0, 8)));
  }
  const int major = static_cast<unsigned char>(data[6]);
  const int minor = static_cast<unsigned char>(data[7]);
  if (major < 1 || major > 3 || minor != 0) {
    throw FormatError(file, "format version", "1.0, 2.0 or 3.0", std::to_string(major) + "." + std::to_string(minor));
  }
  const std::size_t length_bytes = major == 1 ? 2 : 4;
  if (data.size() < 8 + length_bytes) {
    throw FormatError(file, "header", "a complete header",
                      "end of file after " + count_of(static_cast<long long>(data.size()), "byte") + " (truncated)");
  }
  const std::size_t header_len = read_le(data, 8, length_bytes);
  const std::size_t header_start = 8 + length_bytes;
  if (data.size() - header_start < header_len) {
    throw FormatError(file, "header", count_of(static_cast<long long>(header_len), "byte"),
                      std::to_string(data.size() - header_start) + " (truncated)");
  }
  std::string descr;
  bool fortran = false;
  std::vector<std::int64_t> dims;
  HeaderParser(data.substr(header_start, header_len), file).parse(descr, fortran, dims);
  const NpyType type = parse_descr(descr, file);
  if (fortran) {
    throw FormatError(file, "header 'fortran_order'",
                      "False (C order; numpy.ascontiguousarray before saving)", "True");
  }
  if (static_cast<int>(dims.size()) > kMaxRank) {
    throw FormatError(file, "header 'shape'", "at most " + count_of(kMaxRank, "dimension"),
                      std::to_string(dims.size()));
  }
  // The element count, guarded against overflow: it must match the bytes the file has.
  const std::size_t available = data.size() - header_start - header_len;
  const std::size_t element = npy_size(type);
  const bool zero = std::find(dims.begin(), dims.end(), 0) != dims.end();
  std::size_t numel = zero ? 0 : 1;
  bool overflow = false;
  for (const auto d : dims) {
    if (zero) break;
    const auto ud = static_cast<std::size_t>(d);
    if (numel > std::numeric_limits<std::size_t>::max() / element / ud) {
      overflow = true;
      break;
    }
    numel *= ud;
  }
  const std::string shape_text = Shape(dims).str();
  if (overflow || numel * element != available) {
    throw FormatError(file, "data",
                      (overflow ? std::string("a shape whose size fits in memory")
                                : count_of(static_cast<long long>(numel * element), "byte") + " for " +
                                      printable(descr) + " elements of shape " + shape_text),
                      count_of(static_cast<long long>(available), "byte") +
                          (overflow || numel * element > available ? " (truncated)" : " (bytes after the data)"));
  }
  Tensor out{Shape(dims)};
  const char* src = data.data() + header_start + header_len;
  switch (type) {
    case NpyType::f4: convert<float>(src, numel, out.data()); break;
    case NpyType::f8: convert<double>(src, numel, out.data()); break;
    case NpyType::i4: convert<std::int32_t>(src, numel, out.data()); break;
    case NpyType::i8: convert<std::int64_t>(src, numel, out.data()); break;
    case NpyType::u1: convert<std::uint8_t>(src, numel, out.data()); break;
  }
  return out;
}

void write_npy(const Tensor& x, const std::string& path) {
  // The bytes numpy.save writes for a C-order float32 array (numpy/lib/format.py,
  // _write_array_header and _wrap_header), so that files compare equal byte for byte.
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (int i = 0; i < x.rank(); ++i) dict += std::to_string(x.dim(i)) + (x.rank() == 1 || i + 1 < x.rank() ? ", " : "");
  if (x.rank() == 1) dict.pop_back();  // "(3,)"
  dict += "), }";
  // Spare room for growing the first axis in place (GROWTH_AXIS_MAX_DIGITS = 21).
  if (x.rank() > 0) dict += std::string(21 - std::min<std::size_t>(21, std::to_string(x.dim(0)).size()), ' ');
  // Then spaces and a final '\n' so that magic + version + length + header is a multiple
  // of 64 bytes (ARRAY_ALIGN; 64 more spaces when it already is). Version 1.0 has a u16
  // length, 2.0 a u32 one for longer headers.
  const std::size_t hlen = dict.size() + 1;
  int major = 1;
  std::size_t prefix = 10;
  std::size_t padlen = 64 - (prefix + hlen) % 64;
  if (hlen + padlen > 65535) {
    major = 2;
    prefix = 12;
    padlen = 64 - (prefix + hlen) % 64;
  }
  const std::size_t header_len = hlen + padlen;
  const std::string header = dict + std::string(padlen, ' ') + "\n";
  std::string bytes(kNpyMagic, sizeof kNpyMagic);
  bytes += static_cast<char>(major);
  bytes += '\0';
  for (std::size_t i = 0; i < (major == 1 ? 2u : 4u); ++i) bytes += static_cast<char>((header_len >> (8 * i)) & 0xFF);
  bytes += header;
  static_assert(sizeof(float) == 4);
  bytes.append(reinterpret_cast<const char*>(x.data()), static_cast<std::size_t>(x.numel()) * sizeof(float));
  write_file_atomically(path, bytes);
}

Tensor read_csv(const std::string& path, const CsvOptions& options) {
  const std::string data = read_file_bytes(path);
  const std::string file = file_label(path);
  std::vector<float> values;
  std::size_t columns = 0, rows = 0, first_row_line = 0;
  std::size_t line_number = 0, pos = 0;
  bool first_line = true;
  while (pos < data.size()) {
    std::size_t end = data.find('\n', pos);
    if (end == std::string::npos) end = data.size();
    const std::string_view line(data.data() + pos, end - pos);
    pos = end + 1;
    ++line_number;
    if (trim(line).empty()) continue;
    const auto fields = split(line, options.delimiter);
    if (first_line) {
      first_line = false;
      bool header = options.header.value_or(true);
      if (!options.header) {  // a header: no field is a number ("x1,x2", not "1,2,x")
        float ignored = 0;
        for (const auto f : fields)
          if (parse_number(f, ignored)) header = false;
      }
      if (header) continue;
    }
    if (columns == 0) {
      columns = fields.size();
      first_row_line = line_number;
    } else if (fields.size() != columns) {
      throw FormatError(file, "line " + std::to_string(line_number),
                        count_of(static_cast<long long>(columns), "field") + " (as line " +
                            std::to_string(first_row_line) + ")",
                        std::to_string(fields.size()));
    }
    for (std::size_t c = 0; c < fields.size(); ++c) {
      float v = 0;
      if (!parse_number(fields[c], v)) {
        throw FormatError(file, "line " + std::to_string(line_number) + ", column " + std::to_string(c + 1),
                          "a number", fields[c].empty() ? std::string("an empty field") : printable_quoted(fields[c]));
      }
      values.push_back(v);
    }
    ++rows;
  }
  if (rows == 0) {
    throw FormatError(file, "", "at least one row of numbers",
                      data.empty() ? "an empty file" : "no data rows (only a header or blank lines)");
  }
  return Tensor(Shape{static_cast<std::int64_t>(rows), static_cast<std::int64_t>(columns)}, std::move(values));
}

void write_csv(const Tensor& x, std::ostream& out, const CsvOptions& options) {
  const std::int64_t rows = x.rank() == 0 ? 1 : x.dim(0);
  const std::int64_t width = rows == 0 ? 0 : x.numel() / rows;
  char buf[32];
  std::string line;
  for (std::int64_t r = 0; r < rows; ++r) {
    line.clear();
    for (std::int64_t c = 0; c < width; ++c) {
      if (c) line += options.delimiter;
      std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(x[r * width + c]));
      line += buf;
    }
    line += '\n';
    out << line;
  }
}

void write_csv(const Tensor& x, const std::string& path, const CsvOptions& options) {
  std::ostringstream text;
  write_csv(x, text, options);
  write_file_atomically(path, text.str());
}

bool is_npy_path(const std::string& path) {
  return path.size() >= 4 && lower(path.substr(path.size() - 4)) == ".npy";
}

Tensor read_array(const std::string& path) {
  return is_npy_path(path) ? read_npy(path) : read_csv(path);
}

void write_array(const Tensor& x, const std::string& path) {
  if (is_npy_path(path)) {
    write_npy(x, path);
  } else {
    write_csv(x, path);
  }
}

}  // namespace bnorm::io
