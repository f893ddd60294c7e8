// bnorm_cnn_bench: the bnorm side of the CNN benchmark (issue 14 item 5).
// run_cnn_bench.py builds ResNet50 / MobileNetV2 / EfficientNetB0 in Keras, saves them as
// .keras files, times them in Keras and PyTorch and runs this program on the same files;
// this program loads one file with io::load_model and prints one JSON line per case.
//
//   bnorm_cnn_bench --model FILE.keras --mode infer [--batches 1,32] [--threads N]
//                   [--warmup W] [--repeats R] [--profile]
//   bnorm_cnn_bench --model FILE.keras --mode train [--batch 32] [--threads N]
//                   [--warmup W] [--repeats R] [--profile]
//
// infer: for every batch size B, model.call(x, training=false) on a (B, H, W, C) input
// (the file's input shape), then the same on nn::fold_batch_norm(model) ("folded"); the
// two are timed in alternation (plain, folded, plain, ...) so that a disturbance by other
// processes hits both alike.
// train: one training step = Model::train_on_batch (fit's path: forward in training mode,
// loss, backward through the graph, SGD(0.01) update, moving statistics) on a batch of B
// images with integer labels, sparse categorical cross-entropy (the file's model ends in a
// softmax). A model bnorm cannot train (a layer without backward, say) is reported with
// "unsupported": the exception's message, not skipped.
//
// Threads: --threads N sets every thread pool bnorm's kernels use: the batch-norm and
// element-wise kernels' OpenMP teams (kernels::set_num_threads), oneDNN's convolutions
// (Debian's libdnnl runs on OpenMP: omp_set_num_threads) and OpenBLAS (Dense layers:
// openblas_set_num_threads). The driver also exports OMP_NUM_THREADS / OPENBLAS_NUM_THREADS.
//
// Every timed call is preceded by W untimed ones (oneDNN compiles its primitives on the
// first call of each shape); the JSON has every wall time, the median and the minimum in
// ms, and the median CPU time of the process per call (cpu_median_ms: all threads).
//
// --profile: after the timing, one more forward pass per case run node by node (the
// model's own graph order), summing process CPU time (steadier than wall time on a shared
// machine) per layer class and per node; the top of each goes to stderr. For train, the forward pass in
// training mode is profiled and the whole step's remainder (loss + backward + update) is printed as one line.
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bnorm/core/tensor.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/kernels/batch_norm.hpp"
#include "bnorm/nn/fold.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/optimizers.hpp"

extern "C" void openblas_set_num_threads(int num_threads);

namespace nn = bnorm::nn;
using bnorm::Shape;
using bnorm::Tensor;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// CPU time of the whole process (all threads), ms: next to the wall time, it shows how
// much of a call the process actually ran on a shared machine.
double cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) * 1e-6;
}

// Uniform [0, 1) times `scale` (splitmix64); the values do not affect the timing.
Tensor uniform(Shape shape, std::uint64_t seed, float scale) {
  Tensor t(std::move(shape));
  std::uint64_t s = seed * 0x9E3779B97F4A7C15ull;
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    t[i] = static_cast<float>(static_cast<double>((z ^ (z >> 31)) >> 11) * 0x1.0p-53) * scale;
  }
  return t;
}

struct Options {
  std::string model, mode = "infer";
  std::vector<std::int64_t> batches{1, 32};
  int threads = 1, warmup = 2, repeats = 10;
  bool profile = false;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(
      stderr,
      "%s\nusage: bnorm_cnn_bench --model FILE.keras --mode infer|train [--batches 1,32 | --batch B]\n"
      "                       [--threads N] [--warmup W] [--repeats R] [--profile]\n",
      why.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--model")
      o.model = next();
    else if (a == "--mode")
      o.mode = next();
    else if (a == "--batches" || a == "--batch") {
      o.batches.clear();
      std::stringstream ss(next());
      for (std::string item; std::getline(ss, item, ',');)
        if (!item.empty()) o.batches.push_back(std::stoll(item));
    } else if (a == "--threads")
      o.threads = std::stoi(next());
    else if (a == "--warmup")
      o.warmup = std::stoi(next());
    else if (a == "--repeats")
      o.repeats = std::stoi(next());
    else if (a == "--profile")
      o.profile = true;
    else if (a == "--help" || a == "-h")
      usage("");
    else
      usage("unknown argument " + a);
  }
  if (o.model.empty()) usage("--model is required");
  if (o.mode != "infer" && o.mode != "train") usage("--mode is infer or train");
  if (o.batches.empty() || o.threads < 1 || o.repeats < 1 || o.warmup < 0) usage("bad numbers");
  return o;
}

void set_threads(int n) {
  bnorm::kernels::set_num_threads(n);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

std::string json_list(const std::vector<double>& v) {
  std::string s = "[";
  char buf[32];
  for (std::size_t i = 0; i < v.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%s%.3f", i ? ", " : "", v[i]);
    s += buf;
  }
  return s + "]";
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void print_record(const Options& o, const std::string& variant, std::int64_t batch,
                  const std::vector<double>& ms, const std::vector<double>& cpu,
                  const std::string& extra = "") {
  std::printf(
      "{\"framework\": \"bnorm\", \"mode\": \"%s\", \"variant\": \"%s\", \"batch\": %lld, \"threads\": %d, "
      "\"warmup\": %d, \"ms\": %s, \"median_ms\": %.3f, \"min_ms\": %.3f, \"cpu_median_ms\": %.3f%s}\n",
      o.mode.c_str(), variant.c_str(), static_cast<long long>(batch), o.threads, o.warmup,
      json_list(ms).c_str(), median(ms), *std::min_element(ms.begin(), ms.end()), median(cpu), extra.c_str());
  std::fflush(stdout);
}

void print_unsupported(const Options& o, const std::string& variant, std::int64_t batch,
                       const std::string& why) {
  std::printf(
      "{\"framework\": \"bnorm\", \"mode\": \"%s\", \"variant\": \"%s\", \"batch\": %lld, \"threads\": %d, "
      "\"unsupported\": \"%s\"}\n",
      o.mode.c_str(), variant.c_str(), static_cast<long long>(batch), o.threads, json_escape(why).c_str());
  std::fflush(stdout);
}

// One forward pass node by node (Model::run's order and training rule), wall time summed
// per layer class and per node; the largest go to stderr.
void profile_forward(nn::Model& model, const Tensor& x, bool training, const std::string& title) {
  const auto& nodes = model.nodes();
  std::vector<Tensor> values(nodes.size() + 1);
  auto value = [&](int t) -> const Tensor& { return t == 0 ? x : values[static_cast<std::size_t>(t)]; };
  std::map<std::string, double> by_class;
  std::map<std::string, int> class_count;
  std::vector<std::pair<double, std::string>> by_node;
  double total = 0, total_wall = 0;
  for (std::size_t k = 0; k < nodes.size(); ++k) {
    const auto& node = nodes[k];
    const bool mode = node.training.value_or(training);
    const auto t0 = Clock::now();
    const double c0 = cpu_ms();
    Tensor y;
    if (node.inputs.size() == 1 && !node.layer->takes_input_list()) {
      y = node.layer->forward(value(node.inputs[0]), mode, nullptr, nullptr);
    } else {
      std::vector<const Tensor*> xs;
      for (int t : node.inputs) xs.push_back(&value(t));
      y = node.layer->forward_inputs(xs, mode, nullptr, nullptr);
    }
    const double wall = ms_since(t0);
    const double ms = cpu_ms() - c0;
    total_wall += wall;
    total += ms;
    by_class[node.layer->class_name()] += ms;
    class_count[node.layer->class_name()] += 1;
    std::string shape;
    for (std::int64_t d : y.shape().dims()) {
      if (!shape.empty()) shape.push_back('x');
      shape.append(std::to_string(d));
    }
    by_node.emplace_back(ms, node.layer->name() + " (" + node.layer->class_name() + " -> " + shape + ")");
    values[k + 1] = std::move(y);
  }
  std::vector<std::pair<double, std::string>> classes;
  for (const auto& [name, ms] : by_class) classes.emplace_back(ms, name);
  std::sort(classes.rbegin(), classes.rend());
  std::sort(by_node.rbegin(), by_node.rend());
  std::fprintf(
      stderr,
      "profile %s: %.2f ms CPU time (all threads; wall %.2f ms) over %zu nodes (no intermediate freeing)\n",
      title.c_str(), total, total_wall, nodes.size());
  for (const auto& [ms, name] : classes)
    std::fprintf(stderr, "  %-28s %4d nodes %9.2f ms %5.1f %%\n", name.c_str(), class_count[name], ms,
                 100 * ms / total);
  std::fprintf(stderr, "  slowest nodes:\n");
  for (std::size_t i = 0; i < std::min<std::size_t>(12, by_node.size()); ++i)
    std::fprintf(stderr, "    %8.2f ms  %s\n", by_node[i].first, by_node[i].second.c_str());
}

Tensor input_for(const nn::Model& model, std::int64_t batch, std::uint64_t seed) {
  const auto& shape = model.input_shape();
  if (!shape) throw std::runtime_error("the model has no input shape");
  std::vector<std::int64_t> dims = shape->dims();
  dims[0] = batch;
  return uniform(Shape(dims), seed, 1.0f);
}

void run_infer(const Options& o) {
  auto model = bnorm::io::load_model(o.model, {.compile = false});
  nn::FoldReport report;
  auto folded = nn::fold_batch_norm(*model, &report);
  const std::string fold_note =
      ", \"bn_folded\": " + std::to_string(report.folded) + ", \"bn_kept\": " + std::to_string(report.kept);
  for (std::int64_t batch : o.batches) {
    const Tensor x = input_for(*model, batch, 7);
    for (int i = 0; i < o.warmup; ++i) {
      (void)model->call(x, false);
      (void)folded->call(x, false);
    }
    std::vector<double> plain, fold, plain_cpu, fold_cpu;
    for (int i = 0; i < o.repeats; ++i) {
      auto t0 = Clock::now();
      double c0 = cpu_ms();
      Tensor y = model->call(x, false);
      plain.push_back(ms_since(t0));
      plain_cpu.push_back(cpu_ms() - c0);
      t0 = Clock::now();
      c0 = cpu_ms();
      Tensor z = folded->call(x, false);
      fold.push_back(ms_since(t0));
      fold_cpu.push_back(cpu_ms() - c0);
    }
    print_record(o, "plain", batch, plain, plain_cpu);
    print_record(o, "folded", batch, fold, fold_cpu, fold_note);
    if (o.profile) {
      profile_forward(*model, x, false, "infer plain batch " + std::to_string(batch));
      profile_forward(*folded, x, false, "infer folded batch " + std::to_string(batch));
    }
  }
}

void run_train(const Options& o) {
  const std::int64_t batch = o.batches.front();
  std::unique_ptr<nn::Model> model;
  try {
    model = bnorm::io::load_model(o.model, {.compile = false});
    nn::SGDOptions sgd;
    sgd.learning_rate = 0.01;
    model->compile(std::make_shared<nn::SGD>(sgd), "sparse_categorical_crossentropy");
  } catch (const std::exception& e) {
    print_unsupported(o, "train_on_batch", batch, std::string("load/compile: ") + e.what());
    return;
  }
  const Tensor x = input_for(*model, batch, 11);
  const std::int64_t classes = model->nodes().back().output_shape.dims().back();
  Tensor y(Shape{batch});
  for (std::int64_t i = 0; i < batch; ++i) y[i] = static_cast<float>((i * 7) % classes);
  std::vector<double> ms, cpu;
  try {
    for (int i = 0; i < o.warmup; ++i) (void)model->train_on_batch(x, y);
    for (int i = 0; i < o.repeats; ++i) {
      const auto t0 = Clock::now();
      const double c0 = cpu_ms();
      (void)model->train_on_batch(x, y);
      ms.push_back(ms_since(t0));
      cpu.push_back(cpu_ms() - c0);
    }
  } catch (const std::exception& e) {
    print_unsupported(o, "train_on_batch", batch, e.what());
    return;
  }
  print_record(o, "train_on_batch", batch, ms, cpu);
  if (o.profile) {
    const auto t0 = Clock::now();
    profile_forward(*model, x, true, "train forward (training=true) batch " + std::to_string(batch));
    const double fwd = ms_since(t0);
    std::fprintf(stderr,
                 "  whole step median %.2f ms; forward alone %.2f ms -> loss+backward+update ~%.2f ms\n",
                 median(ms), fwd, median(ms) - fwd);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  set_threads(o.threads);
  try {
    if (o.mode == "infer")
      run_infer(o);
    else
      run_train(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bnorm_cnn_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
