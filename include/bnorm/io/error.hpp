// bnorm/io/error.hpp: the typed exceptions of bnorm's file readers and writers (io/).
//
// Both derive from bnorm::Error (core/error.hpp): `where` is the reader or command,
// `argument` the path (or the command line option that gave it), e.g.
//   "read_idx: /data/train-images-idx3-ubyte.gz: expected a complete gzip stream,
//    received a truncated or corrupt one (zlib: unexpected end of file)"
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
