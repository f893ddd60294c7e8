// The communicator of a command started by an MPI launcher (`mpirun -np P bnorm train`),
// docs/distributed.md.
#pragma once

#include <memory>

#include "bnorm/nn/communicator.hpp"

namespace bnorm::cli {

// Under an MPI launcher (OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK set) with more than
// one process: MPI is initialized on the first call and an MpiCommunicator over all the
// ranks returned (the same one afterwards; MPI is finalized at exit). Null without a
// launcher or with one process: the command runs as always. A launcher with several
// processes and a bnorm built without MPI (no libopenmpi-dev) is a UsageError naming
// `command`: the ranks would train P unrelated models.
std::shared_ptr<nn::Communicator> launcher_communicator(const char* command);

}  // namespace bnorm::cli
