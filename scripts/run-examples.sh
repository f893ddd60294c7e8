#!/usr/bin/env bash
# Runs every example program built in BUILD_DIR/examples, in name order, each under a
# header line. Each example checks what it demonstrates and exits non-zero when that
# does not hold; this script exits non-zero when any example fails (or none was built).
#
#   scripts/run-examples.sh BUILD_DIR        (what `make run` does, with BUILD_DIR=build)
set -u

if [ $# -ne 1 ]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
dir="$1/examples"
if [ ! -d "$dir" ]; then
  echo "run-examples: no directory $dir (build the project first: cmake --build $1)" >&2
  exit 2
fi

mapfile -t programs < <(find "$dir" -maxdepth 1 -type f -perm -u+x -printf '%f\n' | LC_ALL=C sort)
if [ ${#programs[@]} -eq 0 ]; then
  echo "run-examples: no example programs in $dir" >&2
  exit 2
fi

failed=()
for name in "${programs[@]}"; do
  echo "==== $name"
  "$dir/$name"
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "==== $name FAILED (exit status $rc)"
    failed+=("$name")
  fi
  echo
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "run-examples: ${#failed[@]} of ${#programs[@]} examples failed: ${failed[*]}" >&2
  exit 1
fi
echo "run-examples: all ${#programs[@]} examples passed"
