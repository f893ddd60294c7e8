// src/kernels/cpu/invstd.hpp: the one formula that turns a variance into invstd (internal),
// shared by the reference and the fast kernels so that they round it the same way.
#pragma once

#include <cmath>

namespace bnorm::kernels {

// invstd = 1 / sqrt(var + epsilon), computed in double and rounded once to T (PyTorch's
// save_invstd).
template <typename T>
inline T invstd_of(double var, T epsilon) {
  return static_cast<T>(1.0 / std::sqrt(var + static_cast<double>(epsilon)));
}

}  // namespace bnorm::kernels
