#!/usr/bin/env bash
# Installs the optional peers of the batch-norm benchmark (make bench), only those
# missing: libtorch (libtorch-dev) and oneDNN (libdnnl-dev). The library never needs
# them; the benchmark leaves out a peer that is not installed. Uses sudo when not root.
# A failed installation is reported and the benchmark runs without that peer.
set -euo pipefail

packages=(
  libtorch-dev  # libtorch 1.13 (ATen), the PyTorch C++ library
  libdnnl-dev   # oneDNN 2.6
)

exec bash "$(dirname "$0")/apt-install.sh" --optional "bnorm bench" "${packages[@]}"
