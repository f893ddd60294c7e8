// Internal: reading a whole file, shared by the io readers (arrays, checkpoints,
// safetensors, Keras files).
#pragma once

#include <string>

namespace bnorm::io {

// The whole file as bytes. FileError naming `where` and the path for a missing file, a
// folder, or a file that cannot be opened or read.
std::string read_file_bytes(const char* where, const std::string& path);
// The same, for the readers that name the file as `where` (arrays, IDX, model files):
// FileError(printable path, "", ...), e.g. "x.npy: expected an existing file, received
// no such file".
std::string read_file_bytes(const std::string& path);

}  // namespace bnorm::io
