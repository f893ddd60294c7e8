// apps/bnorm/gnuplot.hpp: drawing the PNG figures of `bnorm experiment` and
// `bnorm inspect --plots` with gnuplot, when it is installed (it is optional: without it
// the commands still write the data and the scripts, and say why there is no figure).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace bnorm::cli {

// The first executable `program` in the folders of $PATH.
std::optional<std::filesystem::path> find_on_path(const std::string& program);

// What to say when gnuplot is missing (the Debian package to install).
inline constexpr const char* kNoGnuplot =
    "gnuplot is not installed (Debian: apt-get install gnuplot-nox; `make deps` installs it)";

// The lines that select a PNG terminal of w x h pixels: pngcairo when this gnuplot has
// it (antialiased), else the libgd png terminal.
std::string png_terminal(int w, int h);

// Runs `gnuplot script` in `dir`; stderr goes to dir/gnuplot.log (removed when empty
// after a success). Returns an empty string on success, else what went wrong.
std::string run_gnuplot(const std::filesystem::path& gnuplot, const std::filesystem::path& dir,
                        const std::string& script);

}  // namespace bnorm::cli
