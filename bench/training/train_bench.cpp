// bnorm_train_bench: the bnorm side of the training-speed benchmark (issue 3, item 8).
// run_training_bench.py runs it next to the same models in Keras and PyTorch and prints
// the table; this program trains one model with Model::fit(verbose = 0) and prints one
// JSON line with the wall time of every epoch (a callback reads a steady clock at
// on_epoch_begin / on_epoch_end, as the Keras side does).
//
//   bnorm_train_bench --model dense64|mlp784 [--threads N] [--epochs E] [--samples S]
//                     [--data DIR] [--profile]
//
// Models (the same in the three frameworks):
//   dense64  article 003: Dense(64) -> BatchNormalization -> relu -> Dense(1); mse, Adam
//            (Keras defaults); x (1100, 10) and y (1100, 1) standard normal; batch 32.
//   mlp784   784-100-100-100-10: three times Dense(100) -> BatchNormalization -> sigmoid,
//            then Dense(10, softmax); sparse categorical cross-entropy, SGD(0.01);
//            the first S (default 12000) Fashion-MNIST training images / 255; batch 60.
// --threads N sets bnorm's batch-norm kernel threads (kernels::set_num_threads) and
// OpenBLAS's (openblas_set_num_threads; the driver also exports OPENBLAS_NUM_THREADS).
// --profile (after the timed fit) repeats one epoch's steps by hand, timing the parts of
// Model::train_step separately: the batch copy, each layer's forward and backward, the
// loss, the optimizer and the statistic updates, plus the raw dense GEMM kernels for the
// same shapes; the breakdown goes to stderr.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/core/tensor.hpp"
#include "bnorm/io/idx.hpp"
#include "bnorm/kernels/batch_norm.hpp"
#include "bnorm/kernels/dense.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/callbacks.hpp"
#include "bnorm/nn/layers.hpp"
#include "bnorm/nn/losses.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/optimizers.hpp"
#include "bnorm/nn/updates.hpp"

// OpenBLAS's own setter (bnorm links OpenBLAS but exposes no thread setting).
extern "C" void openblas_set_num_threads(int num_threads);
extern "C" int openblas_get_num_threads(void);

namespace nn = bnorm::nn;
using bnorm::Shape;
using bnorm::Tensor;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Standard normal samples (splitmix64 + Box-Muller); the values do not affect the timing.
Tensor normal(Shape shape, std::uint64_t seed) {
  Tensor t(std::move(shape));
  std::uint64_t s = seed * 0x9E3779B97F4A7C15ull;
  auto uniform = [&s] {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return static_cast<double>((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
  };
  for (std::int64_t i = 0; i < t.numel(); ++i)
    t[i] = static_cast<float>(std::sqrt(-2.0 * std::log(1.0 - uniform())) * std::cos(6.283185307179586 * uniform()));
  return t;
}

struct Setup {
  std::unique_ptr<nn::Sequential> model;
  std::shared_ptr<nn::Loss> loss;
  Tensor x, y;
  std::int64_t batch_size = 32;
};

Setup make_dense64() {
  Setup s;
  nn::DenseOptions first;
  first.input_shape = {10};
  s.model = std::make_unique<nn::Sequential>(std::vector<nn::LayerPtr>{
      std::make_shared<nn::Dense>(64, first), std::make_shared<nn::BatchNormalization>(),
      std::make_shared<nn::Activation>("relu"), std::make_shared<nn::Dense>(1)});
  s.loss = nn::make_loss("mse");
  s.model->compile(std::make_shared<nn::Adam>(), s.loss);
  s.x = normal(Shape{1100, 10}, 1);
  s.y = normal(Shape{1100, 1}, 2);
  s.batch_size = 32;
  return s;
}

Setup make_mlp784(const std::filesystem::path& dir, std::int64_t samples) {
  Setup s;
  nn::DenseOptions first;
  first.input_shape = {784};
  std::vector<nn::LayerPtr> layers;
  for (int i = 0; i < 3; ++i) {
    layers.push_back(std::make_shared<nn::Dense>(100, i == 0 ? first : nn::DenseOptions{}));
    layers.push_back(std::make_shared<nn::BatchNormalization>());
    layers.push_back(std::make_shared<nn::Activation>("sigmoid"));
  }
  nn::DenseOptions out;
  out.activation = "softmax";
  layers.push_back(std::make_shared<nn::Dense>(10, out));
  s.model = std::make_unique<nn::Sequential>(std::move(layers));
  s.loss = nn::make_loss("sparse_categorical_crossentropy");
  s.model->compile(std::make_shared<nn::SGD>(), s.loss);

  const auto images = bnorm::io::read_idx(dir / "train-images-idx3-ubyte.gz");
  const auto labels = bnorm::io::read_idx(dir / "train-labels-idx1-ubyte.gz");
  const std::int64_t n = std::min(samples, images.dims.at(0));
  const std::int64_t features = images.dims.at(1) * images.dims.at(2);
  s.x = Tensor(Shape{n, features});
  s.y = Tensor(Shape{n});
  for (std::int64_t i = 0; i < n * features; ++i)
    s.x[i] = static_cast<float>(images.data[static_cast<std::size_t>(i)] * (1.0 / 255));
  for (std::int64_t i = 0; i < n; ++i) s.y[i] = static_cast<float>(labels.data[static_cast<std::size_t>(i)]);
  s.batch_size = 60;
  return s;
}

class EpochTimer : public nn::Callback {
 public:
  void on_epoch_begin(nn::Model&, int) override { t0_ = Clock::now(); }
  void on_epoch_end(nn::Model&, int, const nn::Logs& logs) override {
    seconds.push_back(seconds_since(t0_));
    auto it = logs.find("loss");
    last_loss = it == logs.end() ? NAN : it->second;
  }
  std::vector<double> seconds;
  double last_loss = NAN;

 private:
  Clock::time_point t0_;
};

// Rows `order[begin, end)` of t (what fit's batching does).
Tensor rows(const Tensor& t, const std::vector<std::int64_t>& order, std::size_t begin, std::size_t end) {
  std::vector<std::int64_t> dims = t.shape().dims();
  const std::int64_t width = dims.empty() || dims[0] == 0 ? 0 : t.numel() / dims[0];
  dims[0] = static_cast<std::int64_t>(end - begin);
  Tensor out{Shape(dims)};
  for (std::size_t i = begin; i < end; ++i)
    std::memcpy(out.data() + static_cast<std::int64_t>(i - begin) * width, t.data() + order[i] * width,
                static_cast<std::size_t>(width) * sizeof(float));
  return out;
}

// Seconds summed per part, printed in first-seen order.
struct Parts {
  std::map<std::string, double> sec;
  std::vector<std::string> order;
  void add(const std::string& key, double s) {
    if (!sec.count(key)) order.push_back(key);
    sec[key] += s;
  }
};

// One epoch of Model::train_step done by hand with the model's own layers, loss and
// optimizer, each part timed; then the same batches through train_on_batch, and the raw
// dense / batch-norm kernels for the same shapes. Breakdown to stderr.
void profile(Setup& s, double fit_epoch_seconds) {
  nn::Model& model = *s.model;
  const std::int64_t n = s.x.dim(0);
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = (i * 7919) % n;  // scattered rows (a permutation: 7919 is prime)
  const std::int64_t steps = (n + s.batch_size - 1) / s.batch_size;
  const auto& layers = model.layers();
  Parts parts, by_class;
  std::vector<std::pair<std::int64_t, std::int64_t>> dense_shapes;  // (K, M)
  std::vector<std::int64_t> bn_channels;

  const auto epoch0 = Clock::now();
  for (std::int64_t step = 0; step < steps; ++step) {
    const auto begin = static_cast<std::size_t>(step * s.batch_size);
    const auto end = static_cast<std::size_t>(std::min(n, (step + 1) * s.batch_size));
    auto t = Clock::now();
    const Tensor xb = rows(s.x, order, begin, end), yb = rows(s.y, order, begin, end);
    double d = seconds_since(t);
    parts.add("batch copy (gather rows)", d);
    by_class.add("batch copy", d);

    nn::UpdateCollection updates;
    std::vector<std::unique_ptr<nn::LayerContext>> contexts(layers.size());
    Tensor h = xb;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      if (step == 0) {
        if (auto* dense = dynamic_cast<nn::Dense*>(layers[i].get()))
          dense_shapes.emplace_back(h.dim(h.rank() - 1), dense->units());
        if (dynamic_cast<nn::BatchNormalization*>(layers[i].get())) bn_channels.push_back(h.dim(h.rank() - 1));
      }
      t = Clock::now();
      h = layers[i]->forward(h, true, &contexts[i], &updates);
      d = seconds_since(t);
      parts.add("forward  " + layers[i]->name(), d);
      by_class.add(layers[i]->class_name() + " forward", d);
    }
    t = Clock::now();
    const nn::LossValue loss = s.loss->compute(yb, h);
    d = seconds_since(t);
    parts.add("loss", d);
    by_class.add("loss", d);
    nn::Gradients grads;
    Tensor dy = loss.grad;
    for (std::size_t i = layers.size(); i-- > 0;) {
      t = Clock::now();
      dy = layers[i]->backward(*contexts[i], dy, grads);
      d = seconds_since(t);
      parts.add("backward " + layers[i]->name(), d);
      by_class.add(layers[i]->class_name() + " backward", d);
    }
    t = Clock::now();
    model.optimizer()->apply_gradients(grads, model.trainable_weights());
    d = seconds_since(t);
    parts.add("optimizer", d);
    by_class.add("optimizer", d);
    t = Clock::now();
    updates.apply();
    d = seconds_since(t);
    parts.add("moving-statistic updates", d);
    by_class.add("moving-statistic updates", d);
  }
  const double by_hand = seconds_since(epoch0);

  auto t = Clock::now();
  for (std::int64_t step = 0; step < steps; ++step) {
    const auto begin = static_cast<std::size_t>(step * s.batch_size);
    const auto end = static_cast<std::size_t>(std::min(n, (step + 1) * s.batch_size));
    model.train_on_batch(rows(s.x, order, begin, end), rows(s.y, order, begin, end));
  }
  const double on_batch = seconds_since(t);

  // Raw kernels, `steps` calls each, full batches.
  const std::int64_t N = s.batch_size;
  double gemm = 0;
  std::string gemm_detail;
  for (auto [K, M] : dense_shapes) {
    std::vector<float> x(static_cast<std::size_t>(N * K), 0.5f), w(static_cast<std::size_t>(K * M), 0.01f),
        b(static_cast<std::size_t>(M)), y(static_cast<std::size_t>(N * M)), dx(static_cast<std::size_t>(N * K)),
        dw(static_cast<std::size_t>(K * M)), db(static_cast<std::size_t>(M));
    t = Clock::now();
    for (std::int64_t i = 0; i < steps; ++i)
      bnorm::kernels::dense_forward(x.data(), w.data(), b.data(), N, K, M, y.data());
    const double f = seconds_since(t);
    t = Clock::now();
    for (std::int64_t i = 0; i < steps; ++i)
      bnorm::kernels::dense_backward(y.data(), x.data(), w.data(), N, K, M, dx.data(), dw.data(), db.data());
    const double bw = seconds_since(t);
    t = Clock::now();
    for (std::int64_t i = 0; i < steps; ++i)
      bnorm::kernels::dense_backward(y.data(), x.data(), w.data(), N, K, M, nullptr, dw.data(), db.data());
    const double bw_nodx = seconds_since(t);
    gemm += f + bw;
    char buf[160];
    std::snprintf(buf, sizeof buf, "\n    %4lldx%-4lld fwd %.4f  bwd %.4f  (bwd without dx %.4f)", static_cast<long long>(K),
                  static_cast<long long>(M), f, bw, bw_nodx);
    gemm_detail += buf;
  }
  double bnk = 0;
  for (std::int64_t C : bn_channels) {
    const bnorm::kernels::BatchNormDims dims{N, C, 1};
    std::vector<float> x(static_cast<std::size_t>(N * C), 0.25f), y(x.size()), dx(x.size()),
        g(static_cast<std::size_t>(C), 1.0f), bt(static_cast<std::size_t>(C)), mean(bt.size()), var(bt.size()),
        inv(bt.size()), dg(bt.size()), dbt(bt.size());
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17);
    t = Clock::now();
    for (std::int64_t i = 0; i < steps; ++i) {
      bnorm::kernels::forward_training(x.data(), dims, g.data(), bt.data(), 1e-3f, y.data(), mean.data(), var.data(),
                                       inv.data());
      bnorm::kernels::backward_training(y.data(), x.data(), dims, mean.data(), inv.data(), g.data(), dx.data(),
                                        dg.data(), dbt.data());
    }
    bnk += seconds_since(t);
  }

  std::fprintf(stderr, "profile (%lld steps of batch %lld, one epoch, seconds):\n", static_cast<long long>(steps),
               static_cast<long long>(N));
  std::fprintf(stderr, "  fit epoch (median, timed run)      %8.4f\n", fit_epoch_seconds);
  std::fprintf(stderr, "  train_on_batch x steps             %8.4f\n", on_batch);
  std::fprintf(stderr, "  train_step by hand, total          %8.4f\n", by_hand);
  for (const auto& k : by_class.order)
    std::fprintf(stderr, "    %-32s %8.4f  %5.1f%%\n", k.c_str(), by_class.sec[k], 100.0 * by_class.sec[k] / by_hand);
  std::fprintf(stderr, "  per layer:\n");
  for (const auto& k : parts.order)
    std::fprintf(stderr, "    %-32s %8.4f  %5.1f%%\n", k.c_str(), parts.sec[k], 100.0 * parts.sec[k] / by_hand);
  std::fprintf(stderr, "  raw dense kernels fwd+bwd (GEMM)   %8.4f%s\n", gemm, gemm_detail.c_str());
  std::fprintf(stderr, "  raw batch-norm kernels fwd+bwd     %8.4f\n", bnk);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_name = "dense64";
  int threads = 2, epochs = 0;
  std::int64_t samples = 12000;
  std::filesystem::path data = "/usr/share/datasets/fashion-mnist";
  bool do_profile = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--model") model_name = next();
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--epochs") epochs = std::stoi(next());
    else if (a == "--samples") samples = std::stoll(next());
    else if (a == "--data") data = next();
    else if (a == "--profile") do_profile = true;
    else {
      std::fprintf(stderr, "usage: %s --model dense64|mlp784 [--threads N] [--epochs E] [--samples S] [--data DIR] [--profile]\n", argv[0]);
      return 2;
    }
  }
  if (threads < 1 || epochs < 0 || samples < 1) {
    std::fprintf(stderr, "threads and samples must be >= 1, epochs >= 0\n");
    return 2;
  }
  if (epochs == 0) epochs = model_name == "dense64" ? 20 : 4;
  bnorm::kernels::set_num_threads(threads);
  openblas_set_num_threads(threads);

  try {
    Setup s;
    if (model_name == "dense64") s = make_dense64();
    else if (model_name == "mlp784") s = make_mlp784(data, samples);
    else {
      std::fprintf(stderr, "unknown model '%s' (dense64, mlp784)\n", model_name.c_str());
      return 2;
    }
    auto timer = std::make_shared<EpochTimer>();
    nn::FitOptions options;
    options.batch_size = s.batch_size;
    options.epochs = epochs;
    options.verbose = 0;
    options.callbacks = {timer};
    const auto t0 = Clock::now();
    s.model->fit(s.x, s.y, options);
    const double total = seconds_since(t0);

    std::string list;
    for (double v : timer->seconds) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%s%.6f", list.empty() ? "" : ", ", v);
      list += buf;
    }
    std::printf("{\"framework\": \"bnorm\", \"model\": \"%s\", \"threads\": %d, \"openblas_threads\": %d, "
                "\"samples\": %lld, \"batch_size\": %lld, \"epochs\": %d, \"epoch_seconds\": [%s], "
                "\"fit_seconds\": %.6f, \"final_loss\": %.6g}\n",
                model_name.c_str(), threads, openblas_get_num_threads(), static_cast<long long>(s.x.dim(0)),
                static_cast<long long>(s.batch_size), epochs, list.c_str(), total, timer->last_loss);
    std::fflush(stdout);
    if (do_profile) {
      std::vector<double> rest(timer->seconds.begin() + (timer->seconds.size() > 1 ? 1 : 0), timer->seconds.end());
      std::sort(rest.begin(), rest.end());
      profile(s, rest.empty() ? NAN : rest[rest.size() / 2]);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bnorm_train_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
