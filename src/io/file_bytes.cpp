#include "file_bytes.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "bnorm/io/error.hpp"

namespace bnorm::io {

std::string read_file_bytes(const char* where, const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) throw FileError(where, path, "an existing file", "no such file");
  if (std::filesystem::is_directory(status)) throw FileError(where, path, "a file", "a folder");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(where, path, "a readable file", std::strerror(errno));
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw FileError(where, path, "a readable file", "a read error");
  return data;
}

}  // namespace bnorm::io
