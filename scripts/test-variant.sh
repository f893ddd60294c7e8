#!/usr/bin/env bash
# The suite's second run (make test): the tests of an already built BUILD folder again,
# under the machine-dependent choices this machine did NOT make, so that a test asserting
# more than the product guarantees fails here and not on the next machine:
#   - OpenBLAS forced to another GEMM kernel family (OPENBLAS_CORETYPE): Haswell, or
#     Sandybridge where this machine already runs Haswell's (Nehalem without AVX2);
#   - bnorm's generic SIMD loops instead of AVX2 (BNORM_SIMD=generic).
# The fuzz targets (file readers, no BLAS or SIMD choice involved) are not rerun.
#
#   scripts/test-variant.sh BUILD [extra ctest arguments]
set -euo pipefail
build="${1:?usage: scripts/test-variant.sh BUILD [ctest arguments]}"
shift
info="$build/tests/bnorm_machine_info"
if [ ! -x "$info" ]; then
  echo "test-variant: $info is missing: build the tests first (make build)" >&2
  exit 1
fi

native="$("$info" | sed -n 's/^blas_kernel_family=//p')"
if ! grep -qw avx2 /proc/cpuinfo; then
  alt=Nehalem
elif [ "$native" = Haswell ]; then
  alt=Sandybridge
else
  alt=Haswell
fi

# Check that both overrides take effect (an OpenBLAS that ignored OPENBLAS_CORETYPE would
# make this run a copy of the first).
got="$(OPENBLAS_CORETYPE="$alt" BNORM_SIMD=generic "$info" | tr '\n' ' ')"
case "$got" in
  *"blas_kernel_family=$alt "*"simd_level=generic "*) ;;
  *)
    echo "test-variant: OPENBLAS_CORETYPE=$alt BNORM_SIMD=generic gave '$got'" >&2
    exit 1
    ;;
esac

echo "== second run: OpenBLAS kernel family $alt (this machine's: $native), bnorm's generic SIMD loops (BNORM_SIMD=generic)"
cd "$build"
OPENBLAS_CORETYPE="$alt" BNORM_SIMD=generic ctest --output-on-failure -j "$(nproc)" -LE fuzz "$@"
