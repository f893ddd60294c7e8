#!/usr/bin/env bash
# Programs that use bnorm as another project would (tests/consumers/README.md); part of
# make test. In a temporary folder, removed at the end:
#   1. BUILD installed with `cmake --install BUILD --prefix PREFIX`;
#   2. find_package_core built against PREFIX (find_package(bnorm VERSION EXACT), bnorm::core
#      only) and run; it must not need libbnorm_io, HDF5, libzip or zlib;
#   3. find_package_io built against PREFIX (bnorm::io) and run;
#   4. find_package_core's program built with `pkg-config --cflags --libs bnorm-core`;
#   5. add_subdirectory: the repository as the subproject of a parent without a build
#      type (its CMakeLists.txt fails when bnorm defines more than its libraries, needs
#      GoogleTest or sets the build type), with BNORM_WERROR=ON: bnorm's compile lines get
#      -Werror, the parent's do not; then that build installed (static libraries) and
#      find_package_io built and run against it.
#
#   scripts/test-consumers.sh BUILD      (BUILD: a built top-level build folder)
set -euo pipefail
build="$(cd "${1:?usage: scripts/test-consumers.sh BUILD}" && pwd)"
root="$(cd "$(dirname "$0")/.." && pwd)"
consumers="$root/tests/consumers"
npy="$root/tests/fixtures/arrays/f4_2x3.npy"
jobs="$(nproc)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/bnorm-consumers.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

fail() {
  echo "test-consumers: $*" >&2
  exit 1
}
# quiet LOG COMMAND...: runs COMMAND with its output in $tmp/LOG, shown when it fails.
quiet() {
  local log="$tmp/$1"
  shift
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    fail "failed: $*"
  fi
}
# build_consumer SOURCE BUILD_DIR [cmake arguments]: configure and build a consumer.
build_consumer() {
  local src="$1" dir="$2"
  shift 2
  quiet "$(basename "$dir").configure.log" cmake -S "$src" -B "$dir" "$@"
  quiet "$(basename "$dir").build.log" cmake --build "$dir" -j "$jobs"
}
# needed FILE: the shared libraries FILE names (DT_NEEDED), one a line.
needed() {
  readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
}

# 1. The installed tree.
prefix="$tmp/prefix"
echo "== consumers: cmake --install $build --prefix $prefix"
quiet install.log cmake --install "$build" --prefix "$prefix"
version_file="$(find "$prefix" -path '*/cmake/bnorm/bnormConfigVersion.cmake')"
[ -n "$version_file" ] || fail "no bnormConfigVersion.cmake under $prefix"
version="$(sed -n 's/^set(PACKAGE_VERSION "\(.*\)")$/\1/p' "$version_file")"
if [ -x "$prefix/bin/bnorm" ]; then
  tool_version="$("$prefix/bin/bnorm" --version)"
  [ "$tool_version" = "bnorm $version" ] || fail "installed bnorm --version says '$tool_version', the CMake package $version"
fi
if grep -q -e '-Werror' -e 'bnorm_options' -e 'fsanitize' "$(dirname "$version_file")"/bnormTargets*.cmake; then
  fail "the exported targets carry bnorm's own warning or sanitizer options"
fi

# 2. bnorm::core only.
echo "== consumers: find_package(bnorm $version EXACT CONFIG REQUIRED), bnorm::core"
build_consumer "$consumers/find_package_core" "$tmp/core" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DBNORM_EXPECTED_VERSION="$version"
"$tmp/core/consumer_core"
if needed "$tmp/core/consumer_core" | grep -E 'bnorm_io|hdf5|libzip|libz\.'; then
  fail "consumer_core links only bnorm::core but needs the libraries above"
fi

# 3. bnorm::io.
echo "== consumers: find_package(bnorm $version EXACT CONFIG REQUIRED), bnorm::io"
build_consumer "$consumers/find_package_io" "$tmp/io" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DBNORM_EXPECTED_VERSION="$version"
"$tmp/io/consumer_io" "$npy" "$tmp"

# 4. pkg-config.
echo "== consumers: pkg-config bnorm-core"
pc_file="$(find "$prefix" -name bnorm-core.pc)"
[ -n "$pc_file" ] || fail "no bnorm-core.pc under $prefix"
export PKG_CONFIG_PATH="$(dirname "$pc_file")"
pc_version="$(pkg-config --modversion bnorm)"
[ "$pc_version" = "$version" ] || fail "pkg-config says bnorm $pc_version, the CMake package $version"
static=()
[ -e "$(pkg-config --variable=libdir bnorm-core)/libbnorm_core.so" ] || static=(--static)
read -r -a pc_flags <<<"$(pkg-config "${static[@]}" --cflags --libs bnorm-core)"
quiet pkg-config.log g++ -std=c++20 -O2 "$consumers/find_package_core/main.cpp" -o "$tmp/core_pc" \
  "${pc_flags[@]}" -Wl,-rpath,"$(pkg-config --variable=libdir bnorm-core)"
"$tmp/core_pc"

# 5. add_subdirectory, then that build installed.
echo "== consumers: add_subdirectory (no build type, BNORM_WERROR=ON): bnorm's libraries only"
sub="$tmp/subdirectory"
build_consumer "$consumers/add_subdirectory" "$sub" -DBNORM_SOURCE_DIR="$root" -DBNORM_WERROR=ON \
  -DBNORM_INSTALL=ON -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
"$sub/consumer_subdirectory" "$npy" "$tmp"
# compile_commands.json has "command" before "file" in each entry.
command_of() {
  awk -v want="$1" '/"command":/ { c = $0 } /"file":/ && index($0, want) { print c }' "$sub/compile_commands.json"
}
parent_line="$(command_of /find_package_io/main.cpp)"
bnorm_line="$(command_of /src/kernels/batch_norm.cpp)"
[ -n "$parent_line" ] && [ -n "$bnorm_line" ] || fail "compile lines not found in $sub/compile_commands.json"
case "$parent_line" in *-Werror*) fail "bnorm added -Werror to the parent's own target: $parent_line" ;; esac
case "$bnorm_line" in *-Werror*) ;; *) fail "BNORM_WERROR=ON did not reach bnorm's own targets: $bnorm_line" ;; esac

echo "== consumers: the add_subdirectory build installed (static libraries), bnorm::io"
quiet install-static.log cmake --install "$sub" --prefix "$tmp/static-prefix"
find "$tmp/static-prefix" -name libbnorm_io.a | grep -q . || fail "no static libbnorm_io.a installed by the subproject"
build_consumer "$consumers/find_package_io" "$tmp/io-static" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$tmp/static-prefix" -DBNORM_EXPECTED_VERSION="$version"
"$tmp/io-static/consumer_io" "$npy" "$tmp"
if needed "$tmp/io-static/consumer_io" | grep bnorm; then
  fail "consumer_io against static libraries needs shared bnorm libraries"
fi
echo "== consumers: all passed"
