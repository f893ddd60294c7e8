// PNG and JPEG inputs (io/image.hpp) against what Keras's load_img + img_to_array give
// for the same files (tests/fixtures/images/, made by tests/fixtures/generate_images.py
// with Keras 3.15.1 and Pillow 13.0.0): decoded values and the nearest resize to 7 x 9.
// PNG decoding is exact; JPEG's within 1 level (libjpeg versions may round differently).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bnorm/io/array_file.hpp"
#include "bnorm/io/image.hpp"
#include "bnorm/io/image_folder.hpp"
#include "nn/fixture_file.hpp"

using namespace bnorm;

namespace {
std::string dir() { return bnorm::test::fixtures_dir() + "/images"; }

double max_diff(const Tensor& a, const Tensor& b) {
  double d = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) d = std::max(d, std::abs(static_cast<double>(a[i]) - b[i]));
  return d;
}
}  // namespace

TEST(Images, DecodedAndResizedAsKeras) {
  std::ifstream in(dir() + "/images.json");
  const auto spec = nlohmann::json::parse(in);
  ASSERT_EQ(spec["cases"].size(), 4u);
  for (const auto& c : spec["cases"]) {
    const std::string file = c["file"].get<std::string>();
    SCOPED_TRACE(file);
    const bool jpeg = file.size() > 4 && file.substr(file.size() - 4) == ".jpg";
    const Tensor full = io::read_image(dir() + "/" + file);
    const Tensor want_full = io::read_npy(dir() + "/" + c["full"].get<std::string>());
    ASSERT_EQ(full.shape(), want_full.shape());
    EXPECT_LE(max_diff(full, want_full), jpeg ? 1.0 : 0.0);
    const Tensor small = io::load_image(dir() + "/" + file, 7, 9);
    const Tensor want_small = io::read_npy(dir() + "/" + c["resized_7x9"].get<std::string>());
    ASSERT_EQ(small.shape(), want_small.shape());
    EXPECT_LE(max_diff(small, want_small), jpeg ? 1.0 : 0.0);
    EXPECT_TRUE(io::is_image_file(dir() + "/" + file));
  }
}

TEST(Images, BadFilesAreFormatErrors) {
  EXPECT_THROW(io::read_image(dir() + "/images.json"), io::FormatError);
  EXPECT_THROW(io::read_image(dir() + "/nothere.png"), io::FileError);
  EXPECT_FALSE(io::is_image_file(dir() + "/images.json"));
  // A truncated PNG and a truncated JPEG: errors naming the file, never a crash or exit.
  for (const std::string name : {"rgb.png", "photo.jpg"}) {
    std::ifstream f(dir() + "/" + name, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const std::string cut = testing::TempDir() + "/cut_" + name;
    std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
    try {
      (void)io::read_image(cut);
      if (name == "rgb.png") ADD_FAILURE() << "a truncated PNG was read";
    } catch (const io::FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(cut), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(io::resize_nearest(Tensor(Shape{2, 2}), 1, 1), ShapeError);
}

// tf.image.resize(..., method="bilinear") (TensorFlow 2.21): downscale, upscale, the same
// size, mixed, one-pixel rows.
TEST(Images, BilinearResizeAsTensorFlow) {
  std::ifstream in(dir() + "/bilinear.json");
  const auto spec = nlohmann::json::parse(in);
  ASSERT_EQ(spec["cases"].size(), 6u);
  for (const auto& c : spec["cases"]) {
    SCOPED_TRACE(c["input"].get<std::string>());
    const Tensor x = io::read_npy(dir() + "/" + c["input"].get<std::string>());
    const Tensor want = io::read_npy(dir() + "/" + c["output"].get<std::string>());
    const Tensor y =
        io::resize_bilinear(x, c["size"][0].get<std::int64_t>(), c["size"][1].get<std::int64_t>());
    ASSERT_EQ(y.shape(), want.shape());
    EXPECT_EQ(max_diff(y, want), 0.0);
  }
  EXPECT_THROW(io::resize_bilinear(Tensor(Shape{2, 2}), 1, 1), ShapeError);
  EXPECT_THROW(io::resize_bilinear(Tensor(Shape{2, 2, 1}), 0, 1), ArgumentError);
}

// keras.utils.image_dataset_from_directory(folder, image_size=(5, 7), shuffle=False):
// class names, file order (nested folders, letter case, hidden and stray entries),
// labels, and the images (every PNG color type, bilinear resize).
TEST(ImageFolder, IndexedAndLoadedAsKeras) {
  std::ifstream in(dir() + "/folder.json");
  const auto spec = nlohmann::json::parse(in);
  const std::string root = dir() + "/" + spec["directory"].get<std::string>();
  const io::ImageFolderIndex index = io::index_image_folder(root);
  EXPECT_EQ(index.class_names, spec["class_names"].get<std::vector<std::string>>());
  const auto files = spec["files"].get<std::vector<std::string>>();
  ASSERT_EQ(index.files.size(), files.size());
  for (std::size_t i = 0; i < files.size(); ++i) EXPECT_EQ(index.files[i], root + "/" + files[i]) << i;
  EXPECT_EQ(index.labels, spec["labels"].get<std::vector<std::int64_t>>());
  const io::ImageFolderDataset ds = io::load_image_folder(root, 5, 7);
  const Tensor want = io::read_npy(dir() + "/" + spec["images"].get<std::string>());
  ASSERT_EQ(ds.x.shape(), want.shape());
  EXPECT_EQ(max_diff(ds.x, want), 0.0);
  ASSERT_EQ(ds.y.numel(), static_cast<std::int64_t>(files.size()));
  for (std::int64_t i = 0; i < ds.y.numel(); ++i)
    EXPECT_EQ(ds.y[i], static_cast<float>(index.labels[static_cast<std::size_t>(i)]));
  EXPECT_TRUE(io::looks_like_image_folder(root));
  EXPECT_FALSE(io::looks_like_image_folder(root + "/cat/b.png"));
}

TEST(ImageFolder, ClearErrors) {
  namespace fs = std::filesystem;
  const fs::path base = fs::path(testing::TempDir()) / "bnorm_image_folder_errors";
  fs::remove_all(base);
  fs::create_directories(base / "empty");
  EXPECT_THROW(io::index_image_folder(base / "missing"), io::FileError);
  try {
    (void)io::index_image_folder(base / "empty");
    ADD_FAILURE() << "a folder without classes was accepted";
  } catch (const io::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("no subfolders"), std::string::npos) << e.what();
  }
  fs::create_directories(base / "no_images" / "a");
  std::ofstream(base / "no_images" / "a" / "notes.txt") << "text";
  try {
    (void)io::index_image_folder(base / "no_images");
    ADD_FAILURE() << "classes without images were accepted";
  } catch (const io::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("none in 1 class folders (a)"), std::string::npos) << e.what();
  }
  fs::create_directories(base / "bad" / "a");
  fs::copy_file(dir() + "/rgb.png", base / "bad" / "a" / "good.png");
  std::ofstream(base / "bad" / "a" / "broken.png") << "not a png";
  try {
    (void)io::load_image_folder(base / "bad", 4, 4);
    ADD_FAILURE() << "a broken image was accepted";
  } catch (const io::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("broken.png"), std::string::npos) << e.what();
  }
  EXPECT_THROW(io::load_image_folder(base / "bad", 0, 4), ArgumentError);
  EXPECT_THROW(io::index_image_folder(dir() + "/rgb.png"), io::FileError);
  fs::remove_all(base);
}
