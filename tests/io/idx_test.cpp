// IDX reader: tiny files written here byte by byte, plain and gzip-compressed (the gzip
// container is built by hand with stored deflate blocks, so the test does not trust the
// library's own zlib use to check it), and broken files that must raise typed errors
// naming the file.
#include "bnorm/io/idx.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bnorm/io/datasets.hpp"

namespace {

namespace fs = std::filesystem;
using bnorm::io::FileError;
using bnorm::io::FormatError;
using bnorm::io::IdxType;
using Bytes = std::vector<std::uint8_t>;

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("bnorm_idx_test_" + std::string(info->name()) + "_" +
                                        std::to_string(static_cast<long>(::getpid())));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const std::string& name, const Bytes& bytes) {
    const fs::path p = dir_ / name;
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return p;
  }

  fs::path dir_;
};

void put_u32_be(Bytes& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(v >> s));
}
void put_u32_le(Bytes& b, std::uint32_t v) {
  for (int s = 0; s <= 24; s += 8) b.push_back(static_cast<std::uint8_t>(v >> s));
}

Bytes idx_header(std::uint8_t type, const std::vector<std::uint32_t>& dims) {
  Bytes b{0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (auto d : dims) put_u32_be(b, d);
  return b;
}

std::uint32_t crc32(const Bytes& data) {  // the gzip (IEEE 802.3) CRC, bit by bit
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::uint8_t byte : data) {
    c ^= byte;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

// RFC 1952 member holding RFC 1951 "stored" (uncompressed) blocks.
Bytes gzip_stored(const Bytes& data) {
  Bytes g{0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 255};
  std::size_t at = 0;
  do {
    const std::size_t n = std::min<std::size_t>(65535, data.size() - at);
    const bool last = at + n == data.size();
    g.push_back(last ? 1 : 0);
    g.push_back(static_cast<std::uint8_t>(n & 0xFF));
    g.push_back(static_cast<std::uint8_t>(n >> 8));
    g.push_back(static_cast<std::uint8_t>(~n & 0xFF));
    g.push_back(static_cast<std::uint8_t>((~n >> 8) & 0xFF));
    g.insert(g.end(), data.begin() + static_cast<std::ptrdiff_t>(at),
             data.begin() + static_cast<std::ptrdiff_t>(at + n));
    at += n;
  } while (at < data.size());
  put_u32_le(g, crc32(data));
  put_u32_le(g, static_cast<std::uint32_t>(data.size()));
  return g;
}

// A 2x3 uint8 image set: pixels 0, 51, 102, 153, 204, 255.
Bytes tiny_images() {
  Bytes b = idx_header(0x08, {2, 1, 3});
  for (std::uint8_t v : Bytes{0, 51, 102, 153, 204, 255}) b.push_back(v);
  return b;
}

// read_idx's errors: the file as `where`, the place in it (or nothing) as `argument`;
// the message starts with the path (no reader function name).
template <typename E, typename F>
void expect_reader_error(F&& f, const fs::path& path, const std::string& fragment) {
  try {
    f();
    FAIL() << "expected an exception for " << path;
  } catch (const E& e) {
    EXPECT_EQ(e.where(), path.string());
    EXPECT_EQ(std::string(e.what()).rfind(path.string() + ": ", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

// load_mnist_layout's own errors: the file as `argument`.
template <typename E, typename F>
void expect_error_naming(F&& f, const fs::path& path, const std::string& fragment) {
  try {
    f();
    FAIL() << "expected an exception for " << path;
  } catch (const E& e) {
    EXPECT_EQ(e.argument(), path.string());
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST_F(IdxTest, ReadsPlainUint8) {
  const auto p = write("images-idx3-ubyte", tiny_images());
  const auto a = bnorm::io::read_idx(p);
  EXPECT_EQ(a.type, IdxType::u8);
  EXPECT_EQ(a.dims, (std::vector<std::int64_t>{2, 1, 3}));
  EXPECT_EQ(a.numel(), 6);
  EXPECT_EQ(a.data, (Bytes{0, 51, 102, 153, 204, 255}));
  const auto t = bnorm::io::to_tensor(a, 1.0 / 255.0);
  EXPECT_EQ(t.shape(), (bnorm::Shape{2, 1, 3}));
  EXPECT_FLOAT_EQ(t[1], 0.2f);
  EXPECT_EQ(t[0], 0.0f);
  EXPECT_EQ(t[5], 1.0f);  // exactly: the product is taken in double
}

TEST_F(IdxTest, ReadsGzipLikePlain) {
  const auto plain = bnorm::io::read_idx(write("a", tiny_images()));
  const auto gz = bnorm::io::read_idx(write("a.gz", gzip_stored(tiny_images())));
  EXPECT_EQ(gz.dims, plain.dims);
  EXPECT_EQ(gz.data, plain.data);
}

TEST_F(IdxTest, ReadsGzipSpanningSeveralBlocks) {
  Bytes b = idx_header(0x08, {70000});
  for (std::uint32_t i = 0; i < 70000; ++i) b.push_back(static_cast<std::uint8_t>(i * 7));
  const auto a = bnorm::io::read_idx(write("long.gz", gzip_stored(b)));
  ASSERT_EQ(a.numel(), 70000);
  EXPECT_EQ(a.data[69999], static_cast<std::uint8_t>(69999u * 7));
}

TEST_F(IdxTest, ConvertsBigEndianTypes) {
  Bytes i16 = idx_header(0x0B, {2});
  for (std::uint8_t v : Bytes{0xFF, 0xFE, 0x01, 0x00}) i16.push_back(v);  // -2, 256
  const auto t16 = bnorm::io::to_tensor(bnorm::io::read_idx(write("i16", i16)));
  EXPECT_EQ(t16[0], -2.0f);
  EXPECT_EQ(t16[1], 256.0f);

  Bytes f32 = idx_header(0x0D, {1});
  for (std::uint8_t v : Bytes{0x3F, 0xC0, 0x00, 0x00}) f32.push_back(v);  // 1.5f
  EXPECT_EQ(bnorm::io::to_tensor(bnorm::io::read_idx(write("f32", f32)))[0], 1.5f);

  Bytes i32 = idx_header(0x0C, {1});
  for (std::uint8_t v : Bytes{0xFF, 0xFF, 0xFF, 0xF9}) i32.push_back(v);  // -7
  EXPECT_EQ(bnorm::io::to_tensor(bnorm::io::read_idx(write("i32", i32)))[0], -7.0f);
}

TEST_F(IdxTest, MissingFileIsFileErrorNamingIt) {
  const auto p = dir_ / "absent-idx1-ubyte.gz";
  expect_reader_error<FileError>([&] { bnorm::io::read_idx(p); }, p, "no such file");
}

TEST_F(IdxTest, DirectoryIsFileError) {
  expect_reader_error<FileError>([&] { bnorm::io::read_idx(dir_); }, dir_, "directory");
}

TEST_F(IdxTest, BadMagicIsFormatErrorNamingFile) {
  Bytes b = tiny_images();
  b[0] = 'P', b[1] = 'K';
  const auto p = write("zip", b);
  expect_reader_error<FormatError>([&] { bnorm::io::read_idx(p); }, p, "0x50 0x4B");
}

TEST_F(IdxTest, UnknownTypeAndBadRankAreFormatErrors) {
  Bytes bad_type = tiny_images();
  bad_type[2] = 0x07;
  const auto p1 = write("type", bad_type);
  expect_reader_error<FormatError>([&] { bnorm::io::read_idx(p1); }, p1, "type code");
  Bytes rank0 = tiny_images();
  rank0[3] = 0;
  const auto p2 = write("rank", rank0);
  expect_reader_error<FormatError>([&] { bnorm::io::read_idx(p2); }, p2, "rank");
}

TEST_F(IdxTest, TruncatedPlainFileIsFormatError) {
  Bytes b = tiny_images();
  b.resize(b.size() - 2);
  const auto p = write("short", b);
  expect_reader_error<FormatError>([&] { bnorm::io::read_idx(p); }, p, "truncated");
  const auto header_only = write("header", Bytes{0, 0, 8, 3, 0, 0});
  expect_reader_error<FormatError>([&] { bnorm::io::read_idx(header_only); }, header_only, "truncated");
}

TEST_F(IdxTest, TrailingBytesAreFormatError) {
  Bytes b = tiny_images();
  b.push_back(9);
  const auto p = write("long", b);
  expect_reader_error<FormatError>([&] { bnorm::io::read_idx(p); }, p,
                                   "data: expected 6 bytes for uint8 elements of shape (2, 1, 3), received 7 (trailing bytes)");
}

TEST_F(IdxTest, TruncatedGzipIsFormatError) {
  Bytes g = gzip_stored(tiny_images());
  g.resize(g.size() - 10);  // cut inside the stored block
  const auto p = write("cut.gz", g);
  expect_reader_error<FormatError>([&] { bnorm::io::read_idx(p); }, p, "gzip");
}

TEST_F(IdxTest, EmptyFileIsFormatError) {
  const auto p = write("empty", {});
  expect_reader_error<FormatError>([&] { bnorm::io::read_idx(p); }, p, "empty file");
}

TEST_F(IdxTest, DatasetDirectoryErrorsNameThePath) {
  const auto missing = dir_ / "nope";
  expect_error_naming<FileError>([&] { bnorm::io::load_mnist_layout(missing); }, missing,
                                 "no such directory");
  // A directory without the files: the first missing file is named.
  expect_error_naming<FileError>([&] { bnorm::io::load_mnist_layout(dir_); },
                                 dir_ / "train-images-idx3-ubyte.gz", "no such file");
}

TEST_F(IdxTest, LoadsAnMnistLayoutDirectory) {
  // 2 training and 1 test image of 1x3 pixels, mixing gzip and plain files.
  write("train-images-idx3-ubyte.gz", gzip_stored(tiny_images()));
  Bytes labels = idx_header(0x08, {2});
  labels.push_back(3), labels.push_back(9);
  write("train-labels-idx1-ubyte", labels);
  Bytes test_images = idx_header(0x08, {1, 1, 3});
  for (std::uint8_t v : Bytes{255, 0, 255}) test_images.push_back(v);
  write("t10k-images-idx3-ubyte", test_images);
  Bytes test_labels = idx_header(0x08, {1});
  test_labels.push_back(0);
  write("t10k-labels-idx1-ubyte.gz", gzip_stored(test_labels));

  const auto d = bnorm::io::load_mnist_layout(dir_);
  EXPECT_EQ(d.x_train.shape(), (bnorm::Shape{2, 3}));
  EXPECT_EQ(d.y_train.shape(), (bnorm::Shape{2}));
  EXPECT_EQ(d.x_test.shape(), (bnorm::Shape{1, 3}));
  EXPECT_EQ(d.y_train[1], 9.0f);
  EXPECT_EQ(d.x_test[0], 1.0f);
  EXPECT_EQ(d.height, 1);
  EXPECT_EQ(d.width, 3);
}

TEST_F(IdxTest, LabelOutsideTheClassesIsFormatError) {
  write("train-images-idx3-ubyte", tiny_images());
  Bytes labels = idx_header(0x08, {2});
  labels.push_back(3), labels.push_back(10);
  const auto p = write("train-labels-idx1-ubyte", labels);
  expect_error_naming<FormatError>([&] { bnorm::io::load_mnist_layout(dir_); }, p, "received 10");
}

TEST_F(IdxTest, LabelCountMustMatchImages) {
  write("train-images-idx3-ubyte", tiny_images());
  Bytes labels = idx_header(0x08, {3});
  labels.push_back(1), labels.push_back(2), labels.push_back(3);
  const auto p = write("train-labels-idx1-ubyte", labels);
  expect_error_naming<FormatError>([&] { bnorm::io::load_mnist_layout(dir_); }, p, "2 labels");
}

}  // namespace
