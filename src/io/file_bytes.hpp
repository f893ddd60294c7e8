// Internal: reading a whole file, shared by the io readers (arrays, checkpoints,
// safetensors, Keras files).
#pragma once

#include <string>

namespace bnorm::io {

// The whole file as bytes. FileError naming `where` and the path for a missing file, a
// folder, or a file that cannot be opened or read.
std::string read_file_bytes(const char* where, const std::string& path);

}  // namespace bnorm::io
