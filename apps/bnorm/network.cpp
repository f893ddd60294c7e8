// The multilayer perceptron of the experiment and of `bnorm train`, the batch schedule,
// and the option validators the subcommands share.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "bnorm/io/idx.hpp"
#include "bnorm/kernels/batch_norm.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"
#include "commands.hpp"

namespace bnorm::cli {

namespace {

bool parse_int(const std::string& s, long long& v) {
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  return ec == std::errc() && p == end && !s.empty();
}

bool parse_real(const std::string& s, double& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  v = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(v);
}

std::string in_quotes(const std::string& s) {
  return "'" + s + "'";
}

nn::Initializer kernel_initializer(const MlpConfig& c, std::size_t layer) {
  const std::uint64_t seed = c.seed * 1000003u + layer;
  if (c.initializer == "glorot_uniform") return nn::Initializer::glorot_uniform(seed);
  if (c.initializer == "random_normal") return nn::Initializer::random_normal(0.0f, 0.1f, seed);
  throw ArgumentError("build_mlp", "initializer", "'random_normal' or 'glorot_uniform'",
                      in_quotes(c.initializer));
}

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

CLI::Validator positive_integer() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        long long v = 0;
        if (!parse_int(s, v) || v < 1) return "expected an integer >= 1, received " + in_quotes(s);
        return {};
      },
      "");
}

CLI::Validator nonnegative_integer() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        long long v = 0;
        if (!parse_int(s, v) || v < 0) return "expected an integer >= 0, received " + in_quotes(s);
        return {};
      },
      "");
}

CLI::Validator integer_in(long long lo, long long hi) {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        long long v = 0;
        if (!parse_int(s, v) || v < lo || v > hi)
          return "expected an integer in " + range + ", received " + in_quotes(s);
        return {};
      },
      "in " + range);
}

CLI::Validator positive_real() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        double v = 0;
        if (!parse_real(s, v) || v <= 0) return "expected a finite number > 0, received " + in_quotes(s);
        return {};
      },
      "");
}

CLI::Validator real_in(double lo, double hi, bool lo_open, bool hi_open) {
  char range[96];
  std::snprintf(range, sizeof range, "%c%g, %g%c", lo_open ? '(' : '[', lo, hi, hi_open ? ')' : ']');
  const std::string r = range;
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        double v = 0;
        const bool ok = parse_real(s, v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
        if (!ok) return "expected a number in " + r + ", received " + in_quotes(s);
        return {};
      },
      "in " + r);
}

CLI::Validator one_of(std::vector<std::string> choices) {
  std::string list;
  for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        if (std::find(choices.begin(), choices.end(), s) == choices.end()) {
          return "expected one of " + list + ", received " + in_quotes(s);
        }
        return {};
      },
      "");
}

CLI::Option* choices(CLI::Option* option, const std::vector<std::string>& allowed) {
  std::string names;
  for (const auto& c : allowed) names += (names.empty() ? "" : "|") + c;
  return option->check(one_of(allowed))->type_name(names);
}

void add_training_basics(CLI::App* cmd, TrainingBasics& o, const std::string& learning_rate_help) {
  cmd->add_option("--batch-size", o.batch_size, "Examples per batch (the paper: 60)")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_option("--learning-rate", o.learning_rate, learning_rate_help)->check(positive_real());
  cmd->add_option("--seed", o.seed, "Seed of the initial weights and of the batch order")
      ->check(nonnegative_integer())
      ->capture_default_str();
  cmd->add_option("--threads", o.threads,
                  "Threads of the batch-norm kernels, 0 for all cores (OpenBLAS, used by the dense layers, "
                  "follows OPENBLAS_NUM_THREADS)")
      ->check(nonnegative_integer())
      ->capture_default_str();
  cmd->add_option("--momentum", o.momentum,
                  "BatchNormalization momentum, Keras convention (the weight of the old moving statistics); "
                  "the experiment's 0.9, Keras's default is 0.99")
      ->check(real_in(0.0, 1.0, false, false))
      ->capture_default_str();
  choices(cmd->add_option("--init", o.initializer,
                          "Initial kernels: random_normal (N(0, 0.1^2), the paper's 'small random Gaussian "
                          "values') or glorot_uniform (Keras's default)"),
          {"random_normal", "glorot_uniform"})
      ->capture_default_str();
  cmd->add_option("--data-dir", o.data_dir,
                  "Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...); Debian package "
                  "dataset-fashion-mnist")
      ->capture_default_str();
}

Mlp build_mlp(const MlpConfig& c) {
  auto input = nn::Input({c.inputs}, "pixels");
  auto z = input;
  nn::SymbolicTensor last_preactivation = z;
  nn::LayerPtr last_activation;
  for (std::size_t i = 0; i < c.hidden.size(); ++i) {
    const std::string n = std::to_string(i + 1);
    z = (*std::make_shared<nn::Dense>(c.hidden[i],
                                      nn::DenseOptions{.use_bias = !c.batch_norm,
                                                       .kernel_initializer = kernel_initializer(c, i),
                                                       .name = "dense_" + n}))(z);
    if (c.batch_norm) {
      z = (*std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{
          .momentum = c.momentum, .epsilon = c.epsilon, .name = "batch_normalization_" + n}))(z);
    }
    last_preactivation = z;
    last_activation = std::make_shared<nn::Activation>(c.activation, c.activation + "_" + n);
    z = (*last_activation)(z);
  }
  const auto output = std::make_shared<nn::Dense>(
      c.classes, nn::DenseOptions{.activation = "softmax",
                                  .kernel_initializer = kernel_initializer(c, c.hidden.size()),
                                  .name = "output"});
  z = (*output)(z);
  Mlp mlp;
  const std::string name = c.batch_norm ? "mlp_batch_norm" : "mlp";
  mlp.model = std::make_unique<nn::Model>(input, z, name);
  mlp.probe = std::make_unique<nn::Model>(input, last_preactivation, name + "_probe");
  if (last_activation) {
    auto h = nn::Input({c.hidden.back()}, "last_preactivation");
    mlp.head = std::make_unique<nn::Model>(h, (*output)((*last_activation)(h)), name + "_head");
  }
  return mlp;
}

BatchSchedule::BatchSchedule(std::int64_t n, std::int64_t batch_size, std::uint64_t seed)
    : n_(n),
      batch_size_(batch_size),
      state_(seed ^ 0x6A09E667F3BCC908ull),
      order_(static_cast<std::size_t>(n)) {
  if (batch_size < 1 || batch_size > n) {
    throw UsageError("BatchSchedule", "--batch-size",
                     "an integer in [1, " + std::to_string(n) + "] (the training set)",
                     std::to_string(batch_size));
  }
  batch_.resize(static_cast<std::size_t>(batch_size));
  position_ = n_;  // forces a shuffle on the first call
}

void BatchSchedule::reshuffle() {
  for (std::int64_t i = 0; i < n_; ++i) order_[static_cast<std::size_t>(i)] = i;
  for (std::int64_t i = n_ - 1; i > 0; --i) {
    const auto j = static_cast<std::int64_t>(splitmix64(state_) % static_cast<std::uint64_t>(i + 1));
    std::swap(order_[static_cast<std::size_t>(i)], order_[static_cast<std::size_t>(j)]);
  }
  position_ = 0;
  ++epoch_;
}

const std::vector<std::int64_t>& BatchSchedule::next() {
  if (position_ + batch_size_ > n_) reshuffle();
  std::copy_n(order_.begin() + position_, batch_size_, batch_.begin());
  position_ += batch_size_;
  return batch_;
}

Tensor gather_rows(const Tensor& x, const std::vector<std::int64_t>& index) {
  std::vector<std::int64_t> dims = x.shape().dims();
  const std::int64_t row = x.numel() / dims[0];
  dims[0] = static_cast<std::int64_t>(index.size());
  Tensor out{Shape(dims)};
  for (std::size_t b = 0; b < index.size(); ++b) {
    std::memcpy(out.data() + static_cast<std::int64_t>(b) * row, x.data() + index[b] * row,
                static_cast<std::size_t>(row) * sizeof(float));
  }
  return out;
}

void set_threads(int threads) {
  kernels::set_num_threads(threads);
}

void require_data_dir(const std::filesystem::path& dir, const std::string& command,
                      const std::string& files) {
  std::error_code ec;
  if (std::filesystem::is_directory(dir, ec)) return;
  throw io::FileError(
      command, "--data-dir",
      "a folder holding " + files + " (Debian package dataset-fashion-mnist, installed by `make deps`)",
      "'" + dir.string() + "', " +
          (std::filesystem::exists(dir, ec) ? "which is not a folder" : "which does not exist"));
}

std::string format_duration(double seconds) {
  char buf[32];
  if (seconds < 60) {
    std::snprintf(buf, sizeof buf, "%.1fs", seconds);
  } else {
    const auto s = static_cast<long>(std::lround(seconds));
    std::snprintf(buf, sizeof buf, "%ldm %02lds", s / 60, s % 60);
  }
  return buf;
}

}  // namespace bnorm::cli
