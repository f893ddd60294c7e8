#include "bnorm/nn/variable.hpp"

#include <map>
#include <mutex>

namespace bnorm::nn {

namespace {
std::mutex names_mutex;
std::map<std::string, int>& name_counts() {
  static std::map<std::string, int> counts;
  return counts;
}
}  // namespace

std::string unique_name(const std::string& base) {
  std::lock_guard lock(names_mutex);
  const int n = name_counts()[base]++;
  return n == 0 ? base : base + "_" + std::to_string(n);
}

void reset_unique_names() {
  std::lock_guard lock(names_mutex);
  name_counts().clear();
}

}  // namespace bnorm::nn
