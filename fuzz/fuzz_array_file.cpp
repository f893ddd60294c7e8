// libFuzzer target: the .npy and CSV array readers (io::read_npy, io::read_csv).
//
// The readers take a path, so every input is written to one temporary file (in TMPDIR,
// removed at exit) and read from there as .npy, as CSV with the header detected, and as
// CSV with no header.
//
// Properties checked on every input, beyond "no crash, no sanitizer report":
//   * the only exception is io::FormatError (the file exists, so never io::FileError);
//   * an array that reads writes back (io::write_npy / io::write_csv) and reads again to
//     the same shape and the same values: bit for bit through .npy, and through CSV
//     ("%.9g", float32 round-trips exactly) with NaN read back as NaN;
//   * a CSV that reads with no header reads the same with the header detected (its first
//     line is numbers, so it is no header).
//
// Seeds: the array fixtures, plus a few CSV variants written by
//   BNORM_FUZZ_WRITE_SEEDS=DIR fuzz_array_file
// then
//   fuzz_array_file -max_total_time=60 CORPUS_DIR tests/fixtures/arrays DIR
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "bnorm/io/array_file.hpp"

namespace io = bnorm::io;

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "%s\n", what);
  std::abort();
}

// One scratch folder per process: the input and the round-trip files.
struct Scratch {
  std::string dir;
  std::string input, npy, csv;
  Scratch() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/bnorm_fuzz_array.XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) fail("fuzz_array_file: cannot create a scratch folder");
    dir = pattern;
    input = dir + "/input";
    npy = dir + "/round_trip.npy";
    csv = dir + "/round_trip.csv";
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

Scratch& scratch() {
  static Scratch s;
  return s;
}

bool same_bits(const bnorm::Tensor& a, const bnorm::Tensor& b) {
  return a.shape() == b.shape() &&
         (a.numel() == 0 || std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.numel()) * sizeof(float)) == 0);
}

bool same_values(const bnorm::Tensor& a, const bnorm::Tensor& b) {
  if (!(a.shape() == b.shape())) return false;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    const bool both_nan = std::isnan(a[i]) && std::isnan(b[i]);
    if (!both_nan && std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return false;
  }
  return true;
}

// The read, or nullopt after a FormatError; any other exception escapes.
template <class Read>
std::optional<bnorm::Tensor> read_or_refused(Read read) {
  try {
    return read();
  } catch (const io::FormatError&) {
    return std::nullopt;
  }
}

void check_csv_round_trip(const bnorm::Tensor& x) {
  io::write_csv(x, scratch().csv);
  const bnorm::Tensor again = io::read_csv(scratch().csv, {.header = false});
  if (!same_values(x, again)) fail("a CSV array does not read back the same after write_csv");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("BNORM_FUZZ_WRITE_SEEDS")) {
    const std::string d(dir);
    std::ofstream(d + "/special.csv", std::ios::binary) << "a, b ,\"c\"\r\n1e-45,-0,nan\r\ninf,-inf,3.40282347e38\r\n";
    std::ofstream(d + "/mixed_header.csv", std::ios::binary) << "1,x\n2,3\n";
    std::ofstream(d + "/blank_lines.csv", std::ios::binary) << "\n  \n1\n\n2\n";
    std::ofstream(d + "/ragged.csv", std::ios::binary) << "1,2,3\n4,5\n";
    bnorm::Tensor x(bnorm::Shape{2, 1, 3});
    for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(i) * 0.5f - 1.0f;
    io::write_npy(x, d + "/f4_2x1x3.npy");
    std::printf("seeds written to %s\n", dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Scratch& s = scratch();
  {
    std::ofstream out(s.input, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) fail("fuzz_array_file: cannot write the input file");
  }

  if (const auto x = read_or_refused([&] { return io::read_npy(s.input); })) {
    io::write_npy(*x, s.npy);
    if (!same_bits(*x, io::read_npy(s.npy))) fail("a .npy array does not read back the same after write_npy");
  }

  const auto detected = read_or_refused([&] { return io::read_csv(s.input); });
  const auto no_header = read_or_refused([&] { return io::read_csv(s.input, {.header = false}); });
  if (detected) check_csv_round_trip(*detected);
  if (no_header) check_csv_round_trip(*no_header);
  // A file that reads with no header has a first line of numbers, so detection finds no
  // header there and reads the same array.
  if (no_header && !(detected && same_values(*detected, *no_header)))
    fail("read_csv with the header detected differs from the read with no header");
  return 0;
}
