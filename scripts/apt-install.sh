#!/usr/bin/env bash
# apt-install.sh [--optional] LABEL PACKAGE...
# Installs those of the Debian PACKAGEs that are missing (nothing when all are present),
# with sudo when not root. Required (default): a failure stops with exit status 1.
# --optional: a failure is reported and the caller goes on without the packages (exit 0).
# Used by install-deps.sh (the build and tests) and install-bench-deps.sh (peers).
set -uo pipefail

optional=0
if [ "${1:-}" = "--optional" ]; then optional=1; shift; fi
label="$1"; shift

missing=()
for p in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

fail() {
  echo "$label: $1" >&2
  if [ "$optional" -eq 1 ]; then echo "$label: going on without ${missing[*]}" >&2; exit 0; fi
  exit 1
}

echo "$label: installing missing Debian packages: ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); else
    fail "need root or sudo to install ${missing[*]}"
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq || [ "$optional" -eq 1 ] || fail "apt-get update failed"
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" \
  || fail "could not install ${missing[*]}"
exit 0
