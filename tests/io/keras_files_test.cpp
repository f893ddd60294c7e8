// Bad Keras files: every one is refused with an io::FormatError (or FileError) that names
// the file, the layer and the variable where there is one, nothing crashes, and the
// model is unchanged afterwards. Good files come from real Keras (tests/fixtures/models);
// bad ones are made from them (truncated, patched) or written here with HDF5 and libzip.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <zip.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "bnorm/io/model_file.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/layers.hpp"
#include "nn/fixture_file.hpp"

using bnorm::Shape;
using bnorm::Tensor;
namespace nn = bnorm::nn;
namespace io = bnorm::io;
namespace fs = std::filesystem;

namespace {

std::string model_path(const std::string& name) { return bnorm::test::fixtures_dir() + "/models/" + name; }

fs::path temp(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / "bnorm_keras_files";
  fs::create_directories(dir);
  return dir / name;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The "mlp" case's architecture: Input(10) -> Dense(16) -> BN -> relu -> Dropout -> Dense(3),
// with Keras 3's names; `hidden` and `last` vary it.
std::unique_ptr<nn::Sequential> mlp(std::int64_t hidden = 16, std::int64_t last = 3, bool extra = false,
                                    bool center = true) {
  nn::reset_unique_names();
  nn::DenseOptions d_in;
  d_in.name = "d_in";
  nn::DenseOptions d_out;
  d_out.name = "d_out";
  std::vector<nn::LayerPtr> layers{std::make_shared<nn::InputLayer>(std::vector<std::int64_t>{10}),
                                   std::make_shared<nn::Dense>(hidden, d_in),
                                   std::make_shared<nn::BatchNormalization>(
                                       nn::BatchNormalizationOptions{.center = center, .name = "bn"}),
                                   std::make_shared<nn::Activation>("relu", "act"),
                                   std::make_shared<nn::Dropout>(0.2, 0, "drop"), std::make_shared<nn::Dense>(last, d_out)};
  if (extra) layers.push_back(std::make_shared<nn::Dense>(2));
  return std::make_unique<nn::Sequential>(layers, "mlp");
}

// Runs `load` and checks it throws E whose message contains every one of `words`, and that
// the model's weights did not change.
template <typename E>
void expect_refused(nn::Model& model, const std::function<void()>& load, const std::vector<std::string>& words) {
  const std::vector<Tensor> before = model.get_weights();
  try {
    load();
    ADD_FAILURE() << "no exception";
  } catch (const E& e) {
    const std::string what = e.what();
    for (const auto& w : words) EXPECT_NE(what.find(w), std::string::npos) << "'" << w << "' not in: " << what;
    std::printf("[ refused ] %s\n", what.c_str());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
  const std::vector<Tensor> after = model.get_weights();
  ASSERT_EQ(before.size(), after.size());
  for (std::size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(std::memcmp(before[i].data(), after[i].data(), static_cast<std::size_t>(before[i].numel()) * 4), 0)
        << "weight " << i << " changed";
  }
}

// A Keras 3 weights file for mlp() written with the HDF5 C API, with one dataset altered by
// `patch` (called with the file id after the good content is written).
fs::path keras3_weights(const std::string& name, const std::function<void(hid_t)>& patch) {
  auto model = mlp();
  const fs::path good = temp("good.weights.h5");
  io::save_weights(*model, good.string());
  const fs::path bad = temp(name);
  fs::copy_file(good, bad, fs::copy_options::overwrite_existing);
  const hid_t f = H5Fopen(bad.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  patch(f);
  H5Fclose(f);
  return bad;
}

TEST(KerasBadFiles, NotAModelFileAtAll) {
  auto model = mlp();
  const fs::path text = temp("notes.keras");
  write_file(text, "these are not weights\n");
  expect_refused<io::FormatError>(*model, [&] { io::load_weights(*model, text.string()); }, {text.string(), "weights file"});
  EXPECT_THROW(io::load_model(text.string()), io::FormatError);
  const fs::path empty = temp("empty.h5");
  write_file(empty, "");
  expect_refused<io::FormatError>(*model, [&] { io::load_weights(*model, empty.string()); }, {"empty file"});
  expect_refused<io::FileError>(*model, [&] { io::load_weights(*model, temp("missing.h5").string()); }, {"missing.h5"});
}

TEST(KerasBadFiles, TruncatedFilesOfEveryFormat) {
  for (const std::string name : {"mlp.keras", "mlp.weights.h5", "mlp.legacy.h5", "mlp.legacy_weights.h5"}) {
    SCOPED_TRACE(name);
    const std::string bytes = read_file(model_path(name));
    for (const double keep : {0.9, 0.5, 0.1}) {
      const fs::path cut = temp("cut_" + name);
      write_file(cut, bytes.substr(0, static_cast<std::size_t>(static_cast<double>(bytes.size()) * keep)));
      auto model = mlp();
      expect_refused<io::FormatError>(*model, [&] { io::load_weights(*model, cut.string()); }, {cut.string()});
      EXPECT_THROW(io::load_model(cut.string()), io::FormatError);
    }
  }
}

TEST(KerasBadFiles, WrongShapeNamesLayerAndVariable) {
  auto model = mlp(17);
  for (const std::string name : {"mlp.weights.h5", "mlp.keras", "mlp.legacy_weights.h5", "mlp.legacy.h5"}) {
    SCOPED_TRACE(name);
    expect_refused<io::FormatError>(*model, [&] { io::load_weights(*model, model_path(name)); },
                                    {name, "d_in", "kernel", "(10, 17)", "(10, 16)"});
  }
}

TEST(KerasBadFiles, MissingAndExtraVariablesAndLayers) {
  {  // the model has a layer the file lacks
    auto model = mlp(16, 3, true);
    expect_refused<io::FormatError>(*model, [&] { io::load_weights(*model, model_path("mlp.weights.h5")); },
                                    {"dense", "layers/dense_2/vars", "no such group"});
    expect_refused<io::FormatError>(*model, [&] { io::load_weights(*model, model_path("mlp.legacy_weights.h5")); },
                                    {"layer_names", "4 layers with weights", "received 3"});
  }
  {  // BN without beta: the file has one variable more than the layer
    auto model = mlp(16, 3, false, false);
    expect_refused<io::FormatError>(*model, [&] { io::load_weights(*model, model_path("mlp.weights.h5")); },
                                    {"'bn' (BatchNormalization)", "3 variables (gamma, moving_mean, moving_variance)", "received 4"});
    expect_refused<io::FormatError>(*model, [&] { io::load_weights(*model, model_path("mlp.legacy_weights.h5")); },
                                    {"'bn'", "3 weights", "bn/beta:0"});
  }
  {  // a variable missing from a group
    const auto bad = keras3_weights("missing_var.weights.h5", [](hid_t f) {
      H5Ldelete(f, "/layers/batch_normalization/vars/3", H5P_DEFAULT);
    });
    auto model = mlp();
    expect_refused<io::FormatError>(*model, [&] { io::load_weights(*model, bad.string()); },
                                    {"'bn'", "4 variables", "received 3"});
  }
  {  // variables of a layer the model does not have
    const auto bad = keras3_weights("extra_layer.weights.h5", [](hid_t f) {
      const hid_t g = H5Gcreate2(f, "/layers/dense_7", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      const hid_t v = H5Gcreate2(g, "vars", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      const hsize_t n = 2;
      const hid_t s = H5Screate_simple(1, &n, nullptr);
      const hid_t d = H5Dcreate2(v, "0", H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      const float values[2] = {1, 2};
      H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values);
      H5Dclose(d), H5Sclose(s), H5Gclose(v), H5Gclose(g);
    });
    auto model = mlp();
    expect_refused<io::FormatError>(*model, [&] { io::load_weights(*model, bad.string()); },
                                    {"layers/dense_7", "a layer the model does not have"});
  }
}

TEST(KerasBadFiles, WrongDtypeSoftLinksAndShapeBombs) {
  auto model = mlp();
  const auto ints = keras3_weights("int_kernel.weights.h5", [](hid_t f) {
    H5Ldelete(f, "/layers/dense/vars/0", H5P_DEFAULT);
    const hsize_t dims[2] = {10, 16};
    const hid_t s = H5Screate_simple(2, dims, nullptr);
    const hid_t d = H5Dcreate2(f, "/layers/dense/vars/0", H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    std::vector<int> zeros(160, 0);
    H5Dwrite(d, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros.data());
    H5Dclose(d), H5Sclose(s);
  });
  expect_refused<io::FormatError>(*model, [&] { io::load_weights(*model, ints.string()); },
                                  {"'d_in' (Dense) variable kernel", "float values", "integers"});

  const auto soft = keras3_weights("soft_link.weights.h5", [](hid_t f) {
    H5Ldelete(f, "/layers/dense/vars/1", H5P_DEFAULT);
    H5Lcreate_soft("/layers/dense_1/vars/1", f, "/layers/dense/vars/1", H5P_DEFAULT, H5P_DEFAULT);
  });
  expect_refused<io::FormatError>(*model, [&] { io::load_weights(*model, soft.string()); }, {"soft or external link"});

  // Declares 10 x 16 floats but stores none (chunked, never written): a "shape bomb" in
  // miniature; the same check refuses terabyte declarations before allocating.
  const auto bomb = keras3_weights("bomb.weights.h5", [](hid_t f) {
    H5Ldelete(f, "/layers/dense/vars/0", H5P_DEFAULT);
    const hsize_t dims[2] = {10, 16}, chunk[2] = {1, 16};
    const hid_t s = H5Screate_simple(2, dims, nullptr);
    const hid_t p = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(p, 2, chunk);
    const hid_t d = H5Dcreate2(f, "/layers/dense/vars/0", H5T_IEEE_F32LE, s, H5P_DEFAULT, p, H5P_DEFAULT);
    H5Dclose(d), H5Pclose(p), H5Sclose(s);
  });
  expect_refused<io::FormatError>(*model, [&] { io::load_weights(*model, bomb.string()); },
                                  {"kernel", "holding its data", "0 bytes stored"});

  const auto huge = keras3_weights("huge.weights.h5", [](hid_t f) {
    H5Ldelete(f, "/layers/dense/vars/0", H5P_DEFAULT);
    const hsize_t dims[2] = {hsize_t{1} << 20, hsize_t{1} << 20}, chunk[2] = {1, 1024};
    const hid_t s = H5Screate_simple(2, dims, nullptr);
    const hid_t p = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(p, 2, chunk);
    const hid_t d = H5Dcreate2(f, "/layers/dense/vars/0", H5T_IEEE_F32LE, s, H5P_DEFAULT, p, H5P_DEFAULT);
    H5Dclose(d), H5Pclose(p), H5Sclose(s);
  });
  expect_refused<io::FormatError>(*model, [&] { io::load_weights(*model, huge.string()); }, {"kernel", "under 4 GiB"});
}

TEST(KerasBadFiles, UnsupportedLayerIsRefusedByName) {
  // A Keras 3 Conv2D model with its class renamed Conv3D (tests/fixtures/make_unsupported_file.py).
  for (const std::string name : {"unsupported_conv3d.keras"}) {
    SCOPED_TRACE(name);
    try {
      io::load_model(model_path(name));
      ADD_FAILURE() << "loaded";
    } catch (const io::FormatError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("'conv' (Conv3D)"), std::string::npos) << what;
      EXPECT_NE(what.find("Dense, BatchNormalization"), std::string::npos) << what;
      std::printf("[ refused ] %s\n", what.c_str());
    }
  }
}

TEST(KerasBadFiles, WeightsFileGivenAsModelSaysWhatToDo) {
  for (const std::string name : {"mlp.legacy_weights.h5", "mlp.weights.h5"}) {
    try {
      io::load_model(model_path(name));
      ADD_FAILURE() << "loaded " << name;
    } catch (const io::FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("load_weights"), std::string::npos) << e.what();
    }
  }
}

// A .keras archive whose config.json is replaced by `config`.
fs::path archive_with_config(const std::string& name, const std::string& config) {
  const fs::path out = temp(name);
  fs::copy_file(model_path("mlp.keras"), out, fs::copy_options::overwrite_existing);
  int error = 0;
  zip_t* za = zip_open(out.c_str(), 0, &error);
  EXPECT_NE(za, nullptr);
  zip_source_t* src = zip_source_buffer(za, config.data(), config.size(), 0);
  zip_file_add(za, "config.json", src, ZIP_FL_OVERWRITE);
  EXPECT_EQ(zip_close(za), 0);
  return out;
}

// The FormatError that loading `file` raises; a test failure, and nothing, when it loads.
std::optional<io::FormatError> format_error_of(const fs::path& file) {
  try {
    io::load_model(file.string());
  } catch (const io::FormatError& e) {
    return e;
  }
  ADD_FAILURE() << file << " loaded";
  return std::nullopt;
}

TEST(KerasBadFiles, BrokenConfigurations) {
  const struct {
    std::string name, config, word;
  } cases[] = {
      {"not_json.keras", "{\"class_name\": \"Sequential\", ", "valid JSON"},
      {"no_class.keras", "[1, 2, 3]", "class_name"},
      {"subclassed.keras", R"({"class_name": "MyModel", "config": {}})", "MyModel"},
      {"no_input.keras", R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"units": 3}}]}})",
       "input shape"},
      {"bad_units.keras",
       R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_shape": [null, 10]}},
          {"class_name": "Dense", "config": {"name": "d", "units": "many"}}]}})",
       "units"},
      {"bf16.keras",
       R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_shape": [null, 10]}},
          {"class_name": "Dense", "config": {"name": "d", "units": 3, "dtype": "bfloat16"}}]}})",
       "float32"},
      {"adjustment.keras",
       R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_shape": [null, 10]}},
          {"class_name": "BatchNormalization", "config": {"name": "b", "adjustment": "my_adjustment"}}]}})",
       "\"adjustment\""},
      {"renorm_clipping_key.keras",
       R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_shape": [null, 10]}},
          {"class_name": "BatchNormalization", "config": {"name": "b", "renorm": true, "renorm_clipping": {"rmax": 2, "r_max": 3}}}]}})",
       "r_max"},
      {"renorm_clipping_order.keras",
       R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_shape": [null, 10]}},
          {"class_name": "BatchNormalization", "config": {"name": "b", "renorm": true, "renorm_clipping": {"rmax": 1, "rmin": 2}}}]}})",
       "rmax >= rmin"},
      {"ghost.keras",
       R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_shape": [null, 10]}},
          {"class_name": "BatchNormalization", "config": {"name": "b", "virtual_batch_size": 2}}]}})",
       "virtual_batch_size"},
      {"renorm_fused.keras",
       R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_shape": [null, 10]}},
          {"class_name": "BatchNormalization", "config": {"name": "b", "renorm": true, "fused": true}}]}})",
       "fused"},
      {"huge_dense.keras",
       R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_shape": [null, 100000]}},
          {"class_name": "Dense", "config": {"name": "d", "units": 100000}}]}})",
       "at most 2^28 values"},
      {"huge_input.keras",
       R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_shape": [null, 100000, 100000]}},
          {"class_name": "Flatten", "config": {"name": "f"}}]}})",
       "2^31 values per example"},
      {"two_inputs.keras",
       R"({"class_name": "Functional", "config": {"layers": [], "input_layers": [["a", 0, 0], ["b", 0, 0]], "output_layers": ["c", 0, 0]}})",
       "one input"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto e = format_error_of(archive_with_config(c.name, c.config));
    if (!e) continue;
    EXPECT_NE(std::string(e->what()).find(c.word), std::string::npos) << e->what();
    EXPECT_NE(std::string(e->what()).find(c.name), std::string::npos) << e->what();
  }
}

// Graphs whose calls cannot be resolved (a merge reading a layer that does not exist, a
// cycle) are refused naming the layer, in both config styles, never with the raw JSON of
// the inbound nodes; a name from the file reaches the message escaped.
TEST(KerasBadFiles, UnresolvableGraphsAreRefusedByName) {
  const auto tensor = [](const std::string& from) {
    return R"({"class_name": "__keras_tensor__", "config": {"shape": [null, 4], "dtype": "float32", "keras_history": [")" +
           from + R"(", 0, 0]}})";
  };
  const auto functional = [](const std::string& merge) {
    return R"({"class_name": "Functional", "config": {"name": "f", "layers": [
        {"class_name": "InputLayer", "name": "in", "config": {"batch_shape": [null, 4], "name": "in"}, "inbound_nodes": []},
        {"class_name": "Dense", "name": "d", "config": {"name": "d", "units": 4}, "inbound_nodes": [{"args": [)" +
           std::string(R"({"class_name": "__keras_tensor__", "config": {"keras_history": ["in", 0, 0]}})") + R"(], "kwargs": {}}]},
        )" + merge + R"(],
      "input_layers": ["in", 0, 0], "output_layers": ["m", 0, 0]}})";
  };
  const struct {
    std::string name, config, label;
  } cases[] = {
      {"add.keras",
       functional(R"({"class_name": "Add", "name": "m", "config": {"name": "m"}, "inbound_nodes": [{"args": [[)" + tensor("d") +
                  ", " + tensor("gone") + R"(]], "kwargs": {}}]})"),
       "Functional config: expected a layer named 'gone', received none"},
      {"cycle.keras",
       functional(R"({"class_name": "Concatenate", "name": "m", "config": {"name": "m", "axis": -1}, "inbound_nodes": [{"args": [[)" +
                  tensor("d") + ", " + tensor("m") + R"(]], "kwargs": {}}]})"),
       "Functional config: expected calls whose inputs the graph computes (no cycle, no missing layer), received layer 'm' (Concatenate) call 0 unresolved"},
      {"legacy_add.keras",
       functional(R"({"class_name": "Add", "name": "m", "config": {"name": "m"}, "inbound_nodes": [[["d", 0, 0, {}], ["gone", 0, 0, {}]]]})"),
       "Functional config: expected a layer named 'gone', received none"},
      {"escaped_name.keras",
       functional(R"({"class_name": "Add", "name": "m", "config": {"name": "m"}, "inbound_nodes": [[["d", 0, 0, {}], ["x\u001b[2J", 0, 0, {}]]]})"),
       "Functional config: expected a layer named 'x\\x1b[2J', received none"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const fs::path file = archive_with_config(c.name, c.config);
    const auto e = format_error_of(file);
    if (!e) continue;
    const std::string what = e->what();
    EXPECT_EQ(e->where(), file.string());
    EXPECT_EQ(what, file.string() + ": " + c.label);
    EXPECT_EQ(what.find("keras_history"), std::string::npos) << what;
  }
}

TEST(KerasFiles, SaveRefusesUnknownSuffixesAndUnbuiltModels) {
  auto model = mlp();
  EXPECT_THROW(io::save_model(*model, temp("m.txt").string()), bnorm::ArgumentError);
  EXPECT_THROW(io::save_model(*model, temp("m.weights.h5").string()), bnorm::ArgumentError);
  EXPECT_THROW(io::save_weights(*model, temp("m.bin").string()), bnorm::ArgumentError);
  nn::reset_unique_names();
  nn::Sequential lazy({std::make_shared<nn::Dense>(3)});
  EXPECT_THROW(io::save_model(lazy, temp("lazy.keras").string()), bnorm::ArgumentError);
  EXPECT_THROW(io::load_weights(lazy, model_path("mlp.weights.h5")), bnorm::ArgumentError);
}

// A failed save leaves the old file: the target folder does not exist -> FileError, and
// an existing file is replaced only whole.
TEST(KerasFiles, FailedSaveLeavesNoPartialFile) {
  auto model = mlp();
  EXPECT_THROW(io::save_model(*model, (temp("no_such_dir") / "x" / "m.keras").string()), io::FileError);
  const fs::path target = temp("kept.keras");
  io::save_model(*model, target.string());
  const std::string before = read_file(target.string());
  EXPECT_THROW(io::save_model(*model, target.string() + "/inside.keras"), io::FileError);
  EXPECT_EQ(read_file(target.string()), before);
}

// Weights round trip through each writable format restores every variable to the bit,
// the frozen flag of a layer included (model files).
TEST(KerasFiles, RoundTripEveryFormatExactly) {
  auto model = mlp();
  model->get_layer("bn")->set_trainable(false);
  int k = 0;
  for (nn::Variable* v : model->weights())
    for (std::int64_t i = 0; i < v->value.numel(); ++i) v->value[i] = 0.001f * static_cast<float>(++k) + 1e-9f * static_cast<float>(i);
  const auto want = model->get_weights();
  for (const std::string suffix : {".keras", ".h5"}) {
    const fs::path file = temp("rt" + suffix);
    io::save_model(*model, file.string());
    auto back = io::load_model(file.string());
    const auto got = back->get_weights();
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(std::memcmp(got[i].data(), want[i].data(), want[i].numel() * 4u), 0);
    EXPECT_FALSE(back->get_layer("bn")->trainable()) << suffix;
  }
  for (const std::string suffix : {".weights.h5", ".h5", ".bnc"}) {
    const fs::path file = temp("rtw" + suffix);
    io::save_weights(*model, file.string());
    auto other = mlp();
    io::load_weights(*other, file.string());
    const auto got = other->get_weights();
    for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(std::memcmp(got[i].data(), want[i].data(), want[i].numel() * 4u), 0);
  }
}

}  // namespace
