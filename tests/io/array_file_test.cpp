// .npy and CSV files: every file NumPy wrote in tests/fixtures/arrays/ (generator:
// tests/fixtures/generate_array_files.py) read and compared with what NumPy says it
// holds; write_npy's bytes compared with numpy.save's; round trips; and broken files that
// must raise typed errors naming the file and the problem.
#include "bnorm/io/array_file.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "nn/fixture_file.hpp"

namespace {

namespace fs = std::filesystem;
using bnorm::Shape;
using bnorm::Tensor;
using bnorm::io::FileError;
using bnorm::io::FormatError;
namespace io = bnorm::io;

std::string arrays_dir() { return bnorm::test::fixtures_dir() + "/arrays"; }

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class ArrayFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("bnorm_array_file_test_" + std::string(info->name()) + "_" + std::to_string(static_cast<long>(::getpid())));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& bytes) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// Expects `call` to throw E whose message contains every one of `words`.
template <typename E, typename F>
void expect_error(F call, const std::vector<std::string>& words) {
  try {
    call();
    ADD_FAILURE() << "no exception; expected one containing '" << words.front() << "'";
  } catch (const E& e) {
    for (const auto& w : words) EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what() << "\n  lacks: " << w;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

TEST_F(ArrayFileTest, EveryNumpyFixtureReadsAsNumpySaysOrIsRefusedByName) {
  const auto fixture = bnorm::test::read_fixture("arrays.json", "bnorm-array-files", 1);
  ASSERT_TRUE(fixture.error.empty()) << fixture.error;
  int good = 0, bad = 0;
  for (const auto& [name, c] : fixture.data.at("files").items()) {
    SCOPED_TRACE(name);
    const std::string p = arrays_dir() + "/" + name;
    if (c.contains("error")) {
      expect_error<FormatError>([&] { io::read_array(p); }, {p, c.at("error").get<std::string>()});
      ++bad;
      continue;
    }
    const Tensor t = io::read_array(p);
    EXPECT_EQ(t.shape(), Shape(c.at("shape").get<std::vector<std::int64_t>>()));
    const auto want = c.at("values").get<std::vector<float>>();
    ASSERT_EQ(static_cast<std::size_t>(t.numel()), want.size());
    for (std::size_t i = 0; i < want.size(); ++i) EXPECT_EQ(t[static_cast<std::int64_t>(i)], want[i]) << "element " << i;
    ++good;
  }
  EXPECT_EQ(good, 12);
  EXPECT_EQ(bad, 4);
}

TEST_F(ArrayFileTest, WriteNpyWritesTheBytesNumpySaveWrites) {
  for (const char* name : {"f4_2x3.npy", "f4_scalar.npy", "f4_0x3.npy", "f4_10x784.npy"}) {
    SCOPED_TRACE(name);
    const std::string original = arrays_dir() + "/" + name;
    const Tensor t = io::read_npy(original);
    io::write_npy(t, path("copy.npy"));
    EXPECT_EQ(slurp(path("copy.npy")), slurp(original));
  }
  // Rank 1: "(5,)".
  io::write_npy(Tensor(Shape{5}, {1, 2, 3, 4, 5}), path("r1.npy"));
  const std::string bytes = slurp(path("r1.npy"));
  EXPECT_NE(bytes.find("'shape': (5,), }"), std::string::npos);
  EXPECT_EQ((bytes.size() - 20) % 64, 0u);  // header aligned to 64 bytes, 20 data bytes
  EXPECT_EQ(io::read_npy(path("r1.npy")).vector(), (std::vector<float>{1, 2, 3, 4, 5}));
}

TEST_F(ArrayFileTest, CsvRoundTripIsExactForFloat32) {
  const Tensor t(Shape{2, 3}, {0.1f, -1e-30f, 3.4028235e38f, 1.0f / 3.0f, -0.0f, 123456.789f});
  io::write_csv(t, path("t.csv"));
  const Tensor back = io::read_csv(path("t.csv"));
  EXPECT_EQ(back.shape(), (Shape{2, 3}));
  EXPECT_EQ(back.vector(), t.vector());
  // Rank 3 is written as rows of the flattened rest; rank 1 as one column.
  io::write_array(Tensor(Shape{2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8}), path("r3.csv"));
  EXPECT_EQ(slurp(path("r3.csv")), "1,2,3,4\n5,6,7,8\n");
  std::ostringstream text;
  io::write_csv(Tensor(Shape{3}, {1.5f, 2, -3}), text);
  EXPECT_EQ(text.str(), "1.5\n2\n-3\n");
}

TEST_F(ArrayFileTest, CsvHeaderDetectionWhitespaceAndLineEnds) {
  const std::string p = write("h.csv", "x1, x2 ,\"x3\"\r\n1, 2,3\r\n\r\n 4 ,5e-1,-inf\r\n\n");
  const Tensor t = io::read_csv(p);
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t[4], 0.5f);
  EXPECT_TRUE(std::isinf(t[5]) && t[5] < 0);
  // Forced choices.
  const std::string q = write("n.csv", "1,2\n3,4\n");
  EXPECT_EQ(io::read_csv(q, {.header = true}).shape(), (Shape{1, 2}));
  EXPECT_EQ(io::read_csv(q, {.header = false}).shape(), (Shape{2, 2}));
  // Another delimiter, no trailing newline.
  EXPECT_EQ(io::read_csv(write("s.csv", "1;2;3"), {.delimiter = ';'}).shape(), (Shape{1, 3}));
}

TEST_F(ArrayFileTest, CsvErrorsNameLineAndColumn) {
  const std::string bad_field = write("bad.csv", "a,b,c\n1,2,3\n4,oops,6\n");
  expect_error<FormatError>([&] { io::read_csv(bad_field); },
                            {bad_field + ": line 3, column 2: expected a number, received 'oops'"});
  const std::string mixed = write("mixed.csv", "1,2,x\n3,4,5\n");
  expect_error<FormatError>([&] { io::read_csv(mixed); }, {"line 1, column 3", "'x'"});
  const std::string ragged = write("ragged.csv", "1,2,3\n4,5,6\n7,8\n");
  expect_error<FormatError>([&] { io::read_csv(ragged); },
                            {ragged + ": line 3: expected 3 fields (as line 1), received 2"});
  const std::string one_column = write("one_column.csv", "1\n2,3\n");
  expect_error<FormatError>([&] { io::read_csv(one_column); }, {"line 2: expected 1 field (as line 1), received 2"});
  const std::string empty_field = write("empty_field.csv", "1,,3\n");
  expect_error<FormatError>([&] { io::read_csv(empty_field); }, {"line 1, column 2", "an empty field"});
  const std::string empty = write("empty.csv", "");
  expect_error<FormatError>([&] { io::read_csv(empty); }, {"at least one row", "an empty file"});
  const std::string only_header = write("only_header.csv", "a,b\n\n");
  expect_error<FormatError>([&] { io::read_csv(only_header); }, {"no data rows"});
  // The reader names the file as `where` and the place in it as `argument`: no reader
  // function name, no doubled "expected".
  try {
    io::read_csv(ragged);
    ADD_FAILURE() << "no exception";
  } catch (const FormatError& e) {
    EXPECT_EQ(e.where(), ragged);
    EXPECT_EQ(e.argument(), "line 3");
    EXPECT_EQ(e.expected(), "3 fields (as line 1)");
    EXPECT_EQ(e.received(), "2");
  }
}

// Bytes from a file reach messages escaped (core/text.hpp): an escape sequence or a NUL
// in a field neither drives the terminal nor cuts the message.
TEST_F(ArrayFileTest, FileBytesInMessagesAreEscaped) {
  using namespace std::string_literals;
  const std::string csv = write("esc.csv", "1,2,3\n4,\x1b[31mred\0after,6\n"s);
  expect_error<FormatError>([&] { io::read_csv(csv); }, {"received '\\x1b[31mred\\x00after'"});
  std::string npy = slurp(arrays_dir() + "/f4_2x3.npy");
  npy.replace(npy.find("'shape'"), 7, "'\0\x1b[2J'"s);  // a key with a NUL and "clear screen"
  expect_error<FormatError>([&] { io::read_npy(write("ctl.npy", npy)); },
                            {"ctl.npy: header: expected a dict literal with only the keys", "'\\x00\\x1b[2J': (2, 3)"});
  const std::string long_field = write("long.csv", "1," + std::string(300, 'z') + "\n");
  expect_error<FormatError>([&] { io::read_csv(long_field); }, {"zzz...' (300 bytes)"});
  for (const std::string& p : {csv, write("ctl.npy", npy), long_field}) {
    try {
      io::read_array(p);
      ADD_FAILURE() << "no exception for " << p;
    } catch (const FormatError& e) {
      for (const char c : std::string(e.what())) {
        EXPECT_TRUE(c >= 0x20 && c < 0x7f) << "byte " << int(static_cast<unsigned char>(c)) << " in " << e.what();
      }
    }
  }
}

TEST_F(ArrayFileTest, MissingFilesAndFoldersAreFileErrors) {
  expect_error<FileError>([&] { io::read_array(path("nope.npy")); }, {"nope.npy", "no such file"});
  expect_error<FileError>([&] { io::read_array(path("nope.csv")); }, {"nope.csv", "no such file"});
  expect_error<FileError>([&] { io::read_npy(dir_.string()); }, {"a folder"});
  expect_error<FileError>([&] { io::write_npy(Tensor(Shape{1}), path("no/such/dir/x.npy")); }, {"x.npy"});
}

TEST_F(ArrayFileTest, BrokenNpyFilesAreFormatErrors) {
  const std::string good = slurp(arrays_dir() + "/f4_2x3.npy");
  ASSERT_EQ(good.size(), 152u);
  // Cut in the data, in the header, in the magic; one byte too many.
  expect_error<FormatError>([&] { io::read_npy(write("cut.npy", good.substr(0, 150))); },
                            {"cut.npy: data: expected 24 bytes for <f4 elements of shape (2, 3), received 22 bytes (truncated)"});
  expect_error<FormatError>([&] { io::read_npy(write("cut_header.npy", good.substr(0, 40))); },
                            {"cut_header.npy: header: expected 118 bytes, received 30 (truncated)"});
  expect_error<FormatError>([&] { io::read_npy(write("short.npy", good.substr(0, 5))); }, {"\\x93NUMPY"});
  expect_error<FormatError>([&] { io::read_npy(write("long.npy", good + "x")); }, {"bytes after the data"});
  // Not .npy at all (a CSV named .npy), an unknown version, a header that is not a dict.
  expect_error<FormatError>([&] { io::read_npy(write("text.npy", "1,2,3\n4,5,6\n")); }, {"a NumPy .npy file"});
  std::string v9 = good;
  v9[6] = 9;
  expect_error<FormatError>([&] { io::read_npy(write("v9.npy", v9)); }, {"v9.npy: format version: expected 1.0, 2.0 or 3.0, received 9.0"});
  std::string garbled = good;
  garbled.replace(garbled.find("'shape'"), 7, "'shope'");
  expect_error<FormatError>([&] { io::read_npy(write("garbled.npy", garbled)); }, {"'descr', 'fortran_order' and 'shape'"});
  // A shape whose byte count overflows.
  std::string huge = good;
  huge.replace(huge.find("(2, 3)"), 6, "(99999999999, 99999999999, 99999999999)");
  expect_error<FormatError>([&] { io::read_npy(write("huge.npy", huge)); }, {"huge.npy"});
}

TEST_F(ArrayFileTest, SuffixPicksTheFormat) {
  EXPECT_TRUE(io::is_npy_path("a.npy"));
  EXPECT_TRUE(io::is_npy_path("dir.x/A.NPY"));
  EXPECT_FALSE(io::is_npy_path("a.csv"));
  EXPECT_FALSE(io::is_npy_path("npy"));
  io::write_array(Tensor(Shape{1, 2}, {1, 2}), path("o.npy"));
  EXPECT_EQ(slurp(path("o.npy")).substr(1, 5), "NUMPY");
  io::write_array(Tensor(Shape{1, 2}, {1, 2}), path("o.txt"));
  EXPECT_EQ(slurp(path("o.txt")), "1,2\n");
}

}  // namespace
