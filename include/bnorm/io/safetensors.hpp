// bnorm/io/safetensors.hpp: PyTorch weights saved with safetensors, read into bnorm's
// PyTorch-convention batch normalization (nn::TorchBatchNorm), Dense layers, and whole
// models built like a torch.nn.Sequential.
//
//   Python                                          C++
//   safetensors.torch.save_file(m.state_dict(), p)
//   safetensors.torch.load_file(p)                  auto file = io::read_safetensors(p);
//   bn.load_state_dict({k[3:]: v for k in sd         io::load_torch_batch_norm(bn, file, "1.");
//                       if k.startswith("1.")})
//   model.load_state_dict(sd)  (strict=True)        io::load_torch_state_dict(model, file);
//
// Format (safetensors, https://github.com/huggingface/safetensors): u64 little-endian N,
// N bytes of UTF-8 JSON { "<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets":
// [begin, end]}, ..., optional "__metadata__": {string: string} }, then the byte buffer;
// offsets are relative to the buffer, values little-endian row-major. Checked strictly,
// as the reference reader does: N at most 100,000,000 and inside the file, the header a
// JSON object (no repeated keys) whose entries have exactly those three fields, a known
// dtype, non-negative dimensions, begin <= end inside the buffer, end - begin equal to
// numel x the dtype's size, tensors neither overlapping nor leaving holes, and the buffer
// ending with the last tensor. Any violation: io::FormatError naming the file and the
// tensor (argument "tensor 'bn.running_var'") or the header field; a file that cannot
// be read: io::FileError.
//
// dtypes: F32, F64, F16 and BF16 convert to float32 (F64 rounds to nearest); I64, I32,
// I16, I8, U8 and BOOL read as integers (num_batches_tracked is I64). Other safetensors
// dtypes (F8_*, U16/U32/U64, complex) are known but refused where a value is needed.
//
// Loading into bnorm objects: every tensor the target needs must be present with the
// PyTorch shape and a convertible dtype, and no tensor under the prefix may be left
// over (PyTorch's strict load_state_dict); all of it is validated before anything is
// assigned, so after an error the target is unchanged.
//
// Whole models (load_torch_state_dict): PyTorch modules and bnorm layers are paired in
// order. The state_dict's modules are the key prefixes before the last '.', ordered as
// nn.Sequential numbers them ("0", "1", "3"; dotted paths compare number by number);
// the model's layers with weights are Dense and BatchNormalization (Activation, Dropout,
// Flatten, InputLayer have none, nor do ReLU / Dropout modules, so both sides skip
// them). A module with running_mean is a BatchNorm, one with a 2-D weight a Linear.
//   Linear(in, out):     weight (out, in) -> kernel (in, out), transposed; bias (out) ->
//                        bias. A Dense without use_bias refuses a bias and vice versa.
//   BatchNorm1d(C):      weight -> gamma, bias -> beta, running_mean -> moving_mean,
//                        running_var -> moving_variance; num_batches_tracked is checked
//                        (I64 scalar >= 0) and dropped: Keras's layer has no counter.
// Design (what a PyTorch user gets): the result is an ordinary bnorm nn::Model, so
// predict / evaluate / fit work on it. A state_dict holds no hyper-parameters: build the
// BatchNormalization layers with epsilon = the module's eps (PyTorch 1e-5, Keras 1e-3)
// and momentum = 1 - the module's momentum (PyTorch 0.1 -> Keras 0.9). Then eval-mode
// outputs (model.predict) and training-mode outputs (model(x, true): both normalize with
// the biased batch variance) equal PyTorch's, and so does the moving mean after a
// training step. The moving VARIANCE update differs: PyTorch stores the unbiased batch
// variance (N/(N-1) var), Keras the biased one; to continue training with PyTorch's
// statistics exactly, use nn::TorchBatchNorm and load_torch_batch_norm (which also
// keeps num_batches_tracked, and supports momentum = None, the cumulative average).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "bnorm/core/tensor.hpp"
#include "bnorm/io/error.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/torch_batch_norm.hpp"

namespace bnorm::io {

// One tensor of a safetensors file, as stored.
struct SafetensorsTensor {
  std::string dtype;                // "F32", "I64", ...
  std::vector<std::int64_t> shape;  // empty for a scalar (PyTorch 0-dim tensor)
  std::string bytes;                // numel x dtype size, little-endian, row-major
  std::int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Parses `bytes` (the whole file); `path` names it in error messages.
  SafetensorsFile(std::string_view bytes, std::string path);

  const std::string& path() const noexcept { return path_; }
  // Tensors by name (sorted), and the optional "__metadata__" strings.
  const std::map<std::string, SafetensorsTensor>& tensors() const noexcept { return tensors_; }
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }

  // The named tensor converted to float32 (F32, F64, F16, BF16), with its shape.
  // FormatError naming the file and tensor when absent or of another dtype.
  Tensor to_float(const std::string& name) const;
  // The named tensor as int64 (I64, I32, I16, I8, U8, BOOL); FormatError otherwise.
  std::vector<std::int64_t> to_int64(const std::string& name) const;

 private:
  const SafetensorsTensor& at(const std::string& name) const;
  std::string path_;
  std::map<std::string, SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Reads and parses a safetensors file (FileError when it cannot be read).
SafetensorsFile read_safetensors(const std::string& path);

// PyTorch BatchNorm1d/2d/3d state_dict entries "<prefix>weight", "bias" (when affine),
// "running_mean", "running_var", "num_batches_tracked" (when the module has running
// statistics) into `bn`, which must be initialized (not a lazy module before its first
// call: StateError). Shapes (C) = bn.num_features(); other "<prefix>..." keys are
// refused. E.g. prefix "1." for the second module of an nn.Sequential, "" for a file
// holding one module.
void load_torch_batch_norm(nn::TorchBatchNorm& bn, const SafetensorsFile& file, const std::string& prefix);

// PyTorch Linear entries "<prefix>weight" (out, in) and "<prefix>bias" (out) into a
// Dense with units = out (built from the weight when not built yet; built, its input
// size must be in). The kernel is the transposed weight.
void load_torch_linear(nn::Dense& dense, const SafetensorsFile& file, const std::string& prefix);

// A whole nn.Sequential-like state_dict (keys under `prefix`) onto `model`, module by
// module as described above; every key under the prefix must be used. FormatError
// naming the file, the module and the layer for a count, kind or shape mismatch;
// ArgumentError for a model layer with weights that is neither Dense nor
// BatchNormalization, or a BatchNormalization with a parameter shape other than (C).
void load_torch_state_dict(nn::Model& model, const SafetensorsFile& file, const std::string& prefix = "");

}  // namespace bnorm::io
