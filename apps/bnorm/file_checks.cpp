#include "file_checks.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <system_error>

#include "bnorm/core/text.hpp"
#include "bnorm/io/error.hpp"
#include "commands.hpp"

namespace bnorm::cli {

namespace fs = std::filesystem;

namespace {

std::string in_quotes(const fs::path& path) {
  return "'" + path.string() + "'";
}

// Why no file can be created in `dir`, or nullopt when one can: creates a uniquely named
// probe file and removes it.
std::optional<std::string> cannot_create_in(const fs::path& dir) {
  std::string name = (dir / ".bnorm-write-check-XXXXXX").string();
  const int fd = mkstemp(name.data());
  if (fd < 0) return std::string(std::strerror(errno));
  close(fd);
  unlink(name.c_str());
  return std::nullopt;
}

// The folder a relative file name lives in: "." for a bare name.
fs::path folder_of(const fs::path& path) {
  const fs::path parent = path.parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

bool same_file(const fs::path& a, const fs::path& b) {
  std::error_code ec_a, ec_b;
  if (fs::exists(a, ec_a) && fs::exists(b, ec_b)) {
    std::error_code ec;
    const bool same = fs::equivalent(a, b, ec);
    return !ec && same;
  }
  const fs::path ca = fs::weakly_canonical(a, ec_a), cb = fs::weakly_canonical(b, ec_b);
  return !ec_a && !ec_b && ca == cb;
}

std::string describe(float v) {
  if (std::isnan(v)) return "nan";
  return v > 0 ? "inf" : "-inf";
}

}  // namespace

void require_distinct_output(const std::string& command, const std::string& option, const std::string& output,
                             const std::vector<NamedInput>& inputs) {
  for (const auto& input : inputs) {
    if (input.path.empty() || !same_file(output, input.path)) continue;
    const std::string spelled = input.path.string() == output ? "" : ", " + in_quotes(input.path);
    throw UsageError(command, option, "a path other than the inputs",
                     in_quotes(output) + " (" + input.name + spelled + ")");
  }
}

void require_model_file_name(const std::string& command, const std::string& option, const std::string& path) {
  const auto ends_with = [&](const std::string& suffix) {
    return path.size() > suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with(".weights.h5") || !(ends_with(".keras") || ends_with(".h5") || ends_with(".hdf5"))) {
    throw UsageError(command, option, "a model file name ending in .keras (or .h5 for legacy tf.keras)",
                     "'" + path + "'");
  }
}

void require_writable_file(const std::string& command, const std::string& option, const fs::path& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (fs::is_directory(status)) {
    throw io::FileError(command, option, "a file name, not a folder",
                        in_quotes(path) + ", an existing folder");
  }
  const fs::path folder = folder_of(path);
  const fs::file_status folder_status = fs::status(folder, ec);
  if (!fs::exists(folder_status)) {
    throw io::FileError(command, option, "a path in an existing folder",
                        in_quotes(path) + " (no folder " + in_quotes(folder) + ")");
  }
  if (!fs::is_directory(folder_status)) {
    throw io::FileError(command, option, "a path in an existing folder",
                        in_quotes(path) + " (" + in_quotes(folder) + " is a file, not a folder)");
  }
  if (fs::exists(status)) {
    // A read-only file is refused, although the writers' rename could replace it.
    // Opening for writing without O_TRUNC changes nothing; O_NONBLOCK keeps a FIFO from
    // blocking the check.
    const int fd = open(path.c_str(), O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
      throw io::FileError(command, option, "a file that can be written",
                          in_quotes(path) + " (" + std::strerror(errno) + ")");
    }
    close(fd);
  }
  // The writers write a temporary file beside the target and rename it over the target.
  if (const auto problem = cannot_create_in(folder)) {
    throw io::FileError(command, option, "a path in a folder where files can be created",
                        in_quotes(path) + " (folder " + in_quotes(folder) + ": " + *problem + ")");
  }
}

void require_writable_folder(const std::string& command, const std::string& option, const fs::path& dir) {
  std::error_code ec;
  if (dir.empty()) throw io::FileError(command, option, "a folder (created if missing)", "an empty path");
  if (fs::is_symlink(fs::symlink_status(dir, ec)) && !fs::exists(fs::status(dir, ec))) {
    throw io::FileError(command, option, "a folder (created if missing)",
                        in_quotes(dir) + ", a symbolic link to a missing target");
  }
  const fs::file_status status = fs::status(dir, ec);
  if (fs::exists(status)) {
    if (!fs::is_directory(status)) {
      throw io::FileError(command, option, "a folder (created if missing)",
                          in_quotes(dir) + ", an existing file");
    }
    if (const auto problem = cannot_create_in(dir)) {
      throw io::FileError(command, option, "a folder where files can be created",
                          in_quotes(dir) + " (" + *problem + ")");
    }
    return;
  }
  // The nearest ancestor that exists is where the first folder will be created.
  fs::path ancestor = dir;
  do {
    ancestor = folder_of(ancestor);
  } while (!fs::exists(ancestor, ec) && ancestor != ".");
  if (!fs::is_directory(ancestor, ec)) {
    throw io::FileError(command, option, "a folder that can be created",
                        in_quotes(dir) + " (" + in_quotes(ancestor) + " is a file, not a folder)");
  }
  if (const auto problem = cannot_create_in(ancestor)) {
    throw io::FileError(command, option, "a folder that can be created",
                        in_quotes(dir) + " (folder " + in_quotes(ancestor) + ": " + *problem + ")");
  }
}

void require_finite(const Tensor& x, const std::string& command, const std::string& argument, bool allow) {
  const std::int64_t n = x.numel();
  const std::int64_t width = x.rank() == 0 || x.dim(0) == 0 ? 1 : n / x.dim(0);
  const float* v = x.data();
  std::int64_t first = -1, count = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    if (std::isfinite(v[i])) continue;
    if (first < 0) first = i;
    ++count;
    if (!allow) break;
  }
  if (first < 0) return;
  const std::string where = describe(v[first]) + " at row " + std::to_string(first / width + 1) +
                            ", column " + std::to_string(first % width + 1);
  if (!allow)
    throw NumericalError(command, argument, "finite values", where + " (accept with --allow-nonfinite)");
  // One line: the argument carries a path from the command line, escaped like any message.
  const std::string line = command + ": warning: " + printable(argument, 0) + ": " +
                           count_of(count, "non-finite value") + ", the first " + where +
                           " (accepted: --allow-nonfinite)\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace bnorm::cli
