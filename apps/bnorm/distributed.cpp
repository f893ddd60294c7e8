#include "distributed.hpp"

#include <cstdlib>
#include <string>

#include "commands.hpp"

#if BNORM_HAVE_MPI
#include "bnorm/mpi/mpi_communicator.hpp"
#endif

namespace bnorm::cli {

namespace {

// The launcher's process count, 0 without a launcher.
long launcher_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    if (const char* v = std::getenv(name)) return std::strtol(v, nullptr, 10);
  }
  return std::getenv("PMIX_RANK") != nullptr ? 2 : 0;  // PMIx alone: ask MPI
}

#if BNORM_HAVE_MPI
// MPI's lifetime: the communicator is freed before MPI_Finalize (members are destroyed
// in reverse order), at exit.
struct MpiRun {
  mpi::Environment environment{nullptr, nullptr};
  std::shared_ptr<mpi::MpiCommunicator> communicator = std::make_shared<mpi::MpiCommunicator>();
};
#endif

}  // namespace

std::shared_ptr<nn::Communicator> launcher_communicator([[maybe_unused]] const char* command) {
  if (launcher_size() <= 1) return nullptr;
#if BNORM_HAVE_MPI
  static MpiRun run;
  if (run.communicator->size() <= 1) return nullptr;
  return run.communicator;
#else
  throw UsageError(command, "MPI launcher",
                   "a bnorm built with MPI (libopenmpi-dev: the bnorm::mpi target) to train across processes",
                   std::to_string(launcher_size()) + " processes started by mpirun, and a bnorm without MPI");
#endif
}

}  // namespace bnorm::cli
