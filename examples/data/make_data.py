#!/usr/bin/env python3
"""Writes the example inputs that the README's and docs/cli.md's commands use:

  x.npy       the first 4 Fashion-MNIST test images, float32 (4, 784), pixels / 255
  labels.npy  their classes, int64 (4,)
  rows10.csv  2 rows of 10 values with a header row, the input of the 10-feature models
              that Keras wrote in tests/fixtures/models/ (mlp.keras, mlp.legacy.h5)

from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist). Standard library
only (gzip, struct); run from anywhere: python3 examples/data/make_data.py
"""
import gzip
import os
import struct
import sys

SRC = "/usr/share/datasets/fashion-mnist"
OUT = os.path.dirname(os.path.abspath(__file__))
COUNT = 4


def write_npy(path, descr, shape, payload):
    # .npy format 1.0: magic, version, little-endian header length, header padded with
    # spaces and a newline to a multiple of 64 bytes, then the C-order data.
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else ""))
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * (pad % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + payload)


def main():
    with gzip.open(os.path.join(SRC, "t10k-images-idx3-ubyte.gz")) as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051 and rows * cols == 784, "not an IDX image file"
        pixels = f.read(COUNT * 784)
    with gzip.open(os.path.join(SRC, "t10k-labels-idx1-ubyte.gz")) as f:
        magic, n = struct.unpack(">II", f.read(8))
        assert magic == 2049, "not an IDX label file"
        labels = f.read(COUNT)
    write_npy(os.path.join(OUT, "x.npy"), "<f4", (COUNT, 784),
              struct.pack("<%df" % (COUNT * 784), *(p / 255.0 for p in pixels)))
    write_npy(os.path.join(OUT, "labels.npy"), "<i8", (COUNT,), struct.pack("<%dq" % COUNT, *labels))
    with open(os.path.join(OUT, "rows10.csv"), "w") as f:
        f.write(",".join("f%d" % j for j in range(10)) + "\n")
        for i in range(2):
            f.write(",".join("%g" % (((i * 7 + j * 3) % 11) / 10.0 - 0.5) for j in range(10)) + "\n")
    print("wrote rows10.csv, x.npy (%d, 784) float32 and labels.npy (%d,) int64 to %s" % (COUNT, COUNT, OUT))


if __name__ == "__main__":
    sys.exit(main())
