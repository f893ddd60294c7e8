#!/usr/bin/env bash
# Installs the Debian packages bnorm needs to build and test, only those missing.
# Uses sudo when not root. Safe to run repeatedly (does nothing when all are present).
set -euo pipefail

packages=(
  g++ cmake make pkg-config   # toolchain
  libgtest-dev                # GoogleTest (tests)
  nlohmann-json3-dev          # JSON reader for the golden fixtures
  libopenblas-dev             # OpenBLAS (cblas_sgemm) for the dense kernels
  libcli11-dev                # command line parsing (apps/bnorm)
  zlib1g-dev                  # reading gzip-compressed IDX datasets
  dataset-fashion-mnist       # the default dataset of `bnorm experiment`
  gnuplot-nox                 # the experiment's figures (PNG)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "bnorm: installing missing Debian packages: ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); else
    echo "bnorm: need root or sudo to install: ${missing[*]}" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
