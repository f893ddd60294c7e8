// A small stand-in for libFuzzer's main(), for compilers without -fsanitize=fuzzer (g++,
// which CI uses). It links with one fuzz target (LLVMFuzzerTestOneInput, and
// LLVMFuzzerInitialize when the target defines one) and runs it
//   1. on every seed file given on the command line (files, or folders of files), then
//   2. on -runs=N inputs made from the seeds by deterministic mutations: bit flips, bytes
//      set to 0x00 / 0xff / random, truncation, erasure, duplication and insertion of byte
//      ranges, splices from another seed, 2/4/8-byte little-endian integers overwritten
//      with boundary values (0, 1, 0x7fffffff, 0xffffffff, 2^63, the input size...) or
//      nudged by a small delta, and decimal numbers in text replaced by boundary ones.
// There is no coverage feedback: this is a smoke fuzzer with a fixed seed, so CI runs are
// reproducible; long runs belong to libFuzzer (fuzz/README.md).
//
//   fuzz_target [-runs=N] [-seed=S] [-max_len=L] [-max_total_time=T]
//               [-malloc_limit_mb=M] [-artifact_prefix=P] [FILE_OR_DIR...]
//
// -runs=N          mutated inputs after the seeds (default 2000; 0: seeds only)
// -seed=S          the mutation generator's seed (default 1)
// -max_len=L       mutated inputs are cut to L bytes (default: max(4096, largest seed))
// -max_total_time=T  stop mutating after T seconds (default 0: no limit)
// -malloc_limit_mb=M  a single allocation above M MiB is reported as a crash, as
//                  libFuzzer does (default 2048; 0: no limit)
// -artifact_prefix=P  where a crashing input is written: P + "crash-<input number>"
// Other -flag=value options of libFuzzer are accepted and ignored, so one command line
// serves both builds.
//
// Output: one summary line, "fuzz: N inputs (...) in T s, 0 escaped exceptions". Exit status 0; a target
// that aborts (a violated property, a sanitizer report) ends the process, and the driver
// writes the input first. An exception escaping the target is reported, its input
// written, and the exit status is 1.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <new>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) __attribute__((weak));
extern "C" void __sanitizer_set_death_callback(void (*callback)()) __attribute__((weak));

namespace {

// ---- the input being run, for the crash handlers -------------------------------------

const std::uint8_t* volatile g_current_data = nullptr;
volatile std::size_t g_current_size = 0;
volatile bool g_running = false;
char g_crash_path[4096] = "";  // written before each input's run; used by the handlers

void write_current_input() {
  if (!g_running || g_crash_path[0] == '\0') return;
  g_running = false;  // once
  const int fd = ::open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  const std::uint8_t* p = g_current_data;
  std::size_t left = g_current_size;
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n <= 0) break;
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  ::close(fd);
  static const char kMsg[] = "\nfuzz: the crashing input was written to ";
  (void)!::write(2, kMsg, sizeof kMsg - 1);
  (void)!::write(2, g_crash_path, std::strlen(g_crash_path));
  (void)!::write(2, "\n", 1);
}

extern "C" void on_fatal_signal(int sig) {
  write_current_input();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void set_crash_path(const std::string& prefix, std::size_t index) {
  std::snprintf(g_crash_path, sizeof g_crash_path, "%scrash-%zu", prefix.c_str(), index);
}

// ---- a single-allocation limit (libFuzzer's -malloc_limit_mb) -------------------------

std::size_t g_malloc_limit = std::size_t{2048} << 20;

void* checked_alloc(std::size_t size) {
  if (g_malloc_limit != 0 && size > g_malloc_limit && g_running) {
    std::fprintf(stderr, "fuzz: out-of-memory: an allocation of %zu bytes exceeds -malloc_limit_mb=%zu\n", size,
                 g_malloc_limit >> 20);
    std::abort();
  }
  if (size == 0) size = 1;
  if (void* p = std::malloc(size)) return p;
  throw std::bad_alloc();
}

// ---- deterministic mutations -----------------------------------------------------------

// splitmix64: small, fast, and the same sequence on every platform.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); n > 0.
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }

 private:
  std::uint64_t state_;
};

using Bytes = std::vector<std::uint8_t>;

std::uint64_t boundary_value(Rng& rng, std::size_t input_size) {
  static constexpr std::array<std::uint64_t, 18> kValues = {
      0,          1,          2,          7,          8,          0x7f,
      0x80,       0xff,       0x7fff,     0xffff,     0x7fffffff, 0x80000000,
      0xffffffff, 0x100000000ULL, 0x7fffffffffffffffULL, 0x8000000000000000ULL, 0xffffffffffffffffULL,
      0xfffffffffffffffeULL};
  switch (rng.below(4)) {
    case 0: return input_size + rng.below(3) - 1;  // size - 1, size, size + 1
    case 1: return rng.next();
    default: return kValues[rng.below(kValues.size())];
  }
}

// Replace the run of decimal digits around a random digit with a boundary number.
bool mutate_decimal(Bytes& b, Rng& rng) {
  std::vector<std::size_t> digits;
  for (std::size_t i = 0; i < b.size(); ++i)
    if (b[i] >= '0' && b[i] <= '9') digits.push_back(i);
  if (digits.empty()) return false;
  std::size_t begin = digits[rng.below(digits.size())], end = begin + 1;
  while (begin > 0 && b[begin - 1] >= '0' && b[begin - 1] <= '9') --begin;
  while (end < b.size() && b[end] >= '0' && b[end] <= '9') ++end;
  static constexpr std::array<const char*, 16> kNumbers = {
      "0", "1", "2", "9", "-1", "255", "256", "65536", "2147483647", "2147483648", "4294967295", "4294967296",
      "9223372036854775807", "9223372036854775808", "18446744073709551616", "99999999999999999999999"};
  const std::string n = kNumbers[rng.below(kNumbers.size())];
  b.erase(b.begin() + static_cast<std::ptrdiff_t>(begin), b.begin() + static_cast<std::ptrdiff_t>(end));
  b.insert(b.begin() + static_cast<std::ptrdiff_t>(begin), n.begin(), n.end());
  return true;
}

void mutate_once(Bytes& b, const std::vector<Bytes>& seeds, Rng& rng) {
  const auto at = [&](std::size_t off) { return b.begin() + static_cast<std::ptrdiff_t>(off); };
  if (b.empty()) {
    b.push_back(static_cast<std::uint8_t>(rng.next()));
    return;
  }
  switch (rng.below(11)) {
    case 0:  // flip a bit
      b[rng.below(b.size())] ^= static_cast<std::uint8_t>(1u << rng.below(8));
      break;
    case 1: {  // set a byte to 0x00, 0xff or a random value
      static constexpr std::array<std::uint8_t, 2> kSpecial = {0x00, 0xff};
      b[rng.below(b.size())] = rng.below(3) < 2 ? kSpecial[rng.below(2)] : static_cast<std::uint8_t>(rng.next());
      break;
    }
    case 2:  // truncate
      b.resize(rng.below(b.size()));
      break;
    case 3: {  // erase a range
      const std::size_t off = rng.below(b.size());
      const std::size_t n = 1 + rng.below(std::min<std::size_t>(b.size() - off, 64));
      b.erase(at(off), at(off + n));
      break;
    }
    case 4: {  // duplicate a range at another place
      const std::size_t off = rng.below(b.size());
      const std::size_t n = 1 + rng.below(std::min<std::size_t>(b.size() - off, 64));
      const Bytes range(at(off), at(off + n));
      b.insert(at(rng.below(b.size() + 1)), range.begin(), range.end());
      break;
    }
    case 5: {  // insert random bytes
      const std::size_t n = 1 + rng.below(8);
      Bytes r(n);
      for (auto& x : r) x = static_cast<std::uint8_t>(rng.next());
      b.insert(at(rng.below(b.size() + 1)), r.begin(), r.end());
      break;
    }
    case 6:
    case 7: {  // overwrite a 2-, 4- or 8-byte little-endian integer with a boundary value
      static constexpr std::array<std::size_t, 3> kWidths = {2, 4, 8};
      const std::size_t width = std::min(kWidths[rng.below(3) ? 1 + rng.below(2) : 0], b.size());
      const std::size_t off = rng.below(b.size() - width + 1);
      const std::uint64_t v = boundary_value(rng, b.size());
      for (std::size_t i = 0; i < width; ++i) b[off + i] = static_cast<std::uint8_t>(v >> (8 * i));
      break;
    }
    case 8: {  // nudge a 4-byte little-endian integer by a small delta
      if (b.size() < 4) break;
      const std::size_t off = rng.below(b.size() - 3);
      std::uint32_t v = 0;
      for (std::size_t i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(b[off + i]) << (8 * i);
      v += static_cast<std::uint32_t>(rng.below(33)) - 16u;
      for (std::size_t i = 0; i < 4; ++i) b[off + i] = static_cast<std::uint8_t>(v >> (8 * i));
      break;
    }
    case 9:  // a decimal number in text (JSON, .npy and CSV headers)
      if (!mutate_decimal(b, rng)) b[rng.below(b.size())] ^= 0x01;
      break;
    default: {  // splice: a range of another seed over or into this input
      const Bytes& other = seeds[rng.below(seeds.size())];
      if (other.empty()) break;
      const std::size_t off = rng.below(other.size());
      const std::size_t n = 1 + rng.below(std::min<std::size_t>(other.size() - off, 256));
      const std::size_t to = rng.below(b.size() + 1);
      if (rng.below(2)) b.erase(at(to), at(std::min(b.size(), to + n)));
      b.insert(at(to), other.begin() + static_cast<std::ptrdiff_t>(off),
               other.begin() + static_cast<std::ptrdiff_t>(off + n));
      break;
    }
  }
}

// ---- command line ----------------------------------------------------------------------

struct Options {
  std::size_t runs = 2000;
  std::uint64_t seed = 1;
  std::size_t max_len = 0;  // 0: max(4096, largest seed)
  double max_total_time = 0;
  std::string artifact_prefix = "./";
  std::vector<std::string> inputs;
};

bool parse_flag(const std::string& arg, const char* name, std::string& value) {
  const std::string prefix = std::string("-") + name + "=";
  if (arg.rfind(prefix, 0) != 0) return false;
  value = arg.substr(prefix.size());
  return true;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    std::string v;
    if (parse_flag(arg, "runs", v)) {
      o.runs = std::stoul(v);
    } else if (parse_flag(arg, "seed", v)) {
      o.seed = std::stoull(v);
    } else if (parse_flag(arg, "max_len", v)) {
      o.max_len = std::stoul(v);
    } else if (parse_flag(arg, "max_total_time", v)) {
      o.max_total_time = std::stod(v);
    } else if (parse_flag(arg, "malloc_limit_mb", v)) {
      g_malloc_limit = std::size_t{std::stoul(v)} << 20;
    } else if (parse_flag(arg, "artifact_prefix", v)) {
      o.artifact_prefix = v;
    } else if (arg.size() > 1 && arg[0] == '-') {
      std::fprintf(stderr, "fuzz: ignoring libFuzzer option %s\n", arg.c_str());
    } else {
      o.inputs.push_back(arg);
    }
  }
  return o;
}

Bytes read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<Bytes> read_seeds(const std::vector<std::string>& inputs) {
  std::vector<std::filesystem::path> files;
  for (const auto& in : inputs) {
    if (std::filesystem::is_directory(in)) {
      for (const auto& e : std::filesystem::directory_iterator(in))
        if (e.is_regular_file()) files.push_back(e.path());
    } else if (std::filesystem::is_regular_file(in)) {
      files.emplace_back(in);
    } else {
      std::fprintf(stderr, "fuzz: no such file or folder: %s\n", in.c_str());
      std::exit(2);
    }
  }
  std::sort(files.begin(), files.end());  // a fixed order: the same mutations every run
  std::vector<Bytes> seeds;
  for (const auto& f : files) seeds.push_back(read_file(f));
  return seeds;
}

// Runs one input; false when an exception escaped the target.
bool run_one(const Bytes& input, std::size_t index, const std::string& artifact_prefix) {
  // A copy of exactly input.size() bytes, so that ASan sees reads past the end.
  std::unique_ptr<std::uint8_t[]> copy(new std::uint8_t[std::max<std::size_t>(input.size(), 1)]);
  if (!input.empty()) std::memcpy(copy.get(), input.data(), input.size());
  set_crash_path(artifact_prefix, index);
  g_current_data = copy.get();
  g_current_size = input.size();
  g_running = true;
  try {
    LLVMFuzzerTestOneInput(copy.get(), input.size());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: input %zu: an exception escaped the target: %s\n", index, e.what());
    write_current_input();
    return false;
  } catch (...) {
    std::fprintf(stderr, "fuzz: input %zu: an exception of unknown type escaped the target\n", index);
    write_current_input();
    return false;
  }
  g_running = false;
  return true;
}

}  // namespace

// Replaced globally in the driver's executable, so that the malloc limit also covers
// the library's std::vector and std::string allocations.
void* operator new(std::size_t size) { return checked_alloc(size); }
void* operator new[](std::size_t size) { return checked_alloc(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
// The nothrow forms too (std::stable_sort's temporary buffer uses them): an allocation
// and its release must come from the same pair, or AddressSanitizer reports a mismatch.
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return checked_alloc(size);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return checked_alloc(size);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  const Options options = parse_options(argc, argv);
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) ::signal(sig, on_fatal_signal);
  if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(write_current_input);

  const std::vector<Bytes> seeds = read_seeds(options.inputs);
  std::size_t max_len = options.max_len;
  if (max_len == 0) {
    max_len = 4096;
    for (const auto& s : seeds) max_len = std::max(max_len, s.size());
  }

  const auto start = std::chrono::steady_clock::now();
  const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  std::size_t passed = 0, failed = 0, index = 0;
  for (const auto& s : seeds) (run_one(s, index++, options.artifact_prefix) ? passed : failed)++;

  Rng rng(options.seed);
  const std::vector<Bytes> pool = seeds.empty() ? std::vector<Bytes>{Bytes{}} : seeds;
  std::size_t mutated = 0;
  for (; mutated < options.runs; ++mutated) {
    if (options.max_total_time > 0 && elapsed() > options.max_total_time) break;
    Bytes input = pool[rng.below(pool.size())];
    const std::size_t steps = 1 + rng.below(4);
    for (std::size_t k = 0; k < steps; ++k) mutate_once(input, pool, rng);
    if (input.size() > max_len) input.resize(max_len);
    (run_one(input, index++, options.artifact_prefix) ? passed : failed)++;
  }

  std::printf("fuzz: %zu inputs (%zu seeds, %zu mutated with -seed=%llu -max_len=%zu) in %.1f s, %zu escaped "
              "exceptions\n",
              passed + failed, seeds.size(), mutated, static_cast<unsigned long long>(options.seed), max_len, elapsed(),
              failed);
  return failed == 0 ? 0 : 1;
}
