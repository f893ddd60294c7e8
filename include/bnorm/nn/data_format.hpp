// bnorm/nn/data_format.hpp: the Keras settings that convolution, pooling and spatial
// layers share.
//
//   data_format   channels_last  (N, H, W, C)  Keras's default ("NHWC")
//                 channels_first (N, C, H, W)  ("NCHW")
//   padding       valid: no padding; same: output size ceil(in / stride), the total
//                 padding split with the odd extra pixel AFTER (bottom/right), as
//                 TensorFlow does (../shared/spec/CNN.md section 1.5); causal (Conv1D
//                 only): all padding before.
#pragma once

#include <string>

namespace bnorm::nn {

enum class DataFormat { channels_last, channels_first };
enum class Padding { valid, same, causal };

// Keras names ("channels_last", "channels_first" / "valid", "same", "causal"; Keras also
// accepts upper case) to the enums; any other name throws ArgumentError naming `argument`.
DataFormat data_format_from_name(const std::string& name, const std::string& argument = "data_format");
Padding padding_from_name(const std::string& name, const std::string& argument = "padding");
std::string data_format_name(DataFormat format);
std::string padding_name(Padding padding);

}  // namespace bnorm::nn
