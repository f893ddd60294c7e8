#include "bnorm/nn/communicator.hpp"

#include <algorithm>

#include "bnorm/core/error.hpp"

namespace bnorm::nn {

void check_root(const Communicator& comm, int root, const std::string& where) {
  if (root < 0 || root >= comm.size()) {
    throw ArgumentError(where, "root", "a rank in [0, " + std::to_string(comm.size()) + ")",
                        std::to_string(root));
  }
}

void check_gather_sizes(const Communicator& comm, std::size_t mine, std::size_t all,
                        const std::string& where) {
  const std::size_t want = mine * static_cast<std::size_t>(comm.size());
  if (all != want) {
    throw ArgumentError(where, "all",
                        std::to_string(want) + " values (" + std::to_string(comm.size()) + " ranks times " +
                            std::to_string(mine) + ")",
                        std::to_string(all) + " values");
  }
}

void LocalCommunicator::all_gather(std::span<const double> mine, std::span<double> all) {
  check_gather_sizes(*this, mine.size(), all.size(), "LocalCommunicator::all_gather");
  std::copy(mine.begin(), mine.end(), all.begin());
}

void LocalCommunicator::broadcast(std::span<float>, int root) {
  check_root(*this, root, "LocalCommunicator::broadcast");
}

void LocalCommunicator::broadcast(std::span<std::byte>, int root) {
  check_root(*this, root, "LocalCommunicator::broadcast");
}

}  // namespace bnorm::nn
