// bnorm._bnorm: the Python module over bnorm's core (docs/python.md). python/bnorm/
// re-exports it; python/bnorm/errors.py defines the exception classes raised here.
//
// Arrays. The kernels work on the caller's NumPy buffers without copying: float32,
// C-contiguous, native byte order; anything else is refused with TypeError (not an
// ndarray, another dtype) or ValueError (not C-contiguous, read-only output) naming the
// argument, never converted silently. A channel axis `axis` of a C-contiguous array of
// shape d is the kernels' (N, C, S) view with N = prod d[:axis], C = d[axis],
// S = prod d[axis+1:]. The GIL is released while a kernel runs.
// Layers and models own their tensors (bnorm::Tensor), so their inputs are converted
// (a copy; any dtype NumPy can cast to float32) and their outputs handed to NumPy
// without a further copy.
//
// Errors. bnorm::Error and its subclasses become bnorm.Error subclasses (errors.py) with
// the C++ message; the translator below keeps the most specific type.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/core/tensor.hpp"
#include "bnorm/io/error.hpp"
#include "bnorm/io/model_file.hpp"
#include "bnorm/kernels/batch_norm.hpp"
#include "bnorm/nn/batch_normalization.hpp"
#include "bnorm/nn/initializers.hpp"
#include "bnorm/nn/inspect.hpp"
#include "bnorm/nn/layer.hpp"
#include "bnorm/nn/model.hpp"
#include "bnorm/nn/recalibrate.hpp"
#include "bnorm/nn/torch_batch_norm.hpp"

#ifndef BNORM_VERSION
#error "BNORM_VERSION must be defined (python/CMakeLists.txt passes PROJECT_VERSION)"
#endif

namespace py = pybind11;
using namespace bnorm;

namespace {

using FloatArray = py::array_t<float, py::array::c_style>;

// ---- NumPy <-> bnorm ----------------------------------------------------------------

std::string dtype_text(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// The caller's buffer as a float32 C-contiguous array, without copying; TypeError or
// ValueError naming `where` and `name` otherwise.
FloatArray borrow_float32(py::handle obj, const std::string& where, const std::string& name, bool writable = false) {
  const std::string prefix = where + ": " + name + ": ";
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(prefix + "expected a float32 NumPy array, received an object of type " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  }
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!(a.dtype().kind() == 'f' && a.dtype().itemsize() == 4 && a.dtype().attr("isnative").cast<bool>())) {
    throw py::type_error(prefix + "expected a float32 NumPy array, received dtype " + dtype_text(a) +
                         " (bnorm's kernels do not copy: convert with x.astype(numpy.float32))");
  }
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(prefix + "expected a C-contiguous array, received a non-contiguous one of shape " +
                          py::str(py::tuple(a.attr("shape"))).cast<std::string>() +
                          " (bnorm's kernels do not copy: use numpy.ascontiguousarray)");
  }
  if (writable && !a.writeable()) throw py::value_error(prefix + "expected a writable array, received a read-only one");
  return py::reinterpret_borrow<FloatArray>(a);
}

Shape shape_of(const py::array& a) {
  std::vector<std::int64_t> dims(static_cast<std::size_t>(a.ndim()));
  for (py::ssize_t i = 0; i < a.ndim(); ++i) dims[static_cast<std::size_t>(i)] = a.shape(i);
  return Shape(std::move(dims));
}

std::string shape_text(const Shape& s) { return s.str(); }

// Layers and models take tensors they own: a converted copy.
Tensor tensor_from(py::handle obj) {
  auto a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(obj);
  if (!a) {  // ensure() clears NumPy's error
    throw py::type_error("expected an array of numbers convertible to float32, received an object of type " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  }
  const Shape shape = shape_of(a);
  const float* p = a.data();
  return Tensor(shape, std::vector<float>(p, p + a.size()));
}

// Hands a tensor to NumPy without copying its data: the array owns the moved tensor.
py::array to_numpy(Tensor t) {
  auto* owned = new Tensor(std::move(t));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<Tensor*>(p); });
  std::vector<py::ssize_t> shape(owned->shape().dims().begin(), owned->shape().dims().end());
  return FloatArray(shape, owned->data(), free_when_done);
}

py::object to_numpy_or_none(const Tensor* t) { return t ? py::object(to_numpy(*t)) : py::none(); }
py::object to_numpy_or_none(const nn::Variable* v) { return v ? py::object(to_numpy(v->value)) : py::none(); }

// Assigns `value` to a parameter or buffer of the same shape (ShapeError otherwise).
void assign(Tensor& target, py::handle value, const std::string& where, const std::string& name) {
  Tensor t = tensor_from(value);
  if (t.shape() != target.shape()) {
    throw ShapeError(where, name, "an array of shape " + shape_text(target.shape()),
                     "shape " + shape_text(t.shape()));
  }
  target = std::move(t);
}

// How the C++ library names a layer in its messages ("BatchNormalization 'bn'").
std::string where_of(const nn::Layer& l) { return l.class_name() + " '" + l.name() + "'"; }

// A Keras initializer argument: a name ("zeros", "ones", ...) or a number (constant).
nn::Initializer initializer_from(py::handle v) {
  if (py::isinstance<py::str>(v)) return nn::Initializer::from_name(v.cast<std::string>());
  return nn::Initializer::constant(v.cast<float>());
}

// ---- kernels -------------------------------------------------------------------------

kernels::BatchNormDims dims_for(const py::array& x, int axis, const std::string& where) {
  const int rank = static_cast<int>(x.ndim());
  if (axis < -rank || axis >= rank) {
    throw ArgumentError(where, "axis",
                        "an axis in [" + std::to_string(-rank) + ", " + std::to_string(rank - 1) +
                            "] for an input of rank " + std::to_string(rank),
                        std::to_string(axis));
  }
  if (axis < 0) axis += rank;
  kernels::BatchNormDims d{.N = 1, .C = x.shape(axis), .S = 1};
  for (int i = 0; i < axis; ++i) d.N *= x.shape(i);
  for (int i = axis + 1; i < rank; ++i) d.S *= x.shape(i);
  return d;
}

// A per-channel argument: None, or a float32 C-contiguous array of C elements.
const float* channel_vector(py::handle obj, std::int64_t C, const std::string& where, const std::string& name,
                            std::optional<FloatArray>& keep) {
  if (obj.is_none()) return nullptr;
  keep = borrow_float32(obj, where, name);
  if (keep->ndim() != 1 || keep->shape(0) != C) {
    throw ShapeError(where, name, "an array of shape (" + std::to_string(C) + ",), one value per channel",
                     "shape " + shape_text(shape_of(*keep)));
  }
  return keep->data();
}

void check_epsilon(double epsilon, const std::string& where) {
  if (!(epsilon > 0.0) || !std::isfinite(epsilon)) {
    throw ArgumentError(where, "epsilon", "a finite value > 0", py::str(py::float_(epsilon)).cast<std::string>());
  }
}

// y: `out` when given (same shape, may be x itself), else a new array.
FloatArray output_for(const FloatArray& x, py::handle out, const std::string& where) {
  if (out.is_none()) {
    std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
    return FloatArray(shape);
  }
  FloatArray y = borrow_float32(out, where, "out", /*writable=*/true);
  if (shape_of(y) != shape_of(x)) {
    throw ShapeError(where, "out", "an array of x's shape " + shape_text(shape_of(x)),
                     "shape " + shape_text(shape_of(y)));
  }
  return y;
}

py::tuple forward_training(py::handle x_obj, py::handle gamma_obj, py::handle beta_obj, double epsilon, int axis,
                           py::handle out) {
  const std::string where = "batch_norm_forward_training";
  FloatArray x = borrow_float32(x_obj, where, "x");
  const auto d = dims_for(x, axis, where);
  check_epsilon(epsilon, where);
  std::optional<FloatArray> gamma_keep, beta_keep;
  const float* gamma = channel_vector(gamma_obj, d.C, where, "gamma", gamma_keep);
  const float* beta = channel_vector(beta_obj, d.C, where, "beta", beta_keep);
  FloatArray y = output_for(x, out, where);
  FloatArray mean(d.C), var(d.C);
  std::vector<float> invstd(static_cast<std::size_t>(d.C));
  {
    const float* xp = x.data();
    float* yp = y.mutable_data();
    float* mp = mean.mutable_data();
    float* vp = var.mutable_data();
    py::gil_scoped_release release;
    kernels::forward_training(xp, d, gamma, beta, static_cast<float>(epsilon), yp, mp, vp, invstd.data());
  }
  return py::make_tuple(y, mean, var);
}

FloatArray forward_inference(py::handle x_obj, py::handle mean_obj, py::handle var_obj, py::handle gamma_obj,
                             py::handle beta_obj, double epsilon, int axis, py::handle out) {
  const std::string where = "batch_norm_forward_inference";
  FloatArray x = borrow_float32(x_obj, where, "x");
  const auto d = dims_for(x, axis, where);
  check_epsilon(epsilon, where);
  std::optional<FloatArray> mean_keep, var_keep, gamma_keep, beta_keep;
  if (mean_obj.is_none()) throw py::type_error(where + ": mean: expected a float32 NumPy array, received None");
  if (var_obj.is_none()) throw py::type_error(where + ": var: expected a float32 NumPy array, received None");
  const float* mean = channel_vector(mean_obj, d.C, where, "mean", mean_keep);
  const float* var = channel_vector(var_obj, d.C, where, "var", var_keep);
  const float* gamma = channel_vector(gamma_obj, d.C, where, "gamma", gamma_keep);
  const float* beta = channel_vector(beta_obj, d.C, where, "beta", beta_keep);
  FloatArray y = output_for(x, out, where);
  {
    const float* xp = x.data();
    float* yp = y.mutable_data();
    py::gil_scoped_release release;
    kernels::forward_inference(xp, d, mean, var, gamma, beta, static_cast<float>(epsilon), yp);
  }
  return y;
}

// ---- inspect ---------------------------------------------------------------------------

py::object finite_or_none(double v) { return std::isfinite(v) ? py::object(py::float_(v)) : py::none(); }

py::dict summary_dict(const nn::ValueSummary& s) {
  py::dict d;
  d["count"] = s.count;
  d["non_finite"] = s.non_finite;
  d["min"] = finite_or_none(s.min);
  d["mean"] = finite_or_none(s.mean);
  d["max"] = finite_or_none(s.max);
  return d;
}

template <typename T>
py::object optional_value(const std::optional<T>& v) {
  return v ? py::cast(*v) : py::none();
}

// The same facts, under the same keys, as one entry of `bnorm inspect --json`'s
// "batch_normalization_layers" (apps/bnorm/inspect.cpp).
py::list inspection_list(const std::vector<nn::BatchNormInspection>& report) {
  py::list layers;
  for (const auto& r : report) {
    py::dict l;
    l["name"] = r.name;
    l["class_name"] = r.class_name;
    l["convention"] = nn::to_string(r.convention);
    l["axis"] = r.axis;
    l["built"] = r.built;
    l["channels"] = r.channels;
    l["momentum"] = optional_value(r.momentum);
    l["epsilon"] = r.epsilon;
    l["center"] = r.center;
    l["scale"] = r.scale;
    l["trainable"] = r.trainable;
    l["frozen"] = !r.trainable;
    l["updates"] = optional_value(r.updates);
    l["updates_source"] = nn::to_string(r.update_count);
    l["initial_weight"] = optional_value(r.initial_weight);
    l["at_initial_values"] = optional_value(r.at_initial_values);
    if (r.built) {
      l["moving_mean"] = summary_dict(r.moving_mean);
      l["moving_variance"] = summary_dict(r.moving_variance);
      if (r.gamma) l["gamma"] = summary_dict(*r.gamma);
      if (r.beta) l["beta"] = summary_dict(*r.beta);
    }
    py::list warnings;
    for (const auto& w : r.warnings) {
      py::dict wd;
      wd["kind"] = nn::to_string(w.kind);
      wd["message"] = w.message;
      warnings.append(wd);
    }
    l["warnings"] = warnings;
    layers.append(l);
  }
  return layers;
}

py::list inspect_model(const nn::Model& model, std::optional<std::int64_t> file_iterations, double memory_threshold) {
  nn::InspectOptions options{.memory_threshold = memory_threshold};
  // As `bnorm inspect`: the optimizer's iteration count (training steps), each of which
  // updated every trainable batch-normalization layer once.
  if (model.compiled() && model.optimizer()->iterations() > 0) {
    options.training_steps = model.optimizer()->iterations();
  } else if (file_iterations && *file_iterations > 0) {
    options.training_steps = *file_iterations;
  }
  return inspection_list(nn::inspect_batch_norm(model, options));
}

// ---- errors ----------------------------------------------------------------------------

struct ErrorClasses {
  py::object error, argument, shape, numerical, state, file, format;
};
ErrorClasses& error_classes() {
  // Created once at import and never destroyed (no Python calls at process exit).
  static auto* classes = new ErrorClasses;
  return *classes;
}

void raise(const py::object& cls, const std::exception& e) { PyErr_SetString(cls.ptr(), e.what()); }

}  // namespace

PYBIND11_MODULE(_bnorm, m) {
  m.doc() = "bnorm's C++ core: batch-normalization kernels, layers and Keras file tools (docs/python.md)";
  m.attr("__version__") = BNORM_VERSION;

  auto errors = py::module_::import("bnorm.errors");
  auto& ec = error_classes();
  ec.error = errors.attr("Error");
  ec.argument = errors.attr("ArgumentError");
  ec.shape = errors.attr("ShapeError");
  ec.numerical = errors.attr("NumericalError");
  ec.state = errors.attr("StateError");
  ec.file = errors.attr("FileError");
  ec.format = errors.attr("FormatError");
  py::register_exception_translator([](std::exception_ptr p) {
    if (!p) return;
    auto& c = error_classes();
    try {
      std::rethrow_exception(p);
    } catch (const io::FileError& e) {
      raise(c.file, e);
    } catch (const io::FormatError& e) {
      raise(c.format, e);
    } catch (const ShapeError& e) {
      raise(c.shape, e);
    } catch (const ArgumentError& e) {
      raise(c.argument, e);
    } catch (const NumericalError& e) {
      raise(c.numerical, e);
    } catch (const StateError& e) {
      raise(c.state, e);
    } catch (const Error& e) {
      raise(c.error, e);
    }
  });

  // -- kernels
  m.def("batch_norm_forward_training", &forward_training, py::arg("x"), py::arg("gamma") = py::none(),
        py::arg("beta") = py::none(), py::arg("epsilon") = 1e-3, py::arg("axis") = -1, py::arg("out") = py::none(),
        R"doc(Batch normalization with the batch's statistics (kernels::forward_training).

y = (x - mean) / sqrt(var + epsilon) * gamma + beta, per channel of `axis`, with the
batch mean and the biased batch variance over every other axis. x (and gamma, beta, out)
must be float32 C-contiguous NumPy arrays: they are used without copying. out may be x.
Returns (y, mean, var); y is `out` when given.)doc");
  m.def("batch_norm_forward_inference", &forward_inference, py::arg("x"), py::arg("mean"), py::arg("var"),
        py::arg("gamma") = py::none(), py::arg("beta") = py::none(), py::arg("epsilon") = 1e-3,
        py::arg("axis") = -1, py::arg("out") = py::none(),
        R"doc(Batch normalization with given statistics (kernels::forward_inference).

y = (x - mean) / sqrt(var + epsilon) * gamma + beta per channel of `axis`. Arrays as for
batch_norm_forward_training (float32, C-contiguous, not copied). Returns y (`out` when given).)doc");

  // -- layers
  py::class_<nn::Layer, std::shared_ptr<nn::Layer>>(m, "Layer", "A layer of a model (Keras names).")
      .def_property_readonly("name", &nn::Layer::name)
      .def_property_readonly("class_name", &nn::Layer::class_name)
      .def_property("trainable", &nn::Layer::trainable, &nn::Layer::set_trainable)
      .def_property_readonly("built", &nn::Layer::built)
      .def(
          "build",
          [](nn::Layer& l, const std::vector<std::optional<std::int64_t>>& input_shape) {
            std::vector<std::int64_t> dims;
            for (const auto& d : input_shape) dims.push_back(d.value_or(-1));
            l.build(Shape(std::move(dims)));
          },
          py::arg("input_shape"), "Keras build(input_shape): None for unknown dimensions (the batch).")
      .def("get_weights",
           [](const nn::Layer& l) {
             py::list out;
             for (auto& t : l.get_weights()) out.append(to_numpy(std::move(t)));
             return out;
           })
      .def("set_weights",
           [](nn::Layer& l, const py::list& weights) {
             std::vector<Tensor> ts;
             for (auto w : weights) ts.push_back(tensor_from(w));
             l.set_weights(ts);
           })
      .def("__repr__", [](const nn::Layer& l) { return "<bnorm." + l.class_name() + " '" + l.name() + "'>"; });

  py::class_<nn::BatchNormalization, nn::Layer, std::shared_ptr<nn::BatchNormalization>>(
      m, "BatchNormalization",
      "Keras's BatchNormalization (Keras convention: momentum is the weight of the OLD moving value).")
      .def(py::init([](double momentum, double epsilon, py::object axis, bool center, bool scale, bool trainable,
                       std::optional<std::string> name, const std::string& version, std::optional<bool> fused,
                       py::handle beta_initializer, py::handle gamma_initializer,
                       py::handle moving_mean_initializer, py::handle moving_variance_initializer) {
             nn::BatchNormalizationOptions o;
             if (py::isinstance<py::int_>(axis)) {
               o.axis = {axis.cast<int>()};
             } else {
               o.axis = axis.cast<std::vector<int>>();
             }
             o.momentum = momentum;
             o.epsilon = epsilon;
             o.center = center;
             o.scale = scale;
             o.trainable = trainable;
             if (name) o.name = *name;
             if (version == "keras3") {
               o.version = nn::KerasVersion::keras3;
             } else if (version == "keras2") {
               o.version = nn::KerasVersion::keras2;
             } else {
               throw ArgumentError("BatchNormalization", "version", "'keras3' or 'keras2'", "'" + version + "'");
             }
             o.fused = !fused ? nn::Fused::automatic : *fused ? nn::Fused::yes : nn::Fused::no;
             o.beta_initializer = initializer_from(beta_initializer);
             o.gamma_initializer = initializer_from(gamma_initializer);
             o.moving_mean_initializer = initializer_from(moving_mean_initializer);
             o.moving_variance_initializer = initializer_from(moving_variance_initializer);
             return std::make_shared<nn::BatchNormalization>(o);
           }),
           py::arg("momentum") = 0.99, py::arg("epsilon") = 1e-3, py::arg("axis") = -1, py::arg("center") = true,
           py::arg("scale") = true, py::arg("trainable") = true, py::arg("name") = py::none(),
           py::arg("version") = "keras3", py::arg("fused") = py::none(), py::arg("beta_initializer") = "zeros",
           py::arg("gamma_initializer") = "ones", py::arg("moving_mean_initializer") = "zeros",
           py::arg("moving_variance_initializer") = "ones")
      .def(
          "__call__",
          [](nn::BatchNormalization& l, py::handle x, std::optional<bool> training) {
            return to_numpy(l.call(tensor_from(x), training));
          },
          py::arg("x"), py::arg("training") = py::none(),
          "layer(x, training=None): training=None or False is inference (moving statistics); "
          "True normalizes with the batch's and updates them (when trainable).")
      .def_property_readonly("momentum", [](const nn::BatchNormalization& l) { return l.options().momentum; })
      .def_property_readonly("epsilon", [](const nn::BatchNormalization& l) { return l.options().epsilon; })
      .def_property_readonly("axis", [](const nn::BatchNormalization& l) { return l.options().axis; })
      .def_property_readonly("center", [](const nn::BatchNormalization& l) { return l.options().center; })
      .def_property_readonly("scale", [](const nn::BatchNormalization& l) { return l.options().scale; })
// A variable as a NumPy copy (None before build or when absent); assigning one of the same
// shape sets it (StateError before build or when absent, ShapeError for another shape).
#define BNORM_KERAS_VARIABLE(NAME)                                                                              \
  def_property(                                                                                                 \
      #NAME, [](const nn::BatchNormalization& l) { return to_numpy_or_none(l.NAME()); },                        \
      [](nn::BatchNormalization& l, py::handle v) {                                                             \
        nn::Variable* var = l.NAME();                                                                           \
        if (!var) {                                                                                             \
          throw StateError(where_of(l), #NAME, "a built layer that has " #NAME,                                 \
                           l.built() ? "a layer without it (center/scale off)" : "a layer not built yet");      \
        }                                                                                                       \
        assign(var->value, v, where_of(l), #NAME);                                                              \
      })
      .BNORM_KERAS_VARIABLE(gamma)
      .BNORM_KERAS_VARIABLE(beta)
      .BNORM_KERAS_VARIABLE(moving_mean)
      .BNORM_KERAS_VARIABLE(moving_variance);
#undef BNORM_KERAS_VARIABLE

  py::class_<nn::TorchBatchNorm>(m, "TorchBatchNorm",
                                 "PyTorch's BatchNorm1d/2d/3d (PyTorch convention: momentum is the weight of the "
                                 "NEW batch; None is a cumulative average). Made by BatchNorm1d/2d/3d.")
      .def("__call__", [](nn::TorchBatchNorm& b, py::handle x) { return to_numpy(b(tensor_from(x))); }, py::arg("x"))
      .def("forward", [](nn::TorchBatchNorm& b, py::handle x) { return to_numpy(b(tensor_from(x))); }, py::arg("x"))
      .def(
          "train", [](nn::TorchBatchNorm& b, bool mode) -> nn::TorchBatchNorm& {
            b.train(mode);
            return b;
          },
          py::arg("mode") = true, py::return_value_policy::reference_internal)
      .def(
          "eval", [](nn::TorchBatchNorm& b) -> nn::TorchBatchNorm& {
            b.eval();
            return b;
          },
          py::return_value_policy::reference_internal)
      .def_property_readonly("training", &nn::TorchBatchNorm::is_training)
      .def_property_readonly("num_features", &nn::TorchBatchNorm::num_features)
      .def_property_readonly("eps", &nn::TorchBatchNorm::eps)
      .def_property("momentum", &nn::TorchBatchNorm::momentum, &nn::TorchBatchNorm::set_momentum)
      .def_property_readonly("affine", &nn::TorchBatchNorm::affine)
      .def_property("track_running_stats", &nn::TorchBatchNorm::track_running_stats,
                    &nn::TorchBatchNorm::set_track_running_stats)
      .def_property("num_batches_tracked", &nn::TorchBatchNorm::num_batches_tracked,
                    &nn::TorchBatchNorm::set_num_batches_tracked)
      .def("reset_running_stats", &nn::TorchBatchNorm::reset_running_stats)
      .def("reset_parameters", &nn::TorchBatchNorm::reset_parameters)
#define BNORM_TORCH_TENSOR(NAME)                                                                                \
  def_property(                                                                                                 \
      #NAME, [](const nn::TorchBatchNorm& b) { return to_numpy_or_none(b.NAME()); },                            \
      [](nn::TorchBatchNorm& b, py::handle v) {                                                                 \
        Tensor* t = b.NAME();                                                                                   \
        if (!t) throw StateError("TorchBatchNorm", #NAME, "a module that has " #NAME, "none (absent)");         \
        assign(*t, v, "TorchBatchNorm", #NAME);                                                                 \
      })
      .BNORM_TORCH_TENSOR(weight)
      .BNORM_TORCH_TENSOR(bias)
      .BNORM_TORCH_TENSOR(running_mean)
      .BNORM_TORCH_TENSOR(running_var);
#undef BNORM_TORCH_TENSOR

  auto torch_factory = [&m](const char* name, nn::TorchBatchNorm::Rank rank) {
    m.def(
        name,
        [rank](std::int64_t num_features, double eps, std::optional<double> momentum, bool affine,
               bool track_running_stats) {
          if (num_features < 1) {
            throw ArgumentError("TorchBatchNorm", "num_features", "a channel count >= 1",
                                std::to_string(num_features));
          }
          return nn::TorchBatchNorm(rank, {.num_features = num_features,
                                           .eps = eps,
                                           .momentum = momentum,
                                           .affine = affine,
                                           .track_running_stats = track_running_stats});
        },
        py::arg("num_features"), py::arg("eps") = 1e-5, py::arg("momentum") = 0.1, py::arg("affine") = true,
        py::arg("track_running_stats") = true);
  };
  torch_factory("BatchNorm1d", nn::TorchBatchNorm::Rank::d1);
  torch_factory("BatchNorm2d", nn::TorchBatchNorm::Rank::d2);
  torch_factory("BatchNorm3d", nn::TorchBatchNorm::Rank::d3);

  // -- models and files
  py::class_<nn::Model, nn::Layer, std::shared_ptr<nn::Model>>(m, "Model", "A Keras model loaded from a file (load_model).")
      .def_property_readonly("name", &nn::Model::name)
      .def_property_readonly("layers", [](const nn::Model& model) { return model.layers(); })
      .def_property_readonly("layer_names",
                             [](const nn::Model& model) {
                               std::vector<std::string> names;
                               for (const auto& l : model.layers()) names.push_back(l->name());
                               return names;
                             })
      .def("get_layer", [](const nn::Model& model, const std::string& name) { return model.get_layer(name); })
      .def(
          "predict",
          [](nn::Model& model, py::handle x, std::int64_t batch_size) {
            return to_numpy(model.predict(tensor_from(x), batch_size));
          },
          py::arg("x"), py::arg("batch_size") = 32, "Keras predict: outputs in inference mode, in batches.")
      .def(
          "__call__",
          [](nn::Model& model, py::handle x, std::optional<bool> training) {
            return to_numpy(model(tensor_from(x), training));
          },
          py::arg("x"), py::arg("training") = py::none())
      .def("summary", &nn::Model::summary, "Keras summary(), as a string.")
      .def(
          "save", [](nn::Model& model, const std::string& path) { io::save_model(model, path); }, py::arg("path"),
          "Keras model.save: .keras or legacy .h5, from the suffix.")
      .def(
          "save_weights", [](nn::Model& model, const std::string& path) { io::save_weights(model, path); },
          py::arg("path"))
      .def(
          "load_weights", [](nn::Model& model, const std::string& path) { io::load_weights(model, path); },
          py::arg("path"));

  m.def(
      "load_model",
      [](const std::string& path, bool compile) {
        return std::shared_ptr<nn::Model>(io::load_model(path, {.compile = compile}));
      },
      py::arg("path"), py::arg("compile") = true,
      "keras.models.load_model: a .keras archive or a legacy tf.keras .h5 file.");

  m.def(
      "inspect",
      [](py::object model_or_path, double memory_threshold) {
        if (py::isinstance<nn::Model>(model_or_path)) {
          return inspect_model(model_or_path.cast<const nn::Model&>(), std::nullopt, memory_threshold);
        }
        const std::string path = py::str(model_or_path).cast<std::string>();
        const auto model = io::load_model(path);
        return inspect_model(*model, io::saved_optimizer_iterations(path), memory_threshold);
      },
      py::arg("model"), py::arg("memory_threshold") = 0.01,
      "The batch-normalization layers of a model (a path or a Model): one dict per layer, the "
      "facts and keys of `bnorm inspect --json`.");

  m.def(
      "recalibrate",
      [](nn::Model& model, py::handle x, std::int64_t batch_size, bool skip_frozen) {
        const auto report =
            nn::recalibrate(model, tensor_from(x), {.batch_size = batch_size, .skip_frozen = skip_frozen});
        py::list layers;
        for (const auto& l : report.layers) {
          py::dict d;
          d["name"] = l.name;
          d["index"] = l.index;
          d["recalibrated"] = l.recalibrated;
          d["variance"] = l.variance_kind == nn::StoredVariance::biased ? "biased" : "unbiased";
          d["old_mean"] = to_numpy(l.old_mean);
          d["old_variance"] = to_numpy(l.old_variance);
          d["new_mean"] = to_numpy(l.new_mean);
          d["new_variance"] = to_numpy(l.new_variance);
          layers.append(d);
        }
        return layers;
      },
      py::arg("model"), py::arg("x"), py::arg("batch_size") = 256, py::arg("skip_frozen") = false,
      "Replaces every batch-normalization layer's moving statistics by the population statistics "
      "of its input over x (docs/recalibration.md); returns one dict per layer.");
}
