// bnorm/io/idx.hpp: reading IDX files (the MNIST / Fashion-MNIST format), plain or
// gzip-compressed.
//
// Format (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"), all big-endian:
//   bytes 0-1   0x00 0x00
//   byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
//               0x0D float32, 0x0E float64
//   byte  3     rank R (1 to 8)
//   then R uint32 dimensions, then the elements in row-major order.
// A file starting with the gzip magic 0x1F 0x8B is decompressed while read (zlib), so
// `train-images-idx3-ubyte.gz` and the unpacked `train-images-idx3-ubyte` read alike.
//
// Errors name the file as `where` (core/text.hpp's printable()) and the place in it as
// `argument` ("header", "data"; empty when the whole file is at fault), e.g.
//   "t10k-labels-idx1-ubyte: data: expected 10000 bytes for uint8 elements of shape
//    (10000,), received 512 (truncated)"
//   FileError:   the file does not exist, is a directory, or cannot be opened or read.
//   FormatError: a gzip stream that is corrupt or cut short, or bytes that are not an
//                IDX file: wrong magic, unknown type code, rank 0 or above 8, fewer
//                element bytes than the dimensions need (truncated), or bytes left after
//                the last element.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "bnorm/core/tensor.hpp"
#include "bnorm/io/error.hpp"  // FileError, FormatError

namespace bnorm::io {

enum class IdxType : std::uint8_t {
  u8 = 0x08,
  i8 = 0x09,
  i16 = 0x0B,
  i32 = 0x0C,
  f32 = 0x0D,
  f64 = 0x0E,
};

// "uint8", "int8", "int16", "int32", "float32", "float64".
std::string to_string(IdxType type);
// Bytes per element: 1, 1, 2, 4, 4, 8.
std::size_t element_size(IdxType type);

struct IdxArray {
  IdxType type = IdxType::u8;
  std::vector<std::int64_t> dims;  // R dimensions, as stored
  // numel * element_size(type) bytes: the elements in row-major order, converted to the
  // host's byte order (uint8 pixels stay bytes: 60000 28x28 images are 47 MB).
  std::vector<std::uint8_t> data;

  std::int64_t numel() const;
};

// Reads an IDX file, gzip-compressed or not (see above).
IdxArray read_idx(const std::filesystem::path& path);

// The elements as a float tensor of shape `dims`: float(value * scale), the product in
// double (scale 1.0 / 255 maps uint8 pixels to [0, 1], 255 to exactly 1).
Tensor to_tensor(const IdxArray& array, double scale = 1.0);

}  // namespace bnorm::io
