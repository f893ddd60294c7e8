// bnorm/io/array_file.hpp: arrays in NumPy .npy files and in CSV text, read as float32
// tensors (the inputs and outputs of `bnorm predict` / `bnorm evaluate`).
//
// .npy (NumPy's format, numpy/lib/format.py), versions 1.0, 2.0 and 3.0:
//   magic "\x93NUMPY", u8 major, u8 minor, header length (u16 little-endian in 1.0,
//   u32 in 2.0 and 3.0), then an ASCII (3.0: UTF-8) Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
//   padded with spaces and ended by '\n', then the elements.
//   Read: descr little-endian (or byte-order-free) float32 '<f4', float64 '<f8', int32
//   '<i4', int64 '<i8', uint8 '|u1'; every type is converted to float32 (float64 and
//   64-bit integers round to nearest). C order only. Shape () reads as a rank-0 tensor.
//   Written: float32 '<f4', C order, version 1.0 (2.0 when the header needs more than
//   65535 bytes), header padded so the data starts at a multiple of 64 bytes: byte for
//   byte what numpy.save writes for a float32 array.
//
// CSV: numeric text, one row per line, fields separated by commas, spaces around a field
//   ignored, "\r\n" line ends accepted, empty lines skipped. Numbers as strtod reads them
//   (also "nan", "inf"). A first line none of whose fields is a number is a header
//   row and is skipped (CsvOptions::header forces the choice); a first line mixing
//   numbers and text is data, and its text field an error. Every row needs the same
//   number of fields. Read as (rows, columns); written with rank-1 tensors as one column
//   and rank >= 2 tensors as dim 0 rows of the remaining elements flattened in C order,
//   each value with 9 significant digits (float32 round-trips exactly).
//
// Errors (io/error.hpp) of the readers: where = the path (core/text.hpp's printable()),
// argument = the place in the file ("line 3, column 2", "header 'descr'", "data"; empty
// when the whole file is at fault); bytes from the file are printable_quoted() (escaped, cut after
// 60 characters). The command line tool puts the argument that named the file in front
// ("INPUT x.csv: line 3, ...").
//   FileError:   the file does not exist, is a folder, or cannot be read or written.
//   FormatError: contents that are not what the format needs, naming what and where:
//     "x.npy: header 'descr': expected dtype float32, float64, int32, int64 or uint8 in
//      little-endian byte order (...), received '>f4'"
//     "x.csv: line 3, column 2: expected a number, received 'abc'"
//     "x.csv: line 4: expected 784 fields (as line 1), received 783"
// Writing is atomic: a temporary file beside the target renamed over it.
#pragma once

#include <optional>
#include <ostream>
#include <string>

#include "bnorm/core/tensor.hpp"
#include "bnorm/io/error.hpp"  // FileError, FormatError

namespace bnorm::io {

Tensor read_npy(const std::string& path);
void write_npy(const Tensor& x, const std::string& path);

struct CsvOptions {
  char delimiter = ',';
  // nullopt: a header row is detected (a first line none of whose fields is a number);
  // true: the first line is always skipped; false: never.
  std::optional<bool> header{};
};

// A (rows, columns) tensor. A file without rows (empty, or only a header) is a
// FormatError.
Tensor read_csv(const std::string& path, const CsvOptions& options = {});
void write_csv(const Tensor& x, const std::string& path, const CsvOptions& options = {});
// The same text to a stream (e.g. stdout).
void write_csv(const Tensor& x, std::ostream& out, const CsvOptions& options = {});

// By the path's suffix: ".npy" (any case) is .npy, anything else CSV.
bool is_npy_path(const std::string& path);
Tensor read_array(const std::string& path);
void write_array(const Tensor& x, const std::string& path);

}  // namespace bnorm::io
