// bnorm/io/error.hpp: the typed exceptions of bnorm's file readers and writers (io/).
//
// Both derive from bnorm::Error (core/error.hpp). The readers of arrays, IDX files and
// Keras model files name the file as `where` and the place in it as `argument` (empty
// when the whole file is at fault), e.g.
//   "/data/train-images-idx3-ubyte.gz: expected a complete gzip stream, received a
//    truncated or corrupt one (zlib: unexpected end of file)"
//   "x.csv: line 2, column 3: expected a number, received 'abc'"
// (the checkpoint and safetensors readers still name the function as `where` and the
// path as `argument`). The command line tool re-labels them with the argument that gave
// the file: "bnorm predict: error: INPUT x.csv: line 2, column 3: expected ...".
#pragma once

#include "bnorm/core/error.hpp"

namespace bnorm::io {

// A file or folder that is missing or cannot be opened, read or written.
class FileError : public Error {
 public:
  using Error::Error;
};

// A file that opens but whose contents are not in the expected format (wrong magic,
// truncated, inconsistent sizes, a corrupt compressed stream).
class FormatError : public Error {
 public:
  using Error::Error;
};

}  // namespace bnorm::io
