// bnorm/nn/communicator.hpp: the collective operations a distributed run needs
// (synchronized batch normalization, data-parallel fit), independent of the transport.
//
// A Communicator joins `size()` processes (ranks 0 .. size-1) that call the SAME
// operations in the SAME order with buffers of the same sizes (a collective: every rank
// must take part, or none finishes). bnorm's own implementations:
//   LocalCommunicator   one process (size 1): every operation is the identity. Here.
//   MpiCommunicator     MPI processes (bnorm/mpi/mpi_communicator.hpp, the separate
//                       library target bnorm::mpi; nothing else links MPI).
//
// Determinism: every rank receives bitwise identical results. all_reduce_sum combines the
// ranks' contributions so that each rank's result has the same bits (MpiCommunicator: see
// its all_reduce_sum), and all_gather gives every rank the same rank-ordered buffer, so a
// caller that merges in rank order (synchronized batch normalization: Chan's merge of
// ChannelMoments) gets the same bits on every rank.
//
// Faults: an implementation throws CommunicationError (bnorm/core/error.hpp) when a peer
// process fails or does not join an operation within its deadline, never hangs. After
// that error the communicator is unusable (the ranks' state may disagree).
//
// Preconditions (checked, ArgumentError naming the argument): root in [0, size);
// all_gather's `all` holds size() * mine.size() values. Buffer sizes that differ between
// ranks are the caller's error (MPI may detect it as a CommunicationError, or not).
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>

namespace bnorm::nn {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const noexcept = 0;
  virtual int size() const noexcept = 0;
  // A short description for messages and logs ("local", "MPI rank 1 of 3").
  virtual std::string describe() const = 0;

  // values <- the elementwise sum of every rank's values (in place, same bits everywhere).
  virtual void all_reduce_sum(std::span<double> values) = 0;
  virtual void all_reduce_sum(std::span<float> values) = 0;
  // all[r * mine.size() + i] <- rank r's mine[i]  (ASSIGNED, size() * mine.size() values).
  virtual void all_gather(std::span<const double> mine, std::span<double> all) = 0;
  // values <- root's values on every rank.
  virtual void broadcast(std::span<float> values, int root) = 0;
  virtual void broadcast(std::span<std::byte> bytes, int root) = 0;
  // Returns when every rank has called it.
  virtual void barrier() = 0;
};

// One process: rank 0 of 1. Sums, gathers and broadcasts leave the buffers as they are
// (all_gather copies mine into all).
class LocalCommunicator final : public Communicator {
 public:
  int rank() const noexcept override { return 0; }
  int size() const noexcept override { return 1; }
  std::string describe() const override { return "local"; }
  void all_reduce_sum(std::span<double>) override {}
  void all_reduce_sum(std::span<float>) override {}
  void all_gather(std::span<const double> mine, std::span<double> all) override;
  void broadcast(std::span<float> values, int root) override;
  void broadcast(std::span<std::byte> bytes, int root) override;
  void barrier() override {}
};

// Validation shared by the implementations (ArgumentError with `where`).
void check_root(const Communicator& comm, int root, const std::string& where);
void check_gather_sizes(const Communicator& comm, std::size_t mine, std::size_t all,
                        const std::string& where);

}  // namespace bnorm::nn
