// apps/bnorm/commands.hpp: what the subcommands of the `bnorm` tool share.
//
// Each subcommand lives in its own file and has two halves: `add_*_command` declares its
// options on the CLI11 app (parsing and validating them), and the returned runner does
// the work once parsing succeeded. Errors are thrown (bnorm's typed exceptions, or
// UsageError for a bad combination of options); only main() turns them into messages
// and exit codes.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/core/tensor.hpp"
#include "bnorm/io/datasets.hpp"
#include "bnorm/nn/model.hpp"

namespace bnorm::cli {

// A command line that parses but cannot run as given (e.g. --batch-size larger than the
// training set). main() prints it like a parse error: exit status 2.
class UsageError : public Error {
 public:
  using Error::Error;
};

// Work to do after parsing: returns the process exit status.
using Runner = std::function<int()>;

Runner add_experiment_command(CLI::App& app);
Runner add_train_command(CLI::App& app);
Runner add_predict_command(CLI::App& app);
Runner add_evaluate_command(CLI::App& app);
Runner add_inspect_command(CLI::App& app);
Runner add_recalibrate_command(CLI::App& app);
Runner add_fold_command(CLI::App& app);

// --- the options `bnorm experiment` and `bnorm train` share: same names, checks, help -
struct TrainingBasics {
  std::int64_t batch_size = 60;
  std::optional<double> learning_rate;  // unset: the command's default
  std::uint64_t seed = 1;
  int threads = 0;
  double momentum = 0.9;  // BatchNormalization, Keras convention (Keras's default is 0.99)
  std::string initializer = "random_normal";
  std::filesystem::path data_dir = io::kFashionMnistDir;
};
// Adds --batch-size, --learning-rate (with this help text, which states the default),
// --seed, --threads, --momentum, --init and --data-dir, bound to `o`.
void add_training_basics(CLI::App* cmd, TrainingBasics& o, const std::string& learning_rate_help);

// --- files named on the command line ---------------------------------------------------
// The readers name the file and the place in it ("x.csv: line 2, column 3: expected a
// number, received 'x'"), not the argument that gave the file. Called inside a catch
// block, this rethrows the current bnorm::Error of a reader given `path` as the same type
// with where = `command` and argument = "ARGUMENT PATH" plus the place in the file, so
// that main() prints
//   bnorm predict: error: INPUT x.csv: line 2, column 3: expected a number, received 'x'
//   bnorm train: error: --data-dir D: train-images-idx3-ubyte.gz: expected ..., received ...
// Other exceptions are rethrown unchanged.
[[noreturn]] void rethrow_for_argument(const std::string& command, const std::string& argument,
                                       const std::string& path);
// io::read_array for a file given as `argument` ("INPUT", "LABELS"), its errors relabelled.
Tensor read_array_argument(const std::string& path, const std::string& command, const std::string& argument);
// `load` (io::load_mnist_layout, or another reader of the --data-dir folder) on `dir`, its
// errors naming "--data-dir DIR" and the file in it ("--data-dir D: train-images-idx3-
// ubyte.gz: expected ..."). Call require_data_dir first.
io::ImageDataset load_data_dir_argument(const std::filesystem::path& dir, const std::string& command,
                                        io::ImageDataset (*load)(const std::filesystem::path&) = io::load_mnist_layout);

// --- model and data files, for predict / evaluate / inspect ---------------------------
// io::load_model with the command line's wording: a missing path is a FileError naming
// `argument` (e.g. "MODEL"), before the loader runs; the loader's errors are relabelled
// ("MODEL m.keras: layer 'conv' (Conv2D): expected ...").
std::unique_ptr<nn::Model> load_model_argument(const std::string& path, const std::string& command,
                                               const std::string& argument);
// The model's input shape with the batch dimension -1 (e.g. (-1, 784)), when it declares one.
std::optional<Shape> model_input_shape(const nn::Model& model);
// An input file (.npy or CSV, rows = samples) as the model's input: the values of each
// row reshaped to the model's input shape (a CSV of 784 columns feeds a (28, 28) input).
// Throws FileError / FormatError from the readers (relabelled, see read_array_argument),
// and ShapeError naming `argument`, the expected and the received row width when they
// disagree.
Tensor read_model_input(const std::string& path, const nn::Model& model, const std::string& command,
                        const std::string& argument);

// The values per sample of t (N, ...): 1 for a 1-D tensor.
std::int64_t row_width(const Tensor& t);

// The fraction of the rows of y (N, K) whose largest value is at the row's class index
// classes[i] (N); 0 for no rows.
double argmax_accuracy(const Tensor& y, const Tensor& classes);

// Fashion-MNIST images x (N, 784) as the model's input: unchanged for a model of 784
// inputs, reshaped to (N, 28, 28) for a model of that input shape; ShapeError naming
// MODEL when the model declares another width ("a model of 784 inputs for WHAT (or give
// ALTERNATIVE)").
Tensor fashion_mnist_input(const nn::Model& model, Tensor x, const io::ImageDataset& data,
                           const std::string& command, const std::string& model_path, const std::string& what,
                           const std::string& alternative);

// --- option validators: messages in bnorm's "expected ..., received ..." form --------
// (CLI11 prefixes them with the option name: "--steps: expected an integer >= 1, received '0'").
CLI::Validator positive_integer();                      // integer >= 1
CLI::Validator nonnegative_integer();                   // integer >= 0
CLI::Validator integer_in(long long lo, long long hi);  // integer in [lo, hi]
CLI::Validator positive_real();                         // finite real > 0
CLI::Validator real_in(double lo, double hi, bool lo_open, bool hi_open);
CLI::Validator one_of(std::vector<std::string> choices);
// option->check(one_of(allowed)), with the choices as the type shown by --help ("on|off").
CLI::Option* choices(CLI::Option* option, const std::vector<std::string>& allowed);

// --- the network of the experiment, also `bnorm train`'s default -------------------
struct MlpConfig {
  std::int64_t inputs = 784;
  std::vector<std::int64_t> hidden{100, 100, 100};
  std::int64_t classes = 10;
  std::string activation = "sigmoid";  // of the hidden layers
  bool batch_norm = true;              // Dense -> BatchNormalization -> activation
  double momentum = 0.99;              // BatchNormalization, Keras convention
  double epsilon = 1e-3;
  // The kernels of hidden layer i (0-based) and of the output layer (i = hidden.size())
  // are drawn from `initializer(seed, i)`: with and without batch normalization, the
  // same seed gives the same kernels.
  std::uint64_t seed = 0;
  std::string initializer = "random_normal";  // "random_normal" (stddev 0.1) or "glorot_uniform"
};

struct Mlp {
  std::unique_ptr<nn::Model> model;  // input -> softmax over the classes
  // input -> the LAST hidden layer's activation input (the batch-norm output with batch
  // normalization, the Dense output without); shares the model's layers.
  std::unique_ptr<nn::Model> probe;
  // The last preactivation -> the softmax (the last activation and the output layer):
  // head(probe(x)) == model(x), so an evaluation needs one pass over the layers.
  // Null when there is no hidden layer.
  std::unique_ptr<nn::Model> head;
};

// Builds the multilayer perceptron. With batch normalization the hidden Dense layers
// have no bias (use_bias = false): the normalization subtracts the batch mean, so a bias
// would cancel out, and beta takes its role (Ioffe & Szegedy 2015, section 3.2).
Mlp build_mlp(const MlpConfig& config);

// The order of training samples: a seeded permutation of [0, n) per epoch
// (Fisher-Yates over splitmix64; the same on every platform and standard library).
class BatchSchedule {
 public:
  BatchSchedule(std::int64_t n, std::int64_t batch_size, std::uint64_t seed);
  // The next batch's sample indices; a new permutation starts when an epoch is used up
  // (a last partial batch is dropped, as the paper's fixed batch of 60 over 60000 needs
  // none).
  const std::vector<std::int64_t>& next();
  std::int64_t epoch() const noexcept { return epoch_; }

 private:
  void reshuffle();
  std::int64_t n_, batch_size_;
  std::uint64_t state_;
  std::vector<std::int64_t> order_, batch_;
  std::int64_t position_ = 0, epoch_ = -1;
};

// Rows `index` of x (N, ...) as a new tensor (B, ...).
Tensor gather_rows(const Tensor& x, const std::vector<std::int64_t>& index);

// Sets the threads of bnorm's batch-norm kernels (0: all cores). The dense layers'
// OpenBLAS keeps its own count (OPENBLAS_NUM_THREADS), see kernels/dense.hpp.
void set_threads(int threads);

// FileError naming --data-dir and the path when it is not a folder (the one-line hint
// a newcomer needs: the Debian package to install). `files`: what the command reads there.
void require_data_dir(const std::filesystem::path& dir, const std::string& command,
                      const std::string& files = "the Fashion-MNIST IDX files");

// "1m 23s", "4.2s".
std::string format_duration(double seconds);

}  // namespace bnorm::cli
