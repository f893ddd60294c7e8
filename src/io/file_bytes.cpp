#include "file_bytes.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "bnorm/core/text.hpp"
#include "bnorm/io/error.hpp"

namespace bnorm::io {

namespace {

std::string read_bytes(const std::string& where, const std::string& argument, const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) throw FileError(where, argument, "an existing file", "no such file");
  if (std::filesystem::is_directory(status)) throw FileError(where, argument, "a file", "a folder");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(where, argument, "a readable file", std::strerror(errno));
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw FileError(where, argument, "a readable file", "a read error");
  return data;
}

}  // namespace

std::string read_file_bytes(const char* where, const std::string& path) {
  return read_bytes(where, path, path);
}

std::string read_file_bytes(const std::string& path) {
  return read_bytes(printable(path, 0), "", path);
}

}  // namespace bnorm::io
