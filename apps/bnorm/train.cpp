// `bnorm train`: trains a multilayer perceptron (by default the experiment's network,
// with batch normalization) on Fashion-MNIST with a Keras-style progress bar, reports the
// test loss and accuracy in inference mode, and saves the model (io::save_model: .keras
// by default, .h5 for legacy tf.keras) for `bnorm inspect`, `predict` and `evaluate`.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>

#include "bnorm/io/datasets.hpp"
#include "bnorm/io/image_folder.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/kernels/batch_norm.hpp"
#include "bnorm/nn/callbacks.hpp"
#include "bnorm/nn/gap.hpp"
#include "bnorm/nn/losses.hpp"
#include "bnorm/nn/optimizers.hpp"
#include "bnorm/nn/transfer.hpp"
#include "commands.hpp"
#include "distributed.hpp"
#include "file_checks.hpp"
#include "gnuplot.hpp"
#include "interrupt.hpp"

namespace bnorm::cli {

namespace {

// --batch-size, --learning-rate, --seed, --threads, --momentum, --init, --data-dir:
// TrainingBasics (shared with `bnorm experiment`).
struct TrainOptions : TrainingBasics {
  std::string layers = "100,100,100";
  std::string activation = "sigmoid";
  std::string batch_norm = "on";
  double epsilon = 1e-3;
  std::string optimizer = "sgd";
  int epochs = 5;
  std::int64_t steps = 0;  // > 0: train this many batches instead of --epochs
  std::string output = "bnorm-model.keras";
  std::string monitor;  // empty: no monitoring
  // --finetune BASE: the Keras guide's transfer learning on a class-folder --data-dir.
  std::string finetune;
  std::optional<int> unfreeze_after;              // epochs with the base frozen; unset: all
  std::optional<double> fine_tune_learning_rate;  // unset: --learning-rate / 100
  double validation_split = 0.2;
  bool freeze_base = false;  // --freeze-base: the default, said explicitly
  bool optimizer_given = false;
};

// --monitor: what it writes in its folder, and how many test images it measures on.
const std::vector<std::string> kMonitorFiles{"monitor.csv", "monitor.gp", "monitor.png", "gnuplot.log"};
constexpr std::int64_t kMonitorImages = 1000;

std::vector<std::int64_t> parse_layers(const std::string& text) {
  std::vector<std::int64_t> sizes;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    long long v = 0;
    std::size_t used = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || item.empty() || v < 1 || v > 1'000'000) {
      throw UsageError("bnorm train", "--layers",
                       "a comma-separated list of hidden layer sizes in [1, 1000000] such as 100,100,100",
                       "'" + text + "'");
    }
    sizes.push_back(v);
  }
  if (sizes.empty()) {
    throw UsageError("bnorm train", "--layers", "at least one hidden layer size such as 100,100,100",
                     "'" + text + "'");
  }
  return sizes;
}

// Fails before training, not after it, when the model could not be saved: the suffix
// must name a model format, the path may not be a dataset file, and a file must be
// writable there.
std::vector<NamedInput> data_dir_inputs(const std::filesystem::path& data_dir) {
  std::vector<NamedInput> inputs;
  for (const char* name : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                           "t10k-labels-idx1-ubyte"}) {
    for (const char* suffix : {"", ".gz"}) {
      inputs.push_back({data_dir / (std::string(name) + suffix), "a --data-dir file"});
    }
  }
  return inputs;
}

// --monitor DIR: a folder that can be written, none of whose files is an input or
// --output (the model would be written over by monitor.csv, or the other way round).
void require_writable_monitor(const TrainOptions& o) {
  std::vector<NamedInput> inputs = data_dir_inputs(o.data_dir);
  inputs.push_back({o.output, "the --output model"});
  require_distinct_output("bnorm train", "--monitor", o.monitor, inputs);
  for (const auto& f : kMonitorFiles) {
    require_distinct_output("bnorm train", "--monitor", (std::filesystem::path(o.monitor) / f).string(),
                            inputs);
  }
  require_writable_folder("bnorm train", "--monitor", o.monitor);
}

void require_writable_output(const std::string& path, const std::filesystem::path& data_dir) {
  require_model_file_name("bnorm train", "--output", path);
  require_distinct_output("bnorm train", "--output", path, data_dir_inputs(data_dir));
  require_writable_file("bnorm train", "--output", path);
}

// Ends fit at the next step after SIGINT or SIGTERM (model.stop_training would wait for
// the end of the epoch): throws Interrupted with the steps done.
class StopOnInterrupt : public nn::Callback {
 public:
  void on_train_batch_end(nn::Model&, std::int64_t, const nn::Logs&) override {
    throw_if_interrupted(++steps_);
  }

 private:
  std::int64_t steps_ = 0;
};

// SGD: the experiment's 0.1; Adam and RMSprop: Keras's 0.001.
double default_learning_rate(const std::string& optimizer) {
  return optimizer == "sgd" ? 0.1 : 1e-3;
}

std::shared_ptr<nn::Optimizer> make_optimizer(const std::string& name, double learning_rate) {
  if (name == "sgd") return std::make_shared<nn::SGD>(nn::SGDOptions{.learning_rate = learning_rate});
  if (name == "adam") return std::make_shared<nn::Adam>(nn::AdamOptions{.learning_rate = learning_rate});
  return std::make_shared<nn::RMSprop>(nn::RMSpropOptions{.learning_rate = learning_rate});
}

// Running batch-size-weighted means of the per-batch logs, as fit's progress bar shows.
struct RunningLogs {
  std::map<std::string, double> sum;
  double count = 0;
  void add(const nn::Logs& logs, double n) {
    for (const auto& [k, v] : logs) sum[k] += v * n;
    count += n;
  }
  nn::Logs mean() const {
    nn::Logs out;
    for (const auto& [k, v] : sum) out[k] = v / count;
    return out;
  }
};

// Trains for --epochs (fit, with its progress bar) or --steps. Throws Interrupted at the
// next step after SIGINT or SIGTERM. A monitor (--monitor) is called at the end of every
// epoch: by fit as a callback, or by the --steps loop at its epoch boundaries.
void train_model(nn::Model& model, const io::ImageDataset& data, const TrainOptions& o,
                 const std::shared_ptr<nn::GapMonitor>& monitor,
                 const std::shared_ptr<nn::Communicator>& communicator) {
  const std::int64_t n = data.x_train.dim(0);
  if (o.steps == 0) {
    std::vector<std::shared_ptr<nn::Callback>> callbacks{std::make_shared<StopOnInterrupt>()};
    if (monitor) callbacks.push_back(monitor);
    model.fit(data.x_train, data.y_train,
              {.batch_size = o.batch_size,
               .epochs = o.epochs,
               .verbose = 1,
               .shuffle = true,
               .seed = o.seed,
               .validation_data = std::make_pair(data.x_test, data.y_test),
               .callbacks = callbacks,
               .communicator = communicator});
    return;
  }
  // A fixed number of batches: the training loop of fit, driven step by step, with the
  // same progress bar (the last epoch is shorter when --steps is not a multiple).
  const std::int64_t per_epoch = n / o.batch_size;
  const auto epochs = static_cast<int>((o.steps + per_epoch - 1) / per_epoch);
  BatchSchedule schedule(n, o.batch_size, o.seed);
  nn::ProgressBar bar(1);
  std::int64_t done = 0;
  for (int epoch = 0; epoch < epochs; ++epoch) {
    const std::int64_t steps = std::min(per_epoch, o.steps - done);
    bar.on_train_begin(model, epochs, steps);
    bar.on_epoch_begin(model, epoch);
    RunningLogs running;
    for (std::int64_t s = 0; s < steps; ++s) {
      throw_if_interrupted(done + s);
      const auto& index = schedule.next();
      running.add(model.train_on_batch(gather_rows(data.x_train, index), gather_rows(data.y_train, index)),
                  static_cast<double>(index.size()));
      bar.on_train_batch_end(model, s, running.mean());
    }
    done += steps;
    nn::Logs logs = running.mean();
    for (const auto& [k, v] : model.evaluate(data.x_test, data.y_test, 1000)) logs["val_" + k] = v;
    bar.on_epoch_end(model, epoch, logs);
    if (monitor) monitor->on_epoch_end(model, epoch, logs);
  }
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  f.close();
  if (!f) {
    throw io::FileError("bnorm train", "--monitor " + path.string(), "a writable file", std::strerror(errno));
  }
}

// gnuplot's string literal in single quotes: a quote doubles.
std::string gp_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("''") : std::string(1, c);
  return q + "'";
}

// DIR/monitor.csv (one row per epoch: the output gap, then per layer its average and
// largest |shift|, variance ratio range and stale channels), DIR/monitor.gp, and
// DIR/monitor.png by gnuplot when it is installed. Returns the files written; *problem
// says why there is no figure.
std::vector<std::string> write_monitor(const std::filesystem::path& dir, const nn::GapMonitor& monitor,
                                       std::optional<std::string>& problem) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    throw io::FileError("bnorm train", "--monitor", "a folder that can be created",
                        "'" + dir.string() + "' (" + (ec ? ec.message() : "not a folder") + ")");
  }
  const auto& h = monitor.history();
  std::vector<std::string> names;
  if (!h.empty()) {
    for (const auto& l : h.front().layers) names.push_back(l.name);
  }
  std::ostringstream csv;
  csv.precision(9);
  csv << "epoch,output_gap,output_mean_abs_difference";
  for (const auto& n : names) {
    for (const char* f :
         {"mean_abs_shift", "max_abs_shift", "variance_ratio_min", "variance_ratio_max", "stale"})
      csv << ',' << n << ':' << f;
  }
  csv << '\n';
  for (const auto& e : h) {
    csv << e.epoch << ',' << e.output_gap << ',' << e.mean_abs_difference;
    for (const auto& l : e.layers) {
      csv << ',' << l.mean_abs_shift << ',' << l.max_abs_shift << ',' << l.ratio_min << ',' << l.ratio_max
          << ',' << l.stale_count;
    }
    csv << '\n';
  }
  std::ostringstream gp;
  gp << "# gnuplot script written by `bnorm train --monitor`; run `gnuplot monitor.gp` in this folder.\n"
     << png_terminal(900, 760) << "set output 'monitor.png'\n"
     << "set datafile separator ','\n"
     << "set termoption noenhanced\n"
     << "set multiplot layout 2,1 title 'Batch normalization during training, " << kMonitorImages
     << " test images'\n"
     << "set lmargin at screen 0.1\nset rmargin at screen 0.7\n"
     << "set grid\nset key outside right top\nset xlabel 'epoch'\nset xtics 1\nset yrange [0:*]\n"
     << "set ylabel 'average |shift| (population std)'\n"
     << "set title 'population mean against moving mean, per layer'\n";
  if (names.empty()) {
    gp << "plot 0 title 'no batch normalization'\n";
  } else {
    gp << "plot ";
    for (std::size_t i = 0; i < names.size(); ++i) {
      gp << (i ? ", \\\n     " : "") << "'monitor.csv' skip 1 using 1:" << 4 + 5 * i
         << " with linespoints pt 7 title " << gp_quote(names[i]);
    }
    gp << "\n";
  }
  gp << "set ylabel 'mean |training - inference| / std'\n"
     << "set title 'model outputs, batch statistics against moving statistics'\n"
     << "plot 'monitor.csv' skip 1 using 1:2 with linespoints pt 7 lc rgb '#d62728' title 'output gap'\n"
     << "unset multiplot\n";
  std::vector<std::string> written;
  write_text(dir / "monitor.csv", csv.str());
  written.push_back((dir / "monitor.csv").string());
  write_text(dir / "monitor.gp", gp.str());
  written.push_back((dir / "monitor.gp").string());
  fs::remove(dir / "monitor.png", ec);  // no stale figure
  const auto gnuplot = find_on_path("gnuplot");
  if (!gnuplot) {
    problem = kNoGnuplot;
    return written;
  }
  const std::string failed = run_gnuplot(*gnuplot, dir, "monitor.gp");
  if (!failed.empty()) {
    problem = failed;
  } else if (!fs::exists(dir / "monitor.png")) {
    problem = "gnuplot monitor.gp wrote no monitor.png";
  } else {
    written.push_back((dir / "monitor.png").string());
  }
  return written;
}

int run_train(const TrainOptions& o) {
  const InterruptGuard interrupt_guard;
  set_threads(o.threads);
  // `mpirun -np P bnorm train`: data-parallel fit; rank 0 alone prints and saves.
  const auto communicator = launcher_communicator("bnorm train");
  const int rank = communicator ? communicator->rank() : 0;
  if (communicator && o.steps > 0) {
    throw UsageError("bnorm train", "--steps",
                     "--epochs under an MPI launcher (data-parallel training runs fit)",
                     "--steps " + std::to_string(o.steps));
  }
  if (rank != 0 && std::freopen("/dev/null", "w", stdout) == nullptr) {
    throw UsageError("bnorm train", "standard output", "/dev/null to silence ranks other than 0",
                     std::strerror(errno));
  }
  MlpConfig c;
  c.hidden = parse_layers(o.layers);
  c.activation = o.activation;
  c.batch_norm = o.batch_norm == "on";
  c.momentum = o.momentum;
  c.epsilon = o.epsilon;
  c.seed = o.seed;
  c.initializer = o.initializer;

  require_data_dir(o.data_dir, "bnorm train");
  if (rank == 0) require_writable_output(o.output, o.data_dir);
  if (rank == 0 && !o.monitor.empty()) require_writable_monitor(o);
  std::printf("loading %s\n", o.data_dir.c_str());
  std::fflush(stdout);
  const io::ImageDataset data = load_data_dir_argument(o.data_dir, "bnorm train");
  const std::int64_t n = data.x_train.dim(0);
  if (o.batch_size > n) {
    throw UsageError("bnorm train", "--batch-size", "at most the training set size " + std::to_string(n),
                     std::to_string(o.batch_size));
  }
  c.inputs = data.x_train.dim(1);
  Mlp mlp = build_mlp(c);
  nn::Model& model = *mlp.model;
  const double learning_rate = o.learning_rate.value_or(default_learning_rate(o.optimizer));
  model.compile(make_optimizer(o.optimizer, learning_rate),
                std::make_shared<nn::SparseCategoricalCrossentropy>(), {"accuracy"});
  std::printf("%s", model.summary().c_str());
  std::printf("optimizer %s, learning rate %g, batch %lld, %d batch-norm threads\n", o.optimizer.c_str(),
              learning_rate, static_cast<long long>(o.batch_size), kernels::num_threads());
  std::fflush(stdout);

  // fit's steps per epoch count a last partial batch.
  const std::int64_t total_steps = o.steps > 0 ? o.steps : o.epochs * ((n + o.batch_size - 1) / o.batch_size);
  std::shared_ptr<nn::GapMonitor> monitor;
  if (!o.monitor.empty()) {
    std::vector<std::int64_t> first(static_cast<std::size_t>(std::min(kMonitorImages, data.x_test.dim(0))));
    for (std::size_t i = 0; i < first.size(); ++i) first[i] = static_cast<std::int64_t>(i);
    monitor = std::make_shared<nn::GapMonitor>(gather_rows(data.x_test, first),
                                               nn::GapMonitorOptions{.gap = {.batch_size = o.batch_size}});
  }
  nn::Logs test;
  try {
    train_model(model, data, o, monitor, communicator);
    throw_if_interrupted(total_steps);
    test = model.evaluate(data.x_test, data.y_test, 1000);
    throw_if_interrupted(total_steps);
  } catch (const Interrupted& e) {
    report_interruption("bnorm train", e, total_steps, "the model was not saved to '" + o.output + "'");
    return e.exit_status();
  }
  std::printf("test (inference mode, %lld images): loss %.4f, accuracy %.4f\n",
              static_cast<long long>(data.x_test.dim(0)), test.at("loss"), test.at("accuracy"));
  if (rank != 0) return 0;
  io::save_model(model, o.output);
  std::printf("saved the model to %s\n", o.output.c_str());
  if (monitor) {
    std::optional<std::string> problem;
    const auto files = write_monitor(o.monitor, *monitor, problem);
    std::string list;
    for (const auto& f : files) list += (list.empty() ? "" : ", ") + f;
    std::printf("monitor: %zu epochs, %zu warnings; wrote %s\n", monitor->history().size(),
                monitor->warnings().size(), list.c_str());
    if (problem) std::printf("monitor figure not drawn: %s\n", problem->c_str());
  }
  std::printf("next: bnorm inspect %s        (its batch-normalization layers)\n", o.output.c_str());
  std::printf("      bnorm evaluate %s       (loss and accuracy on the Fashion-MNIST test set)\n",
              o.output.c_str());
  std::printf("      bnorm predict %s INPUT.npy -o OUTPUT.npy\n", o.output.c_str());
  return 0;
}

// --finetune: a Keras model file as a frozen base, the guide's head (transfer_model), fit
// on a class-folder dataset; optionally a second phase with the base unfrozen.
int run_finetune(const TrainOptions& o) {
  const std::string command = "bnorm train";
  const InterruptGuard interrupt_guard;
  set_threads(o.threads);
  if (const auto communicator = launcher_communicator("bnorm train")) {
    // P ranks would fine-tune P models and write one file.
    throw UsageError(command, "--finetune", "one process (fine-tuning is not data-parallel yet)",
                     "an MPI launch of " + std::to_string(communicator->size()) + " processes");
  }
  require_writable_output(o.output, o.data_dir);
  if (o.unfreeze_after && *o.unfreeze_after >= o.epochs) {
    throw UsageError(command, "--unfreeze-after",
                     "fewer epochs than --epochs (" + std::to_string(o.epochs) + ")",
                     std::to_string(*o.unfreeze_after));
  }
  std::shared_ptr<nn::Model> base = load_model_argument(o.finetune, command, "--finetune");
  const std::optional<Shape> input = model_input_shape(*base);
  if (!input || input->rank() != 4 || (*input)[1] < 1 || (*input)[2] < 1 || (*input)[3] != 3) {
    throw ShapeError(command, "--finetune " + o.finetune,
                     "a model with an image input (H, W, 3), channels last",
                     input ? "input shape " + input->str() : "a model without a declared input shape");
  }
  const std::int64_t height = (*input)[1], width = (*input)[2];
  std::printf("loading %s (resized to %lld x %lld, bilinear)\n", o.data_dir.c_str(),
              static_cast<long long>(height), static_cast<long long>(width));
  std::fflush(stdout);
  io::ImageFolderDataset data;
  try {
    data = io::load_image_folder(o.data_dir, height, width);
  } catch (const Error&) {
    rethrow_for_argument(command, "--data-dir", o.data_dir.string());
  }
  const auto classes = static_cast<std::int64_t>(data.class_names.size());
  if (classes < 2) {
    throw io::FormatError(command, "--data-dir " + o.data_dir.string(), "at least 2 class folders",
                          "1 (" + data.class_names.front() + ")");
  }
  std::string names;
  for (const auto& c : data.class_names) names += (names.empty() ? "" : ", ") + c;
  std::printf("found %lld images belonging to %lld classes: %s\n", static_cast<long long>(data.x.dim(0)),
              static_cast<long long>(classes), names.c_str());
  // Keras shuffles the files (seeded) before taking the last fraction for validation.
  const std::int64_t n = data.x.dim(0);
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  BatchSchedule schedule(n, n, o.seed);
  order = schedule.next();
  const Tensor x = gather_rows(data.x, order), y = gather_rows(data.y, order);

  auto model = nn::transfer_model(base, {.classes = classes, .dropout_seed = o.seed});
  const std::string optimizer = o.optimizer_given ? o.optimizer : "adam";
  const double learning_rate = o.learning_rate.value_or(default_learning_rate(optimizer));
  model->compile(make_optimizer(optimizer, learning_rate),
                 std::make_shared<nn::SparseCategoricalCrossentropy>(), {"accuracy"});
  std::printf("%s", model->summary().c_str());
  const int frozen_epochs = o.unfreeze_after.value_or(o.epochs);
  std::printf(
      "phase 1: base frozen (called with training=False), %d epochs, optimizer %s, learning rate %g\n",
      frozen_epochs, optimizer.c_str(), learning_rate);
  std::fflush(stdout);
  nn::FitOptions fit{.batch_size = o.batch_size,
                     .epochs = frozen_epochs,
                     .verbose = 2,
                     .shuffle = true,
                     .seed = o.seed,
                     .validation_split = o.validation_split,
                     .callbacks = {std::make_shared<StopOnInterrupt>()}};
  const std::int64_t total_steps = 0;
  try {
    model->fit(x, y, fit);
    if (o.unfreeze_after) {
      base->set_trainable(true);
      const double fine_rate = o.fine_tune_learning_rate.value_or(learning_rate / 100);
      model->compile(make_optimizer(optimizer, fine_rate),
                     std::make_shared<nn::SparseCategoricalCrossentropy>(), {"accuracy"});
      std::printf(
          "phase 2: base unfrozen (its batch norms stay in inference mode), epochs %d to %d, learning "
          "rate %g\n",
          frozen_epochs + 1, o.epochs, fine_rate);
      std::fflush(stdout);
      fit.initial_epoch = frozen_epochs;
      fit.epochs = o.epochs;
      model->fit(x, y, fit);
    }
  } catch (const Interrupted& e) {
    report_interruption(command, e, total_steps, "the model was not saved to '" + o.output + "'");
    return e.exit_status();
  }
  io::save_model(*model, o.output);
  std::printf("saved the model to %s\n", o.output.c_str());
  std::printf("next: bnorm evaluate %s --data-dir %s\n", o.output.c_str(), o.data_dir.c_str());
  return 0;
}

}  // namespace

Runner add_train_command(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train a multilayer perceptron with batch normalization on Fashion-MNIST and report its test accuracy");
  cmd->footer(
      "\nThe default network is the experiment's: 784-100-100-100-10, each hidden layer\n"
      "Dense(no bias) -> BatchNormalization -> sigmoid, softmax output, sparse categorical\n"
      "cross-entropy; `--batch-norm off` gives Dense(bias) -> sigmoid. The test set (10,000\n"
      "images) is evaluated in inference mode after every epoch and at the end, and the model\n"
      "is saved to --output (Keras 3 .keras, or legacy tf.keras .h5), readable by Keras. --output is\n"
      "checked before training: a file that can be written, not a folder. Ctrl-C (SIGINT) or SIGTERM\n"
      "stops training at the next step without saving (exit status 130 or 143).\n"
      "--monitor DIR measures the train/inference gap (as `bnorm inspect --data`) on the first 1000\n"
      "test images at the end of every epoch, warns on stderr when it grows or a layer's moving\n"
      "statistics are stale, and at the end writes DIR/monitor.csv, monitor.gp and monitor.png\n"
      "(gnuplot); DIR is checked before training, and an interrupted run writes nothing there.\n"
      "--finetune BASE.keras instead fine-tunes a Keras model with an image input (H, W, 3) on the\n"
      "class folders of --data-dir (DIR/<class>/<image>.png|jpg, as Keras's\n"
      "image_dataset_from_directory; images resized to (H, W), bilinear): the Keras guide's transfer\n"
      "learning, the base frozen and called with training=False, GlobalAveragePooling2D, Dropout(0.2),\n"
      "Dense(classes, softmax), Adam unless --optimizer; --unfreeze-after E unfreezes the base after\n"
      "E epochs with a 100 times smaller learning rate. --validation-split of the shuffled images\n"
      "is kept for validation. All images are loaded in memory: meant for small datasets.\n"
      "Under mpirun (bnorm built with MPI) the ranks train one model together: each batch is split\n"
      "across them, batch normalization is synchronized, and rank 0 prints and saves\n"
      "(docs/distributed.md; --epochs only).\n"
      "\nExamples:\n"
      "  bnorm train --steps 500 -o small.keras           # a minute's training\n"
      "  bnorm train --epochs 2 --optimizer adam --layers 256,128\n"
      "  bnorm train --batch-norm off --activation relu -o plain.keras\n"
      "  bnorm inspect small.keras                        # then look at its batch norms\n"
      "  bnorm train --finetune base.keras --data-dir photos/ --epochs 10 --unfreeze-after 5\n"
      "  mpirun -np 4 bnorm train --epochs 2              # data-parallel, docs/distributed.md");
  cmd->add_option("--layers", o->layers, "Hidden layer sizes, comma-separated")->capture_default_str();
  choices(cmd->add_option("--activation", o->activation, "Activation of the hidden layers"),
          {"sigmoid", "relu", "tanh", "linear"})
      ->capture_default_str();
  choices(cmd->add_option("--batch-norm", o->batch_norm, "Batch normalization before each hidden activation"),
          {"on", "off"})
      ->capture_default_str();
  cmd->add_option("--epsilon", o->epsilon, "BatchNormalization epsilon")
      ->check(positive_real())
      ->capture_default_str();
  choices(cmd->add_option("--optimizer", o->optimizer, "Optimizer (Keras 3 update rules)"),
          {"sgd", "adam", "rmsprop"})
      ->capture_default_str();
  auto* epochs = cmd->add_option("--epochs", o->epochs, "Passes over the 60,000 training images")
                     ->check(positive_integer())
                     ->capture_default_str();
  cmd->add_option("--steps", o->steps, "Train this many batches instead of whole epochs")
      ->check(positive_integer())
      ->excludes(epochs);
  add_training_basics(cmd, *o,
                      "Learning rate [default: 0.1 for sgd (the experiment's), 0.001 for adam and rmsprop]");
  cmd->add_option("-o,--output", o->output, "Where to save the trained model (.keras, or .h5)")
      ->capture_default_str();
  cmd->add_option(
      "--monitor", o->monitor,
      "Folder for monitor.csv/.gp/.png: the train/inference gap at every epoch's end, measured on "
      "the first 1000 test images; warns when it grows");
  auto* finetune = cmd->add_option(
      "--finetune", o->finetune,
      "A Keras model file (image input (H, W, 3)) as a frozen base: the Keras guide's transfer "
      "learning (GlobalAveragePooling2D, Dropout 0.2, Dense softmax) on the class folders of "
      "--data-dir");
  for (const char* mlp_only :
       {"--layers", "--activation", "--batch-norm", "--epsilon", "--steps", "--monitor"})
    finetune->excludes(cmd->get_option(mlp_only));
  cmd->add_flag("--freeze-base", o->freeze_base,
                "With --finetune: keep the base frozen for every epoch (the default)")
      ->needs(finetune);
  cmd->add_option(
         "--unfreeze-after", o->unfreeze_after,
         "With --finetune: unfreeze the base after this many epochs and fine-tune it for the rest of "
         "--epochs (its batch norms stay in inference mode)")
      ->check(nonnegative_integer())
      ->needs(finetune)
      ->excludes("--freeze-base");
  cmd->add_option("--fine-tune-learning-rate", o->fine_tune_learning_rate,
                  "With --unfreeze-after: the second phase's learning rate [default: --learning-rate / 100]")
      ->check(positive_real())
      ->needs("--unfreeze-after");
  cmd->add_option("--validation-split", o->validation_split,
                  "With --finetune: the fraction of the (shuffled) images kept for validation")
      ->check(real_in(0.0, 1.0, false, true))
      ->needs(finetune)
      ->capture_default_str();
  return [cmd, o]() -> int {
    if (!cmd->parsed()) return -1;
    o->optimizer_given = cmd->count("--optimizer") > 0;
    if (!o->finetune.empty()) return run_finetune(*o);
    return run_train(*o);
  };
}

}  // namespace bnorm::cli
