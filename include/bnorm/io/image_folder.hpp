// bnorm/io/image_folder.hpp: image-classification datasets stored as class folders, read
// as Keras's image_dataset_from_directory reads them.
//
//   Python (Keras)                                              C++
//   ds = keras.utils.image_dataset_from_directory(              auto ds = io::load_image_folder(dir, 160,
//   160);
//       dir, image_size=(160, 160), shuffle=False)              // ds.x (N, 160, 160, 3), ds.y (N)
//
// Layout: DIR/<class name>/.../<image>. The classes are DIR's subfolders (symbolic links
// to folders count; names starting with "." do not), in sorted order (byte order, as
// Python's sorted: "Zebra" before "cat"); a class's index is its position. Files directly
// in DIR are ignored. Each class folder is walked recursively (symbolic links to folders
// are not followed, as Keras's follow_links=False) and its files taken folder by folder,
// the folders sorted by their whole path and the files of a folder sorted by name: the
// order of keras.src.utils.dataset_utils.index_directory with shuffle=False (Keras shuffles
// by default; bnorm's fit shuffles each epoch instead). A file belongs to the dataset when
// its name ends, in any letter case, with one of Keras's extensions .bmp .gif .jpeg .jpg
// .png; others (notes.txt) are skipped.
//
// Images: decoded as io::read_image (PNG, JPEG), colors as Keras's color_mode "rgb"
// (grayscale replicated, a palette expanded, alpha dropped), then always resized to
// (height, width) with Keras's default interpolation "bilinear" (io::resize_bilinear,
// tf.image.resize): float32 values 0..255, unscaled. PNG images match Keras exactly;
// JPEG ones may differ by a few levels (TensorFlow decodes with libjpeg's fast integer
// DCT, bnorm with the accurate one, as Pillow); BMP and GIF files are indexed but not
// decoded (FormatError naming the file).
//
// Memory: every image is decoded and kept (N * height * width * 3 floats: 12 KiB per
// 64 x 64 image, 300 MiB for 1000 images at 160 x 160, Keras's own example size): meant
// for small datasets, as bnorm's fit takes a tensor in memory.
//
// Errors: FileError when DIR does not exist or is not a folder; FormatError for a folder
// with no class subfolders, for classes with no image files at all (naming DIR), and for
// an image that cannot be decoded (naming the file); ArgumentError for a size under 1 x 1.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "bnorm/core/tensor.hpp"

namespace bnorm::io {

// The files of a class-folder dataset, in Keras's order (see above).
struct ImageFolderIndex {
  std::vector<std::string> class_names;  // sorted subfolder names
  std::vector<std::string> files;        // paths (DIR joined with the relative path)
  std::vector<std::int64_t> labels;      // class index of each file
};
ImageFolderIndex index_image_folder(const std::filesystem::path& dir);

struct ImageFolderDataset {
  Tensor x;  // (N, height, width, 3) float32, 0..255
  Tensor y;  // (N) class indices as floats (for the sparse losses)
  std::vector<std::string> class_names;
  std::vector<std::string> files;  // the file of each sample
};
// Indexes DIR and loads every image resized to (height, width).
ImageFolderDataset load_image_folder(const std::filesystem::path& dir, std::int64_t height,
                                     std::int64_t width);

// True when `dir` is a folder with at least one subfolder (not starting with ".") and
// no IDX files of the MNIST layout: how the command line tells a class-folder dataset.
bool looks_like_image_folder(const std::filesystem::path& dir);

}  // namespace bnorm::io
