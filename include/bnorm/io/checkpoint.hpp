// bnorm/io/checkpoint.hpp: bnorm's native weights file, and Keras's ModelCheckpoint
// callback writing it.
//
// Format "bnorm weights", version 1 (little-endian):
//   magic "BNRMWTS\0" (8 bytes), u32 version = 1, u32 count,
//   count x { u32 name_length, name bytes ("<layer>/<variable>", e.g. "dense/kernel"),
//             u32 rank, rank x i64 dims, numel x f32 values }
// Saving is atomic: the file is written beside the target, flushed to disk, then renamed
// over it, so a crash leaves either the old file or the new one. Loading validates the
// whole file against the model (names, order, shapes, sizes) before assigning anything:
// a file that cannot be opened or written raises io::FileError, a bad or mismatching
// file io::FormatError (both bnorm::Error), naming the file and the variable, and the model is
// unchanged. (Keras .keras / .weights.h5 files are a separate, later format.)
#pragma once

#include <memory>
#include <string>

#include "bnorm/io/error.hpp"  // FileError (cannot open/write), FormatError (bad contents)
#include "bnorm/nn/callbacks.hpp"
#include "bnorm/nn/model.hpp"

namespace bnorm::io {

void save_checkpoint(nn::Model& model, const std::string& path);
void load_checkpoint(nn::Model& model, const std::string& path);

struct ModelCheckpointOptions {
  std::string monitor = "val_loss";
  bool save_best_only = false;
  std::string mode = "auto";  // "min", "max", "auto" (max for accuracy-like metrics)
  int verbose = 0;
};

// Keras ModelCheckpoint (weights only): saves after every epoch, or only when `monitor`
// improved. `{epoch}` in the path is replaced by the 1-based epoch number.
class ModelCheckpoint : public nn::Callback {
 public:
  explicit ModelCheckpoint(std::string filepath, ModelCheckpointOptions options = {});
  void on_train_begin(nn::Model&, int, std::int64_t) override;
  void on_epoch_end(nn::Model& model, int epoch, const nn::Logs& logs) override;
  const std::string& last_saved() const noexcept { return last_saved_; }

 private:
  std::string filepath_;
  ModelCheckpointOptions options_;
  bool maximize_;
  double best_ = 0;
  std::string last_saved_;
};

}  // namespace bnorm::io
