// Internal: a small RAII layer over the HDF5 C API, for the Keras weight files
// (model_file.cpp). Not installed; the public API is bnorm/io/model_file.hpp.
//
// Reading is defensive: every failure is an io::FormatError naming the file (`name`) and
// the HDF5 path; HDF5's own error printing is switched off. Datasets of any HDF5 float
// type are read as float32 (HDF5 converts); soft and external links are refused, and a
// dataset must hold the bytes it declares (no "shape bombs").
// Writing builds the file in memory (HDF5's core driver) and returns its bytes, so the
// caller can place them in a zip archive or write them atomically.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bnorm/core/tensor.hpp"

namespace bnorm::io::h5 {

// An owned HDF5 identifier, closed with the function matching its kind.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(o.id_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      o.id_ = -1;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const noexcept { return id_; }
  bool valid() const noexcept { return id_ >= 0; }
  void reset() noexcept;

 private:
  hid_t id_ = -1;
};

// True when `bytes` start with the HDF5 signature (at offset 0, the only place Keras's
// files have it).
bool has_signature(std::string_view bytes);

// A file opened for reading from its bytes in memory.
class Reader {
 public:
  // `name` stands for the file in error messages.
  static Reader open_image(std::string_view bytes, const std::string& name);

  const std::string& name() const noexcept { return name_; }
  // Whether `path` ("/a/b") exists as a group reached through hard links only.
  bool has_group(const std::string& path) const;
  bool has_dataset(const std::string& path) const;
  // Names of the links in a group, in name order.
  std::vector<std::string> children(const std::string& group) const;
  bool has_attribute(const std::string& object, const std::string& attr) const;
  // A string attribute: scalar or one-element, fixed or variable length.
  std::string string_attribute(const std::string& object, const std::string& attr) const;
  // A list of strings (fixed or variable length; an empty numeric array reads as empty).
  // Keras's chunked form (attr0, attr1, ... when over 64 KiB) is joined.
  std::vector<std::string> string_list_attribute(const std::string& object, const std::string& attr) const;
  // An integer scalar dataset (or one-element array); nullopt when `path` is not one.
  std::optional<std::int64_t> read_integer_scalar(const std::string& path) const;
  // A float dataset as float32; `what` names it in errors (layer and variable).
  // allow_integers: an integer dataset is converted (Keras's int64 counters, e.g. Normalization's count).
  Tensor read_floats(const std::string& path, const std::string& what, bool allow_integers = false) const;

 private:
  Reader(Handle file, std::string name) : file_(std::move(file)), name_(std::move(name)) {}
  void require_hard_links(const std::string& path) const;
  [[noreturn]] void fail(const std::string& where, const std::string& expected, const std::string& received) const;
  Handle file_;
  std::string name_;
};

// A file built in memory.
class Writer {
 public:
  Writer();
  // Creates every missing group on the way ("/a/b/c").
  void make_groups(const std::string& path);
  void write_floats(const std::string& path, const Tensor& value);
  // A scalar int64 dataset (Keras's optimizer iteration count).
  void write_int64(const std::string& path, std::int64_t value);
  // Scalar variable-length UTF-8 string (what h5py writes for a Python str).
  void string_attribute(const std::string& object, const std::string& attr, const std::string& value);
  // Array of variable-length UTF-8 strings (h5py's list of str); an empty list is
  // written as an empty float64 array, as h5py writes it.
  void string_list_attribute(const std::string& object, const std::string& attr,
                             const std::vector<std::string>& values);
  // Closes the file and returns its bytes.
  std::string finish();

 private:
  Handle file_;
};

}  // namespace bnorm::io::h5
