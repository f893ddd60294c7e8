#include "bnorm/io/datasets.hpp"

#include <string>
#include <system_error>

#include "bnorm/io/idx.hpp"

namespace bnorm::io {

namespace {

constexpr const char* kWhere = "load_mnist_layout";

// NAME.gz when present, else NAME; FileError naming NAME.gz when neither is.
std::filesystem::path find_file(const std::filesystem::path& dir, const std::string& name,
                                const char* where) {
  std::error_code ec;
  const auto gz = dir / (name + ".gz");
  if (std::filesystem::is_regular_file(gz, ec)) return gz;
  const auto plain = dir / name;
  if (std::filesystem::is_regular_file(plain, ec)) return plain;
  throw FileError(where, gz.string(), "an IDX file (" + name + ".gz or " + name + ")", "no such file");
}

IdxArray read_u8(const std::filesystem::path& path, std::size_t rank, const char* where) {
  IdxArray a = read_idx(path);
  if (a.type != IdxType::u8 || a.dims.size() != rank) {
    throw FormatError(where, path.string(), "uint8 data of rank " + std::to_string(rank),
                      to_string(a.type) + " data of rank " + std::to_string(a.dims.size()));
  }
  return a;
}

// `where`: the loader named in errors.
void load_split(const std::filesystem::path& dir, const std::string& prefix, Tensor& x, Tensor& y,
                std::int64_t& height, std::int64_t& width, const char* where) {
  const auto images_path = find_file(dir, prefix + "-images-idx3-ubyte", where);
  const auto labels_path = find_file(dir, prefix + "-labels-idx1-ubyte", where);
  const IdxArray images = read_u8(images_path, 3, where);
  const IdxArray labels = read_u8(labels_path, 1, where);
  if (labels.dims[0] != images.dims[0]) {
    throw FormatError(where, labels_path.string(),
                      std::to_string(images.dims[0]) + " labels (one per image)",
                      std::to_string(labels.dims[0]));
  }
  if (height != 0 && (images.dims[1] != height || images.dims[2] != width)) {
    throw FormatError(
        where, images_path.string(),
        "images of " + std::to_string(height) + "x" + std::to_string(width) + " as the training set",
        std::to_string(images.dims[1]) + "x" + std::to_string(images.dims[2]));
  }
  height = images.dims[1];
  width = images.dims[2];
  for (std::uint8_t label : labels.data) {
    if (label >= 10)
      throw FormatError(where, labels_path.string(), "labels in [0, 10)", std::to_string(label));
  }
  x = to_tensor(images, 1.0 / 255.0).reshaped(Shape{images.dims[0], height * width});
  y = to_tensor(labels);
}

void require_directory(const std::filesystem::path& dir, const char* where) {
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    throw FileError(where, dir.string(), "a dataset directory", "no such directory");
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    throw FileError(where, dir.string(), "a dataset directory", "a file that is not a directory");
  }
}

}  // namespace

ImageDataset load_mnist_layout(const std::filesystem::path& dir) {
  require_directory(dir, kWhere);
  ImageDataset d;
  load_split(dir, "train", d.x_train, d.y_train, d.height, d.width, kWhere);
  load_split(dir, "t10k", d.x_test, d.y_test, d.height, d.width, kWhere);
  return d;
}

ImageDataset load_mnist_test(const std::filesystem::path& dir) {
  require_directory(dir, "load_mnist_test");
  ImageDataset d;
  load_split(dir, "t10k", d.x_test, d.y_test, d.height, d.width, "load_mnist_test");
  return d;
}

const char* fashion_mnist_class_name(std::int64_t label) {
  static const char* const names[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return label >= 0 && label < 10 ? names[label] : "unknown";
}

}  // namespace bnorm::io
