// `bnorm experiment`: Ioffe & Szegedy 2015, Figure 1, on Fashion-MNIST.
//
// Two 784-100-100-100-10 sigmoid networks, one with batch normalization before each
// hidden sigmoid, start from the same kernels and see the same batches; every
// --eval-every steps both are evaluated in inference mode on the 10,000 test images:
// accuracy, loss, and the 15th/50th/85th percentiles over the test images of one unit's
// sigmoid input in the last hidden layer. docs/experiment.md explains the choices.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "bnorm/io/datasets.hpp"
#include "bnorm/io/idx.hpp"
#include "bnorm/kernels/batch_norm.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/losses.hpp"
#include "bnorm/nn/optimizers.hpp"
#include "commands.hpp"
#include "experiment.hpp"
#include "file_checks.hpp"
#include "interrupt.hpp"

namespace bnorm::cli {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// numpy.percentile's default (linear interpolation between the two nearest ranks).
double percentile(const std::vector<float>& sorted_values, double q) {
  const double pos = q / 100.0 * static_cast<double>(sorted_values.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, sorted_values.size() - 1);
  const double f = pos - static_cast<double>(lo);
  return sorted_values[lo] + f * (static_cast<double>(sorted_values[hi]) - sorted_values[lo]);
}

struct Net {
  Mlp mlp;
  double train_loss_sum = 0.0;
  std::int64_t train_loss_count = 0;
};

void evaluate(Net& net, int k, const io::ImageDataset& data, std::int64_t unit, EvalPoint& point) {
  constexpr std::int64_t kEvalBatch = 2000;  // inference: the batch size changes nothing but speed
  // The tracked unit's sigmoid input, then the rest of the network, in inference mode.
  const Tensor z = net.mlp.probe->predict(data.x_test, kEvalBatch);
  const std::int64_t n = z.dim(0), width = z.dim(1);
  std::vector<float> column(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) column[static_cast<std::size_t>(i)] = z[i * width + unit];
  std::sort(column.begin(), column.end());
  point.percentiles[k] = {percentile(column, 15), percentile(column, 50), percentile(column, 85)};
  const Tensor p = net.mlp.head->predict(z, kEvalBatch);
  point.test_accuracy[k] = argmax_accuracy(p, data.y_test);
  point.test_loss[k] = nn::SparseCategoricalCrossentropy().value(data.y_test, p);
  point.train_loss[k] = net.train_loss_count ? net.train_loss_sum / static_cast<double>(net.train_loss_count)
                                             : std::numeric_limits<double>::quiet_NaN();
  net.train_loss_sum = 0.0;
  net.train_loss_count = 0;
}

// The folders the run creates for --out (deepest first), removed again when the run stops
// before its report is written. A folder that existed before is never removed.
class NewFolders {
 public:
  explicit NewFolders(const std::filesystem::path& out) {
    std::error_code ec;
    for (std::filesystem::path p = out; !p.empty() && !std::filesystem::exists(p, ec); p = p.parent_path())
      folders_.push_back(p);
  }
  // Removes them when they are still empty (nothing but this run writes there).
  void remove() const {
    std::error_code ec;
    for (const auto& folder : folders_) std::filesystem::remove(folder, ec);
  }

 private:
  std::vector<std::filesystem::path> folders_;
};

std::string bar(double fraction, int width) {
  const int filled = static_cast<int>(fraction * width + 0.5);
  std::string s;
  for (int i = 0; i < width; ++i) s += i < filled ? "\u2501" : " ";
  return s;
}

int run_experiment(const ExperimentOptions& o) {
  const InterruptGuard interrupt_guard;
  const auto t0 = Clock::now();
  set_threads(o.threads);
  std::printf("bnorm experiment: Ioffe & Szegedy 2015, Figure 1, on Fashion-MNIST\n");
  require_data_dir(o.data_dir, "bnorm experiment");
  // --out is checked before the data is read and the networks train; it is created only
  // once training starts.
  require_distinct_output("bnorm experiment", "--out", o.out.string(),
                          {{o.data_dir, "the --data-dir folder"}});
  require_writable_folder("bnorm experiment", "--out", o.out);
  std::printf("  loading %s\n", o.data_dir.c_str());
  std::fflush(stdout);
  const io::ImageDataset data = load_data_dir_argument(o.data_dir, "bnorm experiment");
  const std::int64_t n_train = data.x_train.dim(0);
  if (o.batch_size > n_train) {
    throw UsageError("bnorm experiment", "--batch-size",
                     "at most the training set size " + std::to_string(n_train),
                     std::to_string(o.batch_size));
  }

  // Same seed for both: the shared Dense kernels start equal (the BN network's hidden
  // Dense layers have no bias; the plain network's biases start at zero).
  std::array<Net, 2> nets;
  for (int k = 0; k < 2; ++k) {
    MlpConfig c;
    c.inputs = data.x_train.dim(1);
    c.batch_norm = k == 1;
    c.seed = o.seed;
    c.initializer = o.initializer;
    c.momentum = o.momentum;
    nets[k].mlp = build_mlp(c);
    nets[k].mlp.model->compile(std::make_shared<nn::SGD>(nn::SGDOptions{.learning_rate = *o.learning_rate}),
                               std::make_shared<nn::SparseCategoricalCrossentropy>());
  }
  // The experiment compares the two from the same start: check it, layer by layer.
  for (std::size_t i = 0; i < 4; ++i) {
    const std::string name = i < 3 ? "dense_" + std::to_string(i + 1) : "output";
    const auto a = nets[0].mlp.model->get_layer<nn::Dense>(name),
               b = nets[1].mlp.model->get_layer<nn::Dense>(name);
    if (a->kernel()->value.vector() != b->kernel()->value.vector()) {
      throw StateError("bnorm experiment", "initial kernel of " + name, "the same in both networks",
                       "different");
    }
  }
  std::printf(
      "  %lld training / %lld test images; 784-100-100-100-10 sigmoid networks, SGD lr %g, batch %lld, "
      "seed %llu, %d threads\n",
      static_cast<long long>(n_train), static_cast<long long>(data.x_test.dim(0)), *o.learning_rate,
      static_cast<long long>(o.batch_size), static_cast<unsigned long long>(o.seed), kernels::num_threads());
  std::printf("  %lld steps, test-set evaluation every %lld steps, target accuracy %.1f%%\n",
              static_cast<long long>(o.steps), static_cast<long long>(o.eval_every),
              100.0 * o.target_accuracy);
  std::fflush(stdout);

  ExperimentResult result;
  result.threads = kernels::num_threads();
  result.test_images = data.x_test.dim(0);
  BatchSchedule schedule(n_train, o.batch_size, o.seed);
  const bool tty = isatty(fileno(stdout)) != 0;
  const auto t_train = Clock::now();
  double eval_seconds = 0.0;
  int last_decile = -1;
  auto record = [&](std::int64_t step) {
    const auto te = Clock::now();
    EvalPoint point;
    point.step = step;
    for (int k = 0; k < 2; ++k) evaluate(nets[k], k, data, o.unit, point);
    eval_seconds += seconds_since(te);
    result.points.push_back(point);
    std::string events;
    for (int k = 0; k < 2; ++k) {
      if (!result.steps_to_target[k] && point.test_accuracy[k] >= o.target_accuracy) {
        result.steps_to_target[k] = step;
        char buf[160];
        std::snprintf(buf, sizeof buf, "  -> the network %s reaches %.1f%% test accuracy at step %lld\n",
                      kNetNames[k], 100.0 * o.target_accuracy, static_cast<long long>(step));
        events += buf;
      }
    }
    const double elapsed = seconds_since(t_train);
    const double fraction = static_cast<double>(step) / static_cast<double>(o.steps);
    const std::string left = step > 0 && step < o.steps
                                 ? ", ~" + format_duration(elapsed / fraction * (1 - fraction)) + " left"
                                 : "";
    char line[256];
    std::snprintf(
        line, sizeof line, "step %6lld/%lld %s test accuracy: without BN %.4f, with BN %.4f  [%s%s]",
        static_cast<long long>(step), static_cast<long long>(o.steps), bar(fraction, 20).c_str(),
        point.test_accuracy[0], point.test_accuracy[1], format_duration(elapsed).c_str(), left.c_str());
    const int decile = static_cast<int>(fraction * 10);
    const bool keep = decile != last_decile || !events.empty() || step == o.steps;
    last_decile = decile;
    if (tty) std::printf("\r\033[K");
    if (keep || !tty) {
      if (keep) std::printf("%s\n%s", line, events.c_str());
    } else {
      std::printf("%s", line);
    }
    std::fflush(stdout);
  };

  // The report folder is made when training starts (require_writable_folder checked it
  // before the data was read), and removed again when the run stops before the report.
  const NewFolders new_folders(o.out);
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  if (ec || !std::filesystem::is_directory(o.out)) {
    throw io::FileError("bnorm experiment", "--out", "a folder that can be created",
                        "'" + o.out.string() + "' (" + (ec ? ec.message() : "not a folder") + ")");
  }

  try {
    record(0);
    for (std::int64_t step = 1; step <= o.steps; ++step) {
      throw_if_interrupted(step - 1);
      const auto& index = schedule.next();
      const Tensor x = gather_rows(data.x_train, index);
      const Tensor y = gather_rows(data.y_train, index);
      for (auto& net : nets) {
        const nn::Logs logs = net.mlp.model->train_on_batch(x, y);
        net.train_loss_sum += logs.at("loss");
        ++net.train_loss_count;
      }
      if (step % o.eval_every == 0 || step == o.steps) record(step);
    }
  } catch (const Interrupted& e) {
    new_folders.remove();
    report_interruption("bnorm experiment", e, o.steps, "no report was written to '" + o.out.string() + "'");
    return e.exit_status();
  } catch (...) {
    new_folders.remove();
    throw;
  }
  // A signal from here on lets the report be written in full (it takes a second).
  result.seconds_evaluating = eval_seconds;
  result.seconds_training = seconds_since(t_train) - eval_seconds;

  result.seconds_total = seconds_since(t0);
  ReportFiles files = write_report(o, result);
  std::printf("\n");
  for (int k = 0; k < 2; ++k) {
    const auto& last = result.points.back();
    std::printf("%-19s final test accuracy %.4f; %.1f%% reached %s\n", kNetNames[k], last.test_accuracy[k],
                100.0 * o.target_accuracy,
                result.steps_to_target[k] ? ("at step " + std::to_string(*result.steps_to_target[k])).c_str()
                                          : "never");
  }
  std::printf("time: %s training, %s evaluating, %s in all\n",
              format_duration(result.seconds_training).c_str(),
              format_duration(result.seconds_evaluating).c_str(), format_duration(seconds_since(t0)).c_str());
  if (files.plot_problem) std::printf("figures: not drawn: %s\n", files.plot_problem->c_str());
  std::printf("report: %s\n", (o.out / "summary.md").c_str());
  for (const auto& f : files.written) std::printf("  %s\n", f.c_str());
  return 0;
}

}  // namespace

Runner add_experiment_command(CLI::App& app) {
  auto o = std::make_shared<ExperimentOptions>();
  o->steps = 25000;
  o->eval_every = 250;
  o->target_accuracy = 0.8;
  o->unit = 0;
  o->out = "reports/experiment";

  CLI::App* cmd = app.add_subcommand(
      "experiment",
      "Train a 784-100-100-100-10 sigmoid network on Fashion-MNIST with and without batch normalization "
      "(Ioffe & Szegedy 2015, Figure 1) and write a report with figures");
  cmd->footer(
      "\nBoth networks start from the same kernels and see the same batches (seeded shuffle). Every\n"
      "--eval-every steps both are evaluated in inference mode on the 10,000 test images: test\n"
      "accuracy, and the 15th/50th/85th percentiles of one last-hidden-layer unit's sigmoid input.\n"
      "The report folder gets accuracy.csv, percentiles.csv, accuracy.png, percentiles.png (gnuplot)\n"
      "and summary.md. The default length runs in under a minute on 2 cores; --steps 50000 is the\n"
      "paper's. --out is checked before training. Ctrl-C (SIGINT) or SIGTERM stops the run at the\n"
      "next step without a report, removing a --out folder the run created (exit status 130 or\n"
      "143). See docs/experiment.md.");
  cmd->add_option("--steps", o->steps, "Training steps (batches) for each network")
      ->check(positive_integer())
      ->capture_default_str();
  add_training_basics(cmd, *o, "SGD learning rate, no momentum [default: 0.1]");
  cmd->add_option("--eval-every", o->eval_every, "Evaluate on the test set every this many steps")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_option("--target-accuracy", o->target_accuracy,
                  "Test accuracy whose first crossing is reported for each network")
      ->check(real_in(0.0, 1.0, true, false))
      ->capture_default_str();
  cmd->add_option("--unit", o->unit, "Which unit of the last hidden layer the percentiles follow")
      ->check(integer_in(0, 99))
      ->capture_default_str();
  cmd->add_option("--out", o->out, "Report folder (created if missing)")->capture_default_str();
  return [cmd, o]() -> int {
    if (!cmd->parsed()) return -1;
    if (!o->learning_rate) o->learning_rate = 0.1;
    return run_experiment(*o);
  };
}

}  // namespace bnorm::cli
