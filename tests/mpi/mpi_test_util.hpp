// Shared by the MPI test programs: the run's result over every rank.
#pragma once

#include <cstddef>
#include <vector>

#include "bnorm/nn/communicator.hpp"

namespace bnorm::testing {

// Nonzero on every rank when RUN_ALL_TESTS failed on any rank (`failed`: this rank's).
inline int any_rank_failed(int failed, nn::Communicator& comm) {
  std::vector<double> mine{static_cast<double>(failed != 0)}, all(static_cast<std::size_t>(comm.size()));
  comm.all_gather(mine, all);
  for (double f : all) failed |= f != 0 ? 1 : 0;
  return failed;
}

}  // namespace bnorm::testing
