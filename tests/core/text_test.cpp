#include <gtest/gtest.h>

#include <string>

#include "bnorm/core/error.hpp"
#include "bnorm/core/text.hpp"

using namespace std::string_literals;

TEST(Printable, KeepsPrintableAsciiAndEscapesTheRest) {
  EXPECT_EQ(bnorm::printable("abc 1.5,x"), "abc 1.5,x");
  EXPECT_EQ(bnorm::printable("a\x1b[31mb\0c"s), "a\\x1b[31mb\\x00c");
  EXPECT_EQ(bnorm::printable("t\tn\nr\r\\"), "t\\tn\\nr\\r\\\\");
  EXPECT_EQ(bnorm::printable("\x7f\xc3\xa9"), "\\x7f\\xc3\\xa9");
  EXPECT_EQ(bnorm::printable_quoted("x"), "'x'");
  EXPECT_EQ(bnorm::printable_quoted(""), "''");
}

TEST(Printable, CutsLongValuesAtAnEscapeBoundaryWithTheLength) {
  const std::string long_text(500, 'x');
  EXPECT_EQ(bnorm::printable(long_text), std::string(60, 'x') + "... (500 bytes)");
  EXPECT_EQ(bnorm::printable_quoted(long_text), "'" + std::string(60, 'x') + "...' (500 bytes)");
  EXPECT_EQ(bnorm::printable(long_text, 0), long_text);
  // 58 characters, then an escape of 4 that does not fit: cut before it, never inside.
  const std::string s = std::string(58, 'a') + "\x01" + "bbb";
  EXPECT_EQ(bnorm::printable(s), std::string(58, 'a') + "... (62 bytes)");
  EXPECT_EQ(bnorm::printable(std::string(60, 'a')), std::string(60, 'a'));  // exactly 60: not cut
}

TEST(Printable, ResultIsAlwaysPrintableAscii) {
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  for (const char c : bnorm::printable(all, 0)) {
    EXPECT_GE(static_cast<unsigned char>(c), 0x20);
    EXPECT_LT(static_cast<unsigned char>(c), 0x7f);
  }
}

TEST(CountOf, SingularForOne) {
  EXPECT_EQ(bnorm::count_of(1, "value"), "1 value");
  EXPECT_EQ(bnorm::count_of(0, "value"), "0 values");
  EXPECT_EQ(bnorm::count_of(784, "field"), "784 fields");
  EXPECT_EQ(bnorm::count_of(2, "index", "indices"), "2 indices");
}

TEST(Error, EmptyArgumentIsLeftOut) {
  bnorm::Error e("x.npy", "", "a NumPy file", "other content");
  EXPECT_STREQ(e.what(), "x.npy: expected a NumPy file, received other content");
}
