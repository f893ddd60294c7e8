// PNG and JPEG inputs (io/image.hpp) against what Keras's load_img + img_to_array give
// for the same files (tests/fixtures/images/, made by tests/fixtures/generate_images.py
// with Keras 3.15.1 and Pillow 13.0.0): decoded values and the nearest resize to 7 x 9.
// PNG decoding is exact; JPEG's within 1 level (libjpeg versions may round differently).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bnorm/io/array_file.hpp"
#include "bnorm/io/image.hpp"
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
