// bnorm/io/checkpoint.hpp: bnorm's native checkpoint (the whole training state, so that a
// run resumed from it continues bit for bit), and Keras's ModelCheckpoint callback
// writing it.
//
//   Python (Keras)                                C++
//   model.save_weights / BackupAndRestore         io::save_checkpoint(model, "run.bnc");
//   model.load_weights                            io::load_checkpoint(model, "run.bnc");
//   model.fit(..., initial_epoch=k)               model.fit(x, y, {.epochs = E, .initial_epoch = k});
//   keras.callbacks.ModelCheckpoint(path)         std::make_shared<io::ModelCheckpoint>(path)
//
// Resuming: train k epochs, save_checkpoint; later build the same model, compile it with
// the same optimizer class and hyper-parameters, load_checkpoint, and fit with
// initial_epoch = model.epochs_completed() (= k) and the same batch size, seed and data:
// every weight, moving statistic, optimizer slot and loss equals the uninterrupted run's
// to the bit (tests/io/checkpoint_test.cpp checks this with Adam and SGD + momentum, with
// Dropout and BatchNormalization in the model).
//
// Format "bnorm checkpoint", version 2 (magic "BNRMCKPT"; every integer little-endian, a
// string is u32 length (at most 4096) + bytes, a float tensor is numel x f32):
//   magic "BNRMCKPT" (8 bytes), u32 version = 2, u32 flags (bit 0: optimizer section
//   present; the other bits must be 0)
//   weights:     u32 count, count x { string "<layer>/<variable>" (e.g. "dense/kernel"),
//                u32 rank, rank x i64 dims, values }        every variable, model order
//   layer state: u32 count, count x { string layer name, string class name, u32 n,
//                n x { string key, u64 value } }   every layer with state, model order;
//                Dropout: "seed", "calls" (its generator), in that order
//   training:    i64 epochs_completed (Model::epochs_completed)
//   optimizer:   (flag bit 0) string class name ("Adam"), u32 n, n x { string name, f64
//                value } hyper-parameters (NaN for an unset clip option), u32 learning rate
//                (float32 bits), i64 iterations, u32 k, k x string slot names
//                (Optimizer::slot_names), u32 m, m x { string "<layer>/<variable>", k
//                tensors of that variable's shape } in first-use order
//   trailer:     u32 CRC-32 (zlib's) of every byte before it
// Version 1 files (magic "BNRMWTS\0": u32 version = 1, u32 count, count x { u32 name
// length, name, u32 rank, rank x i64 dims, values }, weights only, no checksum) still
// load: they set the weights and leave everything else as it is. docs/formats.md
// ("bnorm native checkpoint") has the same description.
//
// What is not stored, and why: the model's architecture and trainable flags (the caller
// builds the model, as for Keras load_weights; a frozen layer stays frozen as built), the
// loss and metrics (stateless between epochs), slots of variables that are not the
// model's (they cannot be named).
//
// Loading validates the whole file before assigning anything: weight names, order and
// shapes must be the model's; the layer-state entries must be the model's Dropout layers,
// in order; the optimizer section, when the model is compiled, must
// be for the same optimizer class with the same hyper-parameters, bit for bit (the learning rate is
// restored, as Keras restores its variable) and name only model variables. An
// uncompiled model takes weights, layer state and position, and ignores a (well-formed)
// optimizer section; a file without one leaves the optimizer as it is. Errors:
// io::FileError when the file cannot be opened or written, io::FormatError (bad magic,
// version, checksum, truncation, any mismatch) naming the file and the variable or layer;
// after either, the model and its optimizer are unchanged.
//
// Saving is atomic: the bytes go to a uniquely named temporary file beside the target
// ("<name>.tmp-<pid>-<n>"), which is fsync'ed, renamed over the target, and the folder is
// fsync'ed, so a crash or kill at any moment leaves the old file or the new one, never a
// partial one. Temporary files left by a killed writer (whose process no longer exists)
// are removed by the next save to the same path.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "bnorm/io/error.hpp"  // FileError (cannot open/write), FormatError (bad contents)
#include "bnorm/nn/callbacks.hpp"
#include "bnorm/nn/model.hpp"

namespace bnorm::io {

struct CheckpointOptions {
  // Also save the optimizer (class, hyper-parameters, learning rate, iterations, slots)
  // when the model is compiled. false: weights, layer state and position only.
  bool include_optimizer = true;
};

void save_checkpoint(nn::Model& model, const std::string& path, const CheckpointOptions& options = {});
void load_checkpoint(nn::Model& model, const std::string& path);

// The same from bytes in memory (`name` stands for the file in error messages): what
// load_checkpoint does after reading the file, and what the fuzzer drives.
void load_checkpoint_bytes(nn::Model& model, std::string_view bytes, const std::string& name);
// Whether `bytes` start with a bnorm checkpoint's magic (version 2 or 1).
bool is_checkpoint(std::string_view bytes);
// The bytes save_checkpoint writes.
std::string checkpoint_bytes(nn::Model& model, const CheckpointOptions& options = {});

// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of the
// folder; stale temporary files of dead writers removed). FileError on failure, with the
// target untouched.
void write_file_atomically(const std::string& path, std::string_view bytes);

struct ModelCheckpointOptions {
  std::string monitor = "val_loss";
  bool save_best_only = false;
  std::string mode = "auto";  // "min", "max", "auto" (max for accuracy-like metrics)
  // true: weights and layer state only; false: the whole training state, optimizer
  // included (what resuming needs). Keras's default is false; bnorm's stays true, the
  // weights-only files this callback always wrote.
  bool save_weights_only = true;
  int verbose = 0;
};

// Keras ModelCheckpoint: saves a checkpoint after every epoch, or only when `monitor`
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
