// Shared by the golden tests: where the fixture files are, and reading one with its
// format and version checked (a problem is returned, not thrown, so that the test that
// needs the file fails with it).
#pragma once

#include <cstdlib>
#include <exception>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace bnorm::test {

inline std::string fixtures_dir() {
  if (const char* d = std::getenv("BNORM_FIXTURES")) return d;
  return BNORM_FIXTURES_DIR;
}

struct FixtureFile {
  nlohmann::json data;
  std::string error;  // non-empty when the file could not be read
};

inline FixtureFile read_fixture(const std::string& file, const std::string& format, int version) {
  FixtureFile out;
  const std::string path = fixtures_dir() + "/" + file;
  try {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open golden fixture " + path);
    out.data = nlohmann::json::parse(in);
    if (out.data.value("format", "") != format || out.data.value("version", 0) != version) {
      throw std::runtime_error(path + ": not a " + format + " version " + std::to_string(version) + " file");
    }
  } catch (const std::exception& e) {
    out.error = e.what();
  }
  return out;
}

}  // namespace bnorm::test
