// apps/bnorm/file_checks.hpp: the checks the commands run on their files before any work,
// so that a command fails in its first second rather than after an hour of training, and
// never writes over its own inputs.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "bnorm/core/tensor.hpp"

namespace bnorm::cli {

// An input of a command, as the command line names it ("MODEL", "INPUT", "--data-dir").
struct NamedInput {
  std::filesystem::path path;
  std::string name;
};

// UsageError (exit status 2) when `output` is the same file as one of `inputs`: the same
// file by std::filesystem::equivalent when both exist (so symbolic and hard links, and
// other spellings such as ./x.npy, count), else the same weakly_canonical path.
void require_distinct_output(const std::string& command, const std::string& option, const std::string& output,
                             const std::vector<NamedInput>& inputs);

// FileError (exit status 1) unless a file can be written at `path`: it is not a folder,
// its folder exists, a file that exists there opens for writing, and a file can be
// created in the folder (bnorm's writers write a temporary file there and rename it over
// the target). Tried with a probe file, removed at once: as root, access(2) says yes to
// read-only folders. Changes nothing on disk.
// UsageError (exit status 2) unless `path` names a model file io::save_model writes: .keras
// (Keras 3), or .h5 / .hdf5 (legacy tf.keras); a weights-only name (.weights.h5) is not one.
void require_model_file_name(const std::string& command, const std::string& option, const std::string& path);

void require_writable_file(const std::string& command, const std::string& option,
                           const std::filesystem::path& path);

// FileError unless `dir` is a folder where files can be created, or does not exist yet
// and its nearest existing ancestor is such a folder. Creates nothing (the probe file
// is removed at once).
void require_writable_folder(const std::string& command, const std::string& option,
                             const std::filesystem::path& dir);

// Finite values, or what was found: NumericalError (exit status 1) naming `argument`
// (e.g. "INPUT x.npy") and the first NaN or infinity by 1-based row (sample: the first
// dimension) and column (the position in the row's values flattened in C order; a CSV
// header line is not a row). With `allow`, one warning line on stderr instead, with the
// count and the first position.
void require_finite(const Tensor& x, const std::string& command, const std::string& argument, bool allow);

}  // namespace bnorm::cli
