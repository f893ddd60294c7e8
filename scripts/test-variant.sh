#!/usr/bin/env bash
# The suite's second run (make test): the tests of an already built BUILD folder again,
# under the machine-dependent choices this machine did NOT make, so that a test asserting
# more than the product guarantees fails here and not on the next machine:
#   - OpenBLAS forced to another GEMM kernel family (OPENBLAS_CORETYPE): Haswell, or
#     Sandybridge where this machine already runs Haswell's SGEMM (Haswell, Zen), or
#     Prescott on a CPU without AVX2;
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

# This CPU's own choice, whatever OPENBLAS_CORETYPE the environment sets (the first run
# used that one: it differs from the alternative below either way).
native="$(env -u OPENBLAS_CORETYPE "$info" | sed -n 's/^blas_kernel_family=//p')"
current="$("$info" | sed -n 's/^blas_kernel_family=//p')"
if ! grep -qw avx2 /proc/cpuinfo; then
  alt=Prescott  # SSE3 kernels run on any x86-64
elif [ "$native" = Haswell ] || [ "$native" = Zen ] || [ "${OPENBLAS_CORETYPE:-}" = Haswell ]; then
  alt=Sandybridge  # Zen's SGEMM is Haswell's kernel
else
  alt=Haswell
fi

# Check that both overrides take effect. An OpenBLAS built without DYNAMIC_ARCH (or
# another BLAS) has one kernel family: then only the SIMD loops change, and the log
# says so.
got="$(OPENBLAS_CORETYPE="$alt" BNORM_SIMD=generic "$info" | tr '\n' ' ')"
case "$got" in
  *"simd_level=generic "*) ;;
  *)
    echo "test-variant: BNORM_SIMD=generic gave '$got'" >&2
    exit 1
    ;;
esac
case "$got" in
  *"blas_kernel_family=$alt "*) ;;
  *)
    echo "== second run: this OpenBLAS ignores OPENBLAS_CORETYPE (family '$current' stays): only bnorm's generic SIMD loops (BNORM_SIMD=generic)"
    cd "$build"
    BNORM_SIMD=generic ctest --output-on-failure -j "$(nproc)" -LE fuzz "$@"
    exit $?
    ;;
esac

echo "== second run: OpenBLAS kernel family $alt (this CPU's: $native; first run: $current), bnorm's generic SIMD loops (BNORM_SIMD=generic)"
cd "$build"
OPENBLAS_CORETYPE="$alt" BNORM_SIMD=generic ctest --output-on-failure -j "$(nproc)" -LE fuzz "$@"
