#!/usr/bin/env bash
# Installs the Debian packages bnorm needs to build and test, only those missing.
# Uses sudo when not root. Safe to run repeatedly (does nothing when all are present).
set -euo pipefail

packages=(
  g++ cmake make pkg-config   # toolchain
  libgtest-dev                # GoogleTest (tests)
  nlohmann-json3-dev          # JSON reader for the golden fixtures
  libopenblas-dev             # OpenBLAS (cblas_sgemm) for the dense kernels
  libdnnl-dev                 # oneDNN: the convolution kernels (forward, backward data and weights)
  libcli11-dev                # command line parsing (apps/bnorm)
  zlib1g-dev                  # reading gzip-compressed IDX datasets
  dataset-fashion-mnist       # the default dataset of `bnorm experiment`
  gnuplot-nox                 # the experiment's figures (PNG)
  libhdf5-dev                 # HDF5 C API: Keras .keras / .weights.h5 / legacy .h5 files
  libzip-dev                  # zip archives: Keras .keras files
  libpng-dev libjpeg62-turbo-dev   # PNG and JPEG images as model inputs (bnorm predict)
  dpkg-dev file               # make package: dpkg-shlibdeps and file, for CPack's Debian package
  pybind11-dev                # the Python module bnorm._bnorm (python/)
  python3-dev                 # Python's headers, for the Python module
  python3-numpy               # NumPy: the Python module's arrays and its tests
  python3-pytest              # pytest: the Python module's tests (make test)
  libopenmpi-dev openmpi-bin  # MPI: the optional bnorm::mpi target, distributed tests and `mpirun bnorm train`
)

exec bash "$(dirname "$0")/apt-install.sh" bnorm "${packages[@]}"
