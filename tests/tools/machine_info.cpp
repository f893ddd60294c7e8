// bnorm_machine_info: prints the implementation choices that depend on the machine, one
// `key=value` a line, as the library makes them under the current environment:
//   blas_kernel_family=SkylakeX   OpenBLAS's GEMM kernels (OPENBLAS_CORETYPE overrides)
//   simd_level=avx512             bnorm's batch-norm loops: generic, avx2 or avx512
//                                 (BNORM_SIMD=generic|avx2|avx512 forces one)
// scripts/test-variant.sh uses it to pick another OpenBLAS family for the suite's second
// run and to check that both overrides took effect.
#include <cstdio>

#include "bnorm/kernels/batch_norm.hpp"
#include "bnorm/kernels/dense.hpp"

int main() {
  std::printf("blas_kernel_family=%s\n", bnorm::kernels::blas_kernel_family());
  std::printf("simd_level=%s\n", bnorm::kernels::simd_level());
  return 0;
}
