// bnorm/io/datasets.hpp: image-classification datasets stored as IDX files
// (Fashion-MNIST, MNIST), read as Keras's `keras.datasets.fashion_mnist.load_data()`
// gives them, then flattened and scaled for a dense network.
//
// A dataset directory holds the four files of the MNIST layout, each either
// gzip-compressed (NAME.gz, as Debian's dataset-fashion-mnist installs them under
// /usr/share/datasets/fashion-mnist) or unpacked (NAME):
//   train-images-idx3-ubyte   uint8 (60000, 28, 28)
//   train-labels-idx1-ubyte   uint8 (60000)
//   t10k-images-idx3-ubyte    uint8 (10000, 28, 28)
//   t10k-labels-idx1-ubyte    uint8 (10000)
//
// Errors: FileError (idx.hpp) naming the directory when it does not exist or is not a
// directory, naming the missing file otherwise; FormatError for a file that is not IDX
// uint8 data of the expected rank, or image and label counts that disagree, or a label
// outside [0, 10).
#pragma once

#include <cstdint>
#include <filesystem>

#include "bnorm/core/tensor.hpp"

namespace bnorm::io {

// Where Debian's dataset-fashion-mnist package puts the files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

struct ImageDataset {
  Tensor x_train;  // (60000, H * W) pixels / 255 in [0, 1], one image per row
  Tensor y_train;  // (60000) class indices 0..9 as floats (for the sparse losses)
  Tensor x_test;   // (10000, H * W)
  Tensor y_test;   // (10000)
  std::int64_t height = 0, width = 0;
  std::int64_t classes = 10;
};

// Reads the four files of an MNIST-layout directory (Fashion-MNIST or MNIST).
ImageDataset load_mnist_layout(const std::filesystem::path& dir);

// Reads only the test split (t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each .gz or
// not) of an MNIST-layout directory: x_test, y_test, height and width are set, x_train and
// y_train stay empty. The training files need not exist. Errors as load_mnist_layout's.
ImageDataset load_mnist_test(const std::filesystem::path& dir);

// The Debian Fashion-MNIST (or `dir` when given another copy).
inline ImageDataset load_fashion_mnist(const std::filesystem::path& dir = kFashionMnistDir) {
  return load_mnist_layout(dir);
}

// Fashion-MNIST's class names, index 0..9: "T-shirt/top", "Trouser", ... "Ankle boot".
const char* fashion_mnist_class_name(std::int64_t label);

}  // namespace bnorm::io
