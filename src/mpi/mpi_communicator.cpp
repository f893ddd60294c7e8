#include "bnorm/mpi/mpi_communicator.hpp"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "bnorm/core/error.hpp"

namespace bnorm::mpi {

namespace {

bool any_failed = false;  // some communicator of this process failed: do not finalize

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<std::size_t>(length));
}

int count_of(std::size_t n, const char* where) {
  if (n > static_cast<std::size_t>(INT_MAX)) {
    throw ArgumentError(where, "buffer", "at most " + std::to_string(INT_MAX) + " values", std::to_string(n));
  }
  return static_cast<int>(n);
}

}  // namespace

bool launched_by_mpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr ||
         std::getenv("PMIX_RANK") != nullptr;
}

Environment::Environment(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  int provided = 0;
  const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  if (rc != MPI_SUCCESS)
    throw CommunicationError("MPI", "MPI_Init_thread", "MPI_SUCCESS", mpi_error_text(rc));
  owns_ = true;
}

Environment::~Environment() {
  if (!owns_ || any_failed) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void abort_job(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this is for the compiler
}

struct MpiCommunicator::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
};

MpiCommunicator::MpiCommunicator() : MpiCommunicator(Options{}) {}

MpiCommunicator::MpiCommunicator(Options options) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    throw StateError("MpiCommunicator", "MPI", "MPI initialized (create a bnorm::mpi::Environment first)",
                     "MPI not initialized");
  }
  timeout_ = options.timeout;
  if (timeout_.count() <= 0) {
    timeout_ = std::chrono::milliseconds(300'000);
    if (const char* env = std::getenv("BNORM_MPI_TIMEOUT")) {
      char* end = nullptr;
      const double seconds = std::strtod(env, &end);
      if (end == env || *end != '\0' || !(seconds > 0) || seconds > 1e9) {
        throw ArgumentError("MpiCommunicator", "BNORM_MPI_TIMEOUT", "a positive number of seconds",
                            std::string("'") + env + "'");
      }
      timeout_ = std::chrono::milliseconds(static_cast<long long>(seconds * 1000.0));
    }
  }
  impl_ = new Impl;
  int rc = MPI_Comm_dup(MPI_COMM_WORLD, &impl_->comm);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler(impl_->comm, MPI_ERRORS_RETURN);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(impl_->comm, &rank_);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_size(impl_->comm, &size_);
  if (rc != MPI_SUCCESS) {
    delete impl_;
    impl_ = nullptr;
    throw CommunicationError("MpiCommunicator", "MPI_Comm_dup", "MPI_SUCCESS", mpi_error_text(rc));
  }
}

MpiCommunicator::~MpiCommunicator() {
  if (impl_ == nullptr) return;
  // A failed communicator may have collectives pending: freeing it could wait for them.
  if (!failed_ && impl_->comm != MPI_COMM_NULL) MPI_Comm_free(&impl_->comm);
  delete impl_;
}

std::string MpiCommunicator::describe() const {
  return "MPI rank " + std::to_string(rank_) + " of " + std::to_string(size_);
}

namespace {

// Polls a nonblocking collective until it completes or the deadline passes. MPI moves a
// collective on only inside MPI calls, so the first 2 ms poll back to back, the next 18 ms
// yield the core between polls (the ranks may share cores: mpiexec --oversubscribe); a
// longer wait
// (a peer still computing, or stalled) polls every 200 us.
void wait_for(MPI_Request& request, const char* operation, int rank, std::chrono::milliseconds timeout,
              bool& failed) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const auto deadline = start + timeout;
  const auto spin_until = start + std::chrono::milliseconds(2);
  const auto eager_until = start + std::chrono::milliseconds(20);
  for (long polls = 0;; ++polls) {
    int done = 0;
    const int rc = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      failed = any_failed = true;
      throw CommunicationError("MpiCommunicator rank " + std::to_string(rank), operation,
                               "every rank to take part", mpi_error_text(rc));
    }
    if (done) return;
    if (polls < 64) continue;
    const auto now = clock::now();
    if (now > deadline) {
      failed = any_failed = true;
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - start);
      throw CommunicationError(
          "MpiCommunicator rank " + std::to_string(rank), operation,
          "every rank to take part within the timeout of " + std::to_string(timeout.count()) +
              " ms (BNORM_MPI_TIMEOUT)",
          "no completion after " + std::to_string(waited.count()) + " ms: a peer process stalled or died");
    }
    if (now < spin_until) continue;
    if (now < eager_until) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
}

}  // namespace

#define BNORM_MPI_START(call, name)                                                                   \
  do {                                                                                                \
    if (failed_) {                                                                                    \
      throw CommunicationError(describe(), name, "a working communicator", "one that failed before"); \
    }                                                                                                 \
    const int rc_ = (call);                                                                           \
    if (rc_ != MPI_SUCCESS) {                                                                         \
      failed_ = any_failed = true;                                                                    \
      throw CommunicationError(describe(), name, "MPI_SUCCESS", mpi_error_text(rc_));                 \
    }                                                                                                 \
  } while (false)

// The elementwise sum of every rank's values, the same bits on every rank by
// construction: a reduce-scatter (each block of ceil(n / P) values is summed once, at the
// rank that owns it) then an all-gather of the summed blocks, both nonblocking against the
// deadline. MPI_Allreduce only recommends that every rank get the same result (Open MPI's
// algorithms do, but not by contract); this costs the traffic of a ring all-reduce. The
// values are written only once both collectives completed: a failed call leaves them as
// they were.
template <typename T>
void MpiCommunicator::sum_by_blocks(std::span<T> values) {
  const int n = count_of(values.size(), "MpiCommunicator::all_reduce_sum");
  if (n == 0 || size_ == 1) return;
  const MPI_Datatype type = std::is_same_v<T, double> ? MPI_DOUBLE : MPI_FLOAT;
  const std::size_t block =
      (values.size() + static_cast<std::size_t>(size_) - 1) / static_cast<std::size_t>(size_);
  const int count = count_of(block, "MpiCommunicator::all_reduce_sum");
  count_of(block * static_cast<std::size_t>(size_), "MpiCommunicator::all_reduce_sum");
  std::vector<T> padded(block * static_cast<std::size_t>(size_), T{0});  // zeros past n: sums of zeros
  std::copy(values.begin(), values.end(), padded.begin());
  std::vector<T> mine(block);
  MPI_Request request;
  BNORM_MPI_START(
      MPI_Ireduce_scatter_block(padded.data(), mine.data(), count, type, MPI_SUM, impl_->comm, &request),
      "MPI_Ireduce_scatter_block");
  wait_for(request, "MPI_Ireduce_scatter_block", rank_, timeout_, failed_);
  BNORM_MPI_START(MPI_Iallgather(mine.data(), count, type, padded.data(), count, type, impl_->comm, &request),
                  "MPI_Iallgather");
  wait_for(request, "MPI_Iallgather", rank_, timeout_, failed_);
  std::copy(padded.begin(), padded.begin() + n, values.begin());
}

void MpiCommunicator::all_reduce_sum(std::span<double> values) {
  sum_by_blocks(values);
}

void MpiCommunicator::all_reduce_sum(std::span<float> values) {
  sum_by_blocks(values);
}

void MpiCommunicator::all_gather(std::span<const double> mine, std::span<double> all) {
  nn::check_gather_sizes(*this, mine.size(), all.size(), "MpiCommunicator::all_gather");
  const int n = count_of(mine.size(), "MpiCommunicator::all_gather");
  count_of(all.size(), "MpiCommunicator::all_gather");
  MPI_Request request;
  BNORM_MPI_START(
      MPI_Iallgather(mine.data(), n, MPI_DOUBLE, all.data(), n, MPI_DOUBLE, impl_->comm, &request),
      "MPI_Iallgather");
  wait_for(request, "MPI_Iallgather", rank_, timeout_, failed_);
}

void MpiCommunicator::broadcast(std::span<float> values, int root) {
  nn::check_root(*this, root, "MpiCommunicator::broadcast");
  const int n = count_of(values.size(), "MpiCommunicator::broadcast");
  MPI_Request request;
  BNORM_MPI_START(MPI_Ibcast(values.data(), n, MPI_FLOAT, root, impl_->comm, &request), "MPI_Ibcast");
  wait_for(request, "MPI_Ibcast", rank_, timeout_, failed_);
}

void MpiCommunicator::broadcast(std::span<std::byte> bytes, int root) {
  nn::check_root(*this, root, "MpiCommunicator::broadcast");
  const int n = count_of(bytes.size(), "MpiCommunicator::broadcast");
  MPI_Request request;
  BNORM_MPI_START(MPI_Ibcast(bytes.data(), n, MPI_BYTE, root, impl_->comm, &request), "MPI_Ibcast");
  wait_for(request, "MPI_Ibcast", rank_, timeout_, failed_);
}

void MpiCommunicator::barrier() {
  MPI_Request request;
  BNORM_MPI_START(MPI_Ibarrier(impl_->comm, &request), "MPI_Ibarrier");
  wait_for(request, "MPI_Ibarrier", rank_, timeout_, failed_);
}

}  // namespace bnorm::mpi
