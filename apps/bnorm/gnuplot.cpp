#include "gnuplot.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace bnorm::cli {

namespace fs = std::filesystem;

std::string png_terminal(int w, int h) {
  static const char* kTerminal =
      "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
      "  set terminal pngcairo size %d,%d enhanced font 'sans,11' linewidth 1.5\n"
      "} else {\n"
      "  set terminal png size %d,%d enhanced font 'sans,11'\n"
      "}\n";
  char buf[512];
  std::snprintf(buf, sizeof buf, kTerminal, w, h, w, h);
  return buf;
}

std::optional<fs::path> find_on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  if (!path) return std::nullopt;
  std::stringstream ss(path);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    const fs::path candidate = fs::path(dir) / program;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

// Runs `gnuplot script` in `dir`; stderr goes to dir/gnuplot.log. Returns an empty
// string on success, else what went wrong.
std::string run_gnuplot(const fs::path& gnuplot, const fs::path& dir, const std::string& script) {
  const fs::path log = dir / "gnuplot.log";
  const pid_t pid = fork();
  if (pid < 0) return std::string("cannot start gnuplot: ") + std::strerror(errno);
  if (pid == 0) {
    if (chdir(dir.c_str()) != 0) _exit(126);
    const int fd = open("gnuplot.log", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) dup2(fd, 2), dup2(fd, 1);
    execl(gnuplot.c_str(), "gnuplot", script.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::ifstream f(log);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    // gnuplot also writes warnings to stderr; keep the log only when it says something.
    std::error_code ec;
    if (text.find_first_not_of(" \n") == std::string::npos) fs::remove(log, ec);
    return {};
  }
  std::string last;
  std::stringstream ss(text);
  for (std::string line; std::getline(ss, line);)
    if (line.find_first_not_of(" ^") != std::string::npos) last = line;
  return "gnuplot " + script + " failed (" + (last.empty() ? "no message" : last) + "; see " + log.string() +
         ")";
}

}  // namespace bnorm::cli
