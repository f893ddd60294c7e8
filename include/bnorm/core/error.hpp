// bnorm/core/error.hpp: the typed exceptions every bnorm call throws.
//
// Contract: library code never aborts or exits. Invalid input raises one of the types
// below, with a message that names the argument, what was expected and what was
// received, e.g.
//   "BatchNormalization 'bn': axis: expected an axis in [-2, 1] for an input of rank 2,
//    received 3"
// A call that throws leaves every layer's state (weights, moving statistics, counters)
// exactly as it was before the call.
#pragma once

#include <stdexcept>
#include <string>

namespace bnorm {

// Base of every bnorm exception. `where` is the object or function that rejected the
// call ("BatchNormalization 'bn'", "moments"), or for the file readers the file
// ("x.csv"); `argument` the argument at fault, or the place in the file ("line 2,
// column 3"). what() is "where: argument: expected E, received R", an empty `where` or
// `argument` left out. Values taken from files or users are rendered with
// core/text.hpp's printable() / printable_quoted(), so that a message stays one line of text.
class Error : public std::runtime_error {
 public:
  Error(std::string where, std::string argument, std::string expected, std::string received);

  const std::string& where() const noexcept { return where_; }
  const std::string& argument() const noexcept { return argument_; }
  const std::string& expected() const noexcept { return expected_; }
  const std::string& received() const noexcept { return received_; }

 private:
  std::string where_, argument_, expected_, received_;
};

// An argument value outside its domain: momentum outside [0, 1], epsilon <= 0, an axis
// out of range or repeated, an unknown initializer name. (Keras/PyTorch: ValueError.)
class ArgumentError : public Error {
 public:
  using Error::Error;
};

// A tensor whose shape does not fit: wrong rank, wrong channel count after build,
// parameter length different from the channel count. (Keras: ValueError; PyTorch:
// ValueError/RuntimeError.)
class ShapeError : public ArgumentError {
 public:
  using ArgumentError::ArgumentError;
};

// Batch statistics that are not finite (NaN or infinite input in training). Raised
// before any state is touched.
class NumericalError : public Error {
 public:
  using Error::Error;
};

// A call that is valid in general but not in the object's current state: weights set
// or gradients asked of a layer that was never built or called.
class StateError : public Error {
 public:
  using Error::Error;
};

// A collective operation between the processes of a distributed run (bnorm/nn/
// communicator.hpp) that failed: a peer process died, or did not take part within the
// communicator's deadline. The processes' replicas may then disagree: the run cannot go
// on. (PyTorch: torch.distributed's DistBackendError; TensorFlow: UnavailableError.)
class CommunicationError : public Error {
 public:
  using Error::Error;
};

}  // namespace bnorm
