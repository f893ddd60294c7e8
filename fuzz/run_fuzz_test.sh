#!/usr/bin/env bash
# The short fuzz run of CTest (label `fuzz`), for a libFuzzer binary and for the
# standalone driver alike:
#   run_fuzz_test.sh TARGET [--write-seeds] [--seed-file FILE]... -- FUZZER_OPTIONS...
# --write-seeds  run TARGET once with BNORM_FUZZ_WRITE_SEEDS=DIR to have it write its own
#                seeds (its LLVMFuzzerInitialize writes them and exits)
# --seed-file    a seed file (e.g. a fixture) copied beside them
# Then TARGET runs with FUZZER_OPTIONS on an empty corpus folder (libFuzzer adds what it
# finds there) and the seed folder; both are temporary. A crashing input is written to
# ${BNORM_FUZZ_ARTIFACTS:-the current folder}/crash-*.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 TARGET [--write-seeds] [--seed-file FILE]... -- FUZZER_OPTIONS..." >&2
  exit 2
fi
target=$1
shift
write_seeds=0
seed_files=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --write-seeds) write_seeds=1; shift ;;
    --seed-file) seed_files+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "$0: unknown argument $1" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/bnorm_fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus" "$work/seeds"
if [[ $write_seeds == 1 ]]; then
  BNORM_FUZZ_WRITE_SEEDS="$work/seeds" "$target"
fi
for f in "${seed_files[@]+"${seed_files[@]}"}"; do
  cp "$f" "$work/seeds/"
done
if [[ -z "$(ls -A "$work/seeds")" ]]; then
  echo "$0: no seeds for $target" >&2
  exit 2
fi
artifacts=${BNORM_FUZZ_ARTIFACTS:-$PWD}
mkdir -p "$artifacts"
echo "$(basename "$target"): $(ls "$work/seeds" | wc -l) seeds; $*"
"$target" "$@" -artifact_prefix="$artifacts/" "$work/corpus" "$work/seeds"
