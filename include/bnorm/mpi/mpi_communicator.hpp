// bnorm/mpi/mpi_communicator.hpp: the Communicator (bnorm/nn/communicator.hpp) over MPI,
// in its own library target bnorm::mpi (Debian: libopenmpi-dev, openmpi-bin); nothing
// else in bnorm links MPI. docs/distributed.md says how to run it.
//
//   bnorm::mpi::Environment env(&argc, &argv);        // MPI_Init_thread ... MPI_Finalize
//   auto comm = std::make_shared<bnorm::mpi::MpiCommunicator>();
//   model.fit(x, y, {.batch_size = 64, .communicator = comm});
//
// Fault handling: the communicator works on its own duplicate of MPI_COMM_WORLD with
// MPI_ERRORS_RETURN, and every operation is a nonblocking collective polled with
// MPI_Test against a deadline (Options::timeout, or the environment variable
// BNORM_MPI_TIMEOUT in seconds). An MPI error or a peer that does not join in time throws
// CommunicationError naming the operation, the rank and the wait; the communicator is
// then marked failed and every later call throws at once. A process that sees it should
// end the job (abort_job(): MPI_Abort, which stops every rank); bnorm's CLI does. A peer
// that dies is usually reported by mpiexec itself, which then ends the other ranks.
#pragma once

#include <chrono>
#include <string>

#include "bnorm/nn/communicator.hpp"

namespace bnorm::mpi {

// True when this process was started by an MPI launcher (mpiexec / mpirun / srun:
// OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK set), whether or not MPI is initialized.
bool launched_by_mpi();

// Owns MPI's initialization: MPI_Init_thread (MPI_THREAD_FUNNELED) unless MPI is already
// initialized, and MPI_Finalize at destruction when it initialized MPI, unless a
// communicator failed (finalizing would wait for the missing peers). One at a time.
class Environment {
 public:
  Environment(int* argc, char*** argv);
  ~Environment();
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;

 private:
  bool owns_ = false;
};

// Ends every process of the job (MPI_Abort on MPI_COMM_WORLD) with `code`. For programs
// (the CLI's main) after a CommunicationError; the library itself never calls it.
[[noreturn]] void abort_job(int code);

class MpiCommunicator final : public nn::Communicator {
 public:
  struct Options {
    // How long one collective may wait for the other ranks. Zero: the environment
    // variable BNORM_MPI_TIMEOUT (seconds) when set, else 300 s.
    std::chrono::milliseconds timeout{0};
  };
  // Over all processes of MPI_COMM_WORLD (duplicated). StateError when MPI is not
  // initialized (create an Environment first).
  MpiCommunicator();
  explicit MpiCommunicator(Options options);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  std::string describe() const override;
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }
  // True once an operation failed (every later operation throws CommunicationError).
  bool failed() const noexcept { return failed_; }

  void all_reduce_sum(std::span<double> values) override;
  void all_reduce_sum(std::span<float> values) override;
  void all_gather(std::span<const double> mine, std::span<double> all) override;
  void broadcast(std::span<float> values, int root) override;
  void broadcast(std::span<std::byte> bytes, int root) override;
  void barrier() override;

 private:
  // all_reduce_sum of float or double values (defined and used in mpi_communicator.cpp).
  template <typename T>
  void sum_by_blocks(std::span<T> values);

  struct Impl;
  Impl* impl_ = nullptr;  // MPI handles, kept out of this header (no <mpi.h> for users)
  int rank_ = 0, size_ = 1;
  std::chrono::milliseconds timeout_{0};
  bool failed_ = false;
};

}  // namespace bnorm::mpi
