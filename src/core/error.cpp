#include "bnorm/core/error.hpp"

namespace bnorm {

namespace {
std::string compose(const std::string& where, const std::string& argument,
                    const std::string& expected, const std::string& received) {
  // An empty part is left out: "x.npy: expected ..." when the whole file is at fault.
  std::string m = where.empty() ? std::string() : where + ": ";
  if (!argument.empty()) m += argument + ": ";
  m += "expected " + expected + ", received " + received;
  return m;
}
}  // namespace

Error::Error(std::string where, std::string argument, std::string expected, std::string received)
    : std::runtime_error(compose(where, argument, expected, received)),
      where_(std::move(where)),
      argument_(std::move(argument)),
      expected_(std::move(expected)),
      received_(std::move(received)) {}

}  // namespace bnorm
