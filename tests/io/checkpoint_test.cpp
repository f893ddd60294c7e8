// Native checkpoint: round trip, bit-for-bit resumption of fit (Adam, SGD + momentum;
// Dropout and BatchNormalization in the model), version 1 files, ModelCheckpoint, bad
// files refused whole (model and optimizer unchanged), and atomic saving under SIGKILL.
#include "bnorm/io/checkpoint.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"

using bnorm::Shape;
using bnorm::Tensor;
namespace nn = bnorm::nn;
namespace io = bnorm::io;
namespace fs = std::filesystem;

namespace {

std::unique_ptr<nn::Sequential> model(std::int64_t width = 4) {
  nn::reset_unique_names();
  return std::make_unique<nn::Sequential>(std::vector<nn::LayerPtr>{
      std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{3}), std::make_shared<nn::Dense>(width),
      std::make_shared<nn::BatchNormalization>(), std::make_shared<nn::Dense>(1)});
}

// The resumption model: Dense -> BatchNormalization -> relu -> Dropout -> Dense.
std::unique_ptr<nn::Sequential> dropout_model(std::uint64_t init_seed) {
  nn::reset_unique_names();
  nn::DenseOptions d;
  d.kernel_initializer = nn::Initializer::glorot_uniform(init_seed);
  return std::make_unique<nn::Sequential>(std::vector<nn::LayerPtr>{
      std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{5}), std::make_shared<nn::Dense>(8, d),
      std::make_shared<nn::BatchNormalization>(nn::BatchNormalizationOptions{.momentum = 0.9}),
      std::make_shared<nn::Activation>("relu"), std::make_shared<nn::Dropout>(0.25, 7), std::make_shared<nn::Dense>(2, d)});
}

fs::path temp(const std::string& name) { return fs::temp_directory_path() / ("bnorm_ckpt_" + name); }

Tensor data(std::int64_t n, std::int64_t c, float scale) {
  Tensor t(Shape{n, c});
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = scale * static_cast<float>((i * 37) % 11) - 2.0f;
  return t;
}

Tensor noisy(std::int64_t n, std::int64_t c, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  Tensor t(Shape{n, c});
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = dist(gen);
  return t;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.numel()) * sizeof(float)) == 0;
}

bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

// Every variable, every optimizer slot, iterations and the Dropout generators agree to the bit.
void expect_same_state(nn::Model& a, nn::Model& b) {
  const auto wa = a.weights(), wb = b.weights();
  ASSERT_EQ(wa.size(), wb.size());
  for (std::size_t i = 0; i < wa.size(); ++i) EXPECT_TRUE(same_bits(wa[i]->value, wb[i]->value)) << wa[i]->name;
  ASSERT_EQ(a.compiled(), b.compiled());
  if (a.compiled()) {
    EXPECT_EQ(a.optimizer()->iterations(), b.optimizer()->iterations());
    EXPECT_EQ(a.optimizer()->learning_rate(), b.optimizer()->learning_rate());
    const auto sa = a.optimizer()->state(), sb = b.optimizer()->state();
    ASSERT_EQ(sa.size(), sb.size());
    for (std::size_t i = 0; i < sa.size(); ++i) {
      EXPECT_EQ(sa[i].first, sb[i].first);
      EXPECT_TRUE(same_bits(sa[i].second, sb[i].second)) << sa[i].first;
    }
  }
  for (std::size_t i = 0; i < a.layers().size(); ++i) {
    if (auto* d = dynamic_cast<nn::Dropout*>(a.layers()[i].get())) {
      auto* e = dynamic_cast<nn::Dropout*>(b.layers()[i].get());
      ASSERT_NE(e, nullptr);
      EXPECT_EQ(d->calls(), e->calls());
      EXPECT_EQ(d->seed(), e->seed());
    }
  }
}

std::shared_ptr<nn::Optimizer> optimizer(const std::string& kind) {
  if (kind == "adam") return std::make_shared<nn::Adam>(nn::AdamOptions{.learning_rate = 0.01});
  return std::make_shared<nn::SGD>(nn::SGDOptions{.learning_rate = 0.05, .momentum = 0.9, .nesterov = true});
}

// Train E epochs straight, and k epochs + checkpoint + fresh model + (E - k) epochs:
// identical to the bit.
void check_resume(const std::string& kind, bool through_callback) {
  const Tensor x = noisy(40, 5, 1), y = noisy(40, 2, 2);
  constexpr int E = 5, k = 2;
  const auto path = temp(kind + "_resume_{epoch}.bnc");
  const auto at_k = temp(kind + "_resume_" + std::to_string(k) + ".bnc");
  nn::FitOptions fit{.batch_size = 6, .epochs = E, .verbose = 0, .seed = 11, .validation_split = 0.1};

  auto straight = dropout_model(3);
  straight->compile(optimizer(kind), std::shared_ptr<nn::Loss>(nn::make_loss("mse")));
  if (through_callback) {
    fit.callbacks = {std::make_shared<io::ModelCheckpoint>(path.string(), io::ModelCheckpointOptions{.save_weights_only = false})};
  }
  const auto full = straight->fit(x, y, fit);
  fit.callbacks.clear();
  ASSERT_EQ(full->history["loss"].size(), static_cast<std::size_t>(E));

  std::vector<double> first_losses;
  if (!through_callback) {
    auto first = dropout_model(3);
    first->compile(optimizer(kind), std::shared_ptr<nn::Loss>(nn::make_loss("mse")));
    fit.epochs = k;
    first_losses = first->fit(x, y, fit)->history["loss"];
    EXPECT_EQ(first->epochs_completed(), k);
    io::save_checkpoint(*first, at_k);
    fit.epochs = E;
  }

  auto resumed = dropout_model(99);  // other initial weights: all must come from the file
  resumed->compile(optimizer(kind), std::shared_ptr<nn::Loss>(nn::make_loss("mse")));
  io::load_checkpoint(*resumed, at_k);
  EXPECT_EQ(resumed->epochs_completed(), k);
  fit.initial_epoch = resumed->epochs_completed();
  const auto rest = resumed->fit(x, y, fit);

  expect_same_state(*straight, *resumed);
  EXPECT_EQ(resumed->epochs_completed(), E);
  for (const auto& key : {"loss", "val_loss"}) {
    const auto& all = full->history.at(key);
    const std::vector<double> tail(all.begin() + k, all.end());
    EXPECT_TRUE(same_bits(tail, rest->history.at(key))) << key;
  }
  if (!through_callback) {
    const std::vector<double> head(full->history["loss"].begin(), full->history["loss"].begin() + k);
    EXPECT_TRUE(same_bits(head, first_losses));
  }
  EXPECT_EQ(rest->epoch, (std::vector<int>{2, 3, 4}));
  for (int e = 1; e <= E; ++e) fs::remove(temp(kind + "_resume_" + std::to_string(e) + ".bnc"));
}

// A version 1 file, written byte by byte from the format description.
void write_v1(nn::Model& m, const fs::path& path) {
  std::string buf("BNRMWTS", 8);
  auto put32 = [&](std::uint32_t v) { buf.append(reinterpret_cast<const char*>(&v), 4); };
  put32(1);
  std::vector<std::pair<std::string, nn::Variable*>> vars;
  for (const auto& l : m.layers())
    for (auto* v : l->weights()) vars.emplace_back(l->name() + "/" + v->name, v);
  put32(static_cast<std::uint32_t>(vars.size()));
  for (const auto& [name, v] : vars) {
    put32(static_cast<std::uint32_t>(name.size()));
    buf += name;
    put32(static_cast<std::uint32_t>(v->value.rank()));
    for (auto d : v->value.shape().dims()) buf.append(reinterpret_cast<const char*>(&d), 8);
    buf.append(reinterpret_cast<const char*>(v->value.data()), static_cast<std::size_t>(v->value.numel()) * 4);
  }
  std::ofstream(path, std::ios::binary) << buf;
}

}  // namespace

TEST(NativeCheckpoint, RoundTripRestoresEveryVariableExactly) {
  auto a = model();
  a->compile("adam", "mse");
  a->fit(data(16, 3, 0.5f), data(16, 1, 0.3f), {.batch_size = 4, .epochs = 2, .verbose = 0});
  const auto path = temp("roundtrip.bnc");
  io::save_checkpoint(*a, path);
  auto b = model();
  b->compile("adam", "mse");
  io::load_checkpoint(*b, path);
  expect_same_state(*a, *b);
  EXPECT_EQ(b->epochs_completed(), 2);
  auto c = model();  // uncompiled: weights only, the optimizer section is skipped
  io::load_checkpoint(*c, path);
  const auto wa = a->get_weights(), wc = c->get_weights();
  for (std::size_t i = 0; i < wa.size(); ++i) EXPECT_TRUE(same_bits(wa[i], wc[i])) << i;
  fs::remove(path);
}

TEST(NativeCheckpoint, ResumedAdamRunEqualsUninterruptedRunBitForBit) { check_resume("adam", false); }
TEST(NativeCheckpoint, ResumedSgdMomentumRunEqualsUninterruptedRunBitForBit) { check_resume("sgd", false); }
TEST(NativeCheckpoint, ModelCheckpointFullStateResumesBitForBit) { check_resume("adam", true); }

TEST(NativeCheckpoint, InitialEpochAtOrPastEpochsTrainsNothing) {
  auto m = dropout_model(3);
  m->compile("sgd", "mse");
  const auto h = m->fit(noisy(8, 5, 1), noisy(8, 2, 2), {.batch_size = 4, .epochs = 2, .initial_epoch = 2, .verbose = 0});
  EXPECT_TRUE(h->history["loss"].empty());
  EXPECT_EQ(m->optimizer()->iterations(), 0);
  EXPECT_THROW(m->fit(noisy(8, 5, 1), noisy(8, 2, 2), {.epochs = 2, .initial_epoch = -1, .verbose = 0}), bnorm::ArgumentError);
}

TEST(NativeCheckpoint, Version1WeightsFilesStillLoad) {
  auto a = model();
  a->compile("adam", "mse");
  a->fit(data(16, 3, 0.5f), data(16, 1, 0.3f), {.batch_size = 4, .epochs = 1, .verbose = 0});
  const auto path = temp("v1.bnw");
  write_v1(*a, path);
  auto b = model();
  b->compile("adam", "mse");
  io::load_checkpoint(*b, path);
  const auto wa = a->get_weights(), wb = b->get_weights();
  for (std::size_t i = 0; i < wa.size(); ++i) EXPECT_TRUE(same_bits(wa[i], wb[i])) << i;
  EXPECT_EQ(b->optimizer()->iterations(), 0);  // weights only
  fs::resize_file(path, fs::file_size(path) - 1);
  EXPECT_THROW(io::load_checkpoint(*b, path), io::FormatError);
  fs::remove(path);
}

TEST(NativeCheckpoint, BadFilesAreRefusedWholeAndNamed) {
  auto a = model();
  a->compile("adam", "mse");
  a->fit(data(16, 3, 0.5f), data(16, 1, 0.3f), {.batch_size = 4, .epochs = 1, .verbose = 0});
  const auto path = temp("bad.bnc");
  io::save_checkpoint(*a, path);
  const auto size = fs::file_size(path);
  std::string good;
  {
    std::ifstream in(path, std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto b = model();
  b->compile("adam", "mse");
  b->fit(data(8, 3, 0.2f), data(8, 1, 0.1f), {.batch_size = 4, .epochs = 1, .verbose = 0});
  const auto before = b->get_weights();
  const auto slots_before = b->optimizer()->state();
  const auto iterations_before = b->optimizer()->iterations();
  auto unchanged = [&] {
    const auto now = b->get_weights();
    for (std::size_t i = 0; i < now.size(); ++i)
      if (!same_bits(now[i], before[i])) return false;
    const auto slots = b->optimizer()->state();
    if (slots.size() != slots_before.size()) return false;
    for (std::size_t i = 0; i < slots.size(); ++i)
      if (!same_bits(slots[i].second, slots_before[i].second)) return false;
    return b->optimizer()->iterations() == iterations_before && b->epochs_completed() == 1;
  };
  auto expect_refused = [&](const std::string& what, const std::string& argument_part) {
    try {
      io::load_checkpoint(*b, path);
      ADD_FAILURE() << what << " accepted";
    } catch (const io::FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(argument_part), std::string::npos) << what << ": " << e.what();
    }
    EXPECT_TRUE(unchanged()) << what;
  };
  fs::resize_file(path, size - 3);
  expect_refused("truncated file", "truncated");
  for (std::size_t cut : {std::size_t{5}, std::size_t{12}, std::size_t{40}, size / 2}) {
    std::ofstream(path, std::ios::binary) << good.substr(0, cut);
    EXPECT_THROW(io::load_checkpoint(*b, path), io::FormatError) << cut;
    EXPECT_TRUE(unchanged());
  }
  std::string flipped = good;
  flipped[size / 2] = static_cast<char>(flipped[size / 2] ^ 0x10);
  std::ofstream(path, std::ios::binary) << flipped;
  expect_refused("one flipped bit", "checksum");
  { std::ofstream(path) << "not a weights file at all"; }
  expect_refused("other content", "magic");
  auto wide = model(5);  // other shapes
  io::save_checkpoint(*wide, path);
  try {
    io::load_checkpoint(*b, path);
    ADD_FAILURE() << "mismatching shapes accepted";
  } catch (const io::FormatError& e) {
    EXPECT_EQ(e.argument(), "dense/kernel") << e.what();
  }
  EXPECT_TRUE(unchanged());
  auto other_optimizer = model();  // SGD state into an Adam model
  other_optimizer->compile("sgd", "mse");
  io::save_checkpoint(*other_optimizer, path);
  expect_refused("another optimizer class", "optimizer");
  auto other_beta = model();
  other_beta->compile(std::make_shared<nn::Adam>(nn::AdamOptions{.beta_1 = 0.8}), std::shared_ptr<nn::Loss>(nn::make_loss("mse")));
  other_beta->fit(data(16, 3, 0.5f), data(16, 1, 0.3f), {.batch_size = 4, .epochs = 1, .verbose = 0});
  io::save_checkpoint(*other_beta, path);
  expect_refused("another beta_1", "beta_1");
  auto with_dropout = dropout_model(1);  // other layers entirely
  io::save_checkpoint(*with_dropout, path);
  EXPECT_THROW(io::load_checkpoint(*b, path), io::FormatError);
  EXPECT_TRUE(unchanged());
  EXPECT_THROW(io::load_checkpoint(*b, temp("missing.bnc")), io::FileError);
  EXPECT_TRUE(unchanged());
  fs::remove(path);
}

TEST(NativeCheckpoint, HostileCountsAreRefusedWithoutAllocating) {
  auto a = model();
  std::string bytes = io::checkpoint_bytes(*a, {});
  // The weight count sits after magic, version and flags; claim 2^32 - 1 entries and fix
  // the checksum so that the count itself is what gets checked.
  const std::uint32_t huge = 0xffffffffu;
  std::memcpy(bytes.data() + 16, &huge, 4);
  const auto crc = static_cast<std::uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(bytes.size() - 4)));
  std::memcpy(bytes.data() + bytes.size() - 4, &crc, 4);
  try {
    io::load_checkpoint_bytes(*a, bytes, "hostile");
    ADD_FAILURE() << "a count of 2^32 - 1 accepted";
  } catch (const io::FormatError& e) {
    EXPECT_EQ(e.argument(), "weight count") << e.what();
  }
}

TEST(ModelCheckpoint, SavesBestEpochOnly) {
  auto m = model();
  m->compile("sgd", "mse");
  const auto path = temp("best_{epoch}.bnw");
  auto ckpt = std::make_shared<io::ModelCheckpoint>(path.string(), io::ModelCheckpointOptions{.monitor = "loss", .save_best_only = true});
  m->fit(data(16, 3, 0.5f), data(16, 1, 0.3f), {.batch_size = 4, .epochs = 3, .verbose = 0, .callbacks = {ckpt}});
  ASSERT_FALSE(ckpt->last_saved().empty());
  EXPECT_TRUE(fs::exists(ckpt->last_saved()));
  auto fresh = model();
  fresh->compile("sgd", "mse");
  io::load_checkpoint(*fresh, ckpt->last_saved());  // weights only: the optimizer is left alone
  EXPECT_EQ(fresh->optimizer()->iterations(), 0);
  for (int e = 1; e <= 3; ++e) fs::remove(temp("best_" + std::to_string(e) + ".bnw"));
}

// A child process saves two large checkpoints in turn, forever; it is killed with
// SIGKILL at random moments. After each kill the target must hold one of the two, whole.
TEST(AtomicSave, KillDuringSaveLeavesOldOrNewFile) {
  nn::reset_unique_names();
  auto big = [](float shift) {
    nn::reset_unique_names();
    auto m = std::make_unique<nn::Sequential>(std::vector<nn::LayerPtr>{
        std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{1024}), std::make_shared<nn::Dense>(768)});
    auto w = m->get_weights();
    for (auto& t : w)
      for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = shift + static_cast<float>(i % 1000) * 1e-3f;
    m->set_weights(w);
    return m;
  };
  auto a = big(0.0f), b = big(1.0f), c = big(5.0f);
  const auto dir = temp("atomic");
  fs::remove_all(dir);
  fs::create_directories(dir);
  const auto path = dir / "run.bnc";
  io::save_checkpoint(*a, path);
  std::mt19937 gen(20260801);
  std::uniform_int_distribution<int> delay_us(0, 40000);
  int saw_a = 0, saw_b = 0, saw_temporaries = 0;
  constexpr int kKills = 12;
  for (int iteration = 0; iteration < kKills; ++iteration) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      for (std::uint64_t i = 0;; ++i) {
        try {
          io::save_checkpoint(i % 2 ? *a : *b, path);
        } catch (...) {
          ::_exit(3);
        }
      }
    }
    ::usleep(static_cast<useconds_t>(2000 + delay_us(gen)));
    ASSERT_EQ(::kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer exited by itself: status " << status;
    for (const auto& e : fs::directory_iterator(dir)) saw_temporaries += e.path().filename() != "run.bnc";
    io::load_checkpoint(*c, path);  // throws on a partial file
    const auto wc = c->get_weights(), wa = a->get_weights(), wb = b->get_weights();
    const bool is_a = same_bits(wc[0], wa[0]) && same_bits(wc[1], wa[1]);
    const bool is_b = same_bits(wc[0], wb[0]) && same_bits(wc[1], wb[1]);
    EXPECT_TRUE(is_a || is_b) << "iteration " << iteration;
    saw_a += is_a;
    saw_b += is_b;
  }
  // The next save removes what killed writers left behind.
  io::save_checkpoint(*a, path);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir)) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"run.bnc"});
  std::printf("[ kill test ] %d kills: target held the A file %d times, the B file %d times; "
              "%d temporary files from killed writers seen (removed by the next save)\n",
              kKills, saw_a, saw_b, saw_temporaries);
  RecordProperty("temporaries_seen", saw_temporaries);
  fs::remove_all(dir);
}
