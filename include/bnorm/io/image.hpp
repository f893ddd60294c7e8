// bnorm/io/image.hpp: PNG and JPEG files as model inputs, as Keras's load_img reads them.
//
//   Python (Keras)                                         C++
//   img = keras.utils.load_img(path, target_size=(h, w))   Tensor img = io::load_image(path, h, w);
//   x = keras.utils.img_to_array(img)                      // float32 (h, w, 3), values 0..255
//
// Decoding uses libpng and libjpeg (Debian libpng-dev, libjpeg62-turbo-dev). Colors as
// Keras's color_mode "rgb" (Pillow's convert("RGB")): grayscale is replicated into the
// three channels, a palette expanded, an alpha channel dropped (not composited), 16-bit
// samples reduced to 8 bits. The resize is Keras's default interpolation "nearest"
// (Pillow's NEAREST): output pixel (i, j) takes input pixel
//   (floor((i + 0.5) * H / h), floor((j + 0.5) * W / w)),
// the positions accumulated step by step in double as Pillow does (so an exact integer
// can round down: 16 -> 7 rows takes row 7 for output row 3, not 8).
// Values are not scaled: the model's own Rescaling / Normalization layers do the rest, as
// in Keras. The format is told by the file's signature, not its name. Errors: FileError
// (cannot read), FormatError (not a PNG or JPEG, a damaged file, a CMYK JPEG), naming the
// file.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "bnorm/core/tensor.hpp"
#include "bnorm/io/error.hpp"

namespace bnorm::io {

// The decoded image, float32 (height, width, 3).
Tensor read_image(const std::string& path);
// read_image, resized to (height, width) with Keras's nearest interpolation.
Tensor load_image(const std::string& path, std::int64_t height, std::int64_t width);
// Nearest resize of an (H, W, C) image to (height, width, C), as above.
Tensor resize_nearest(const Tensor& image, std::int64_t height, std::int64_t width);
// Bilinear resize of an (H, W, C) image to (height, width, C) as TensorFlow's
// tf.image.resize(image, (height, width), method="bilinear") computes it (antialias
// false: the ResizeBilinear kernel with half-pixel centres), what Keras's
// image_dataset_from_directory uses by default. In float, per axis (scale = in / out):
//   p = (i + 0.5) * scale - 0.5,  lo = max(floor(p), 0),  hi = min(ceil(p), in - 1),
//   t = p - floor(p)
// and per pixel top = a + (b - a) * tx, bottom = c + (d - c) * tx, y = top + (bottom - top) * ty
// (a, b the row-lo pixels at columns lo, hi; c, d the row-hi ones). Checked against
// TensorFlow 2.21 (tests/fixtures/images/bilinear.json). ShapeError for another rank,
// ArgumentError for a size under 1 x 1.
Tensor resize_bilinear(const Tensor& image, std::int64_t height, std::int64_t width);
// True when the bytes start with a PNG or JPEG signature.
bool is_image(std::string_view bytes);
// True when the file at `path` starts with a PNG or JPEG signature (false when unreadable).
bool is_image_file(const std::string& path);

}  // namespace bnorm::io
