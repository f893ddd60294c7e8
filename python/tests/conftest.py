"""Shared helpers: the golden fixtures written by the real Keras and PyTorch
(tests/fixtures/FORMAT.md) and the tolerance check the C++ golden tests use."""

import json
import os
import pathlib

import numpy as np
import pytest

FIXTURES = pathlib.Path(os.environ.get(
    "BNORM_FIXTURES", pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"))


def load_fixture(name):
    with open(FIXTURES / name) as f:
        return json.load(f)


def tensor(t):
    """A fixture input tensor: dense or generated ("hash")."""
    shape = tuple(t["shape"])
    if "hash" in t:
        h = t["hash"]
        n = int(np.prod(shape, dtype=np.int64))
        i = np.arange(n, dtype=np.uint64)
        u = ((i * np.uint64(2654435761) + np.uint64(h["seed"] * 40503)) % np.uint64(2**32)).astype(np.float64)
        u /= 2.0**32
        return (h["offset"] + h["scale"] * (u - 0.5)).astype(np.float32).reshape(shape)
    return np.asarray(t["data"], dtype=np.float32).reshape(shape)


def assert_close(got, want, rtol, atol, what=""):
    """|got - want| <= atol + rtol |want| elementwise (dense or sampled expectations)."""
    got = np.asarray(got, dtype=np.float64)
    if "indices" in want:
        assert got.size == int(np.prod(want["shape"])), what
        got = got.reshape(-1)[np.asarray(want["indices"])]
        exp = np.asarray(want["data"], dtype=np.float64)
    else:
        exp = np.asarray(want["data"], dtype=np.float64).reshape(want["shape"])
        assert got.size == exp.size, f"{what}: size {got.size}, expected {exp.size}"
        got = got.reshape(exp.shape)
    err = np.abs(got - exp) - (atol + rtol * np.abs(exp))
    assert np.all(err <= 0), f"{what}: worst excess {err.max()} (rtol {rtol}, atol {atol})"


@pytest.fixture(scope="session")
def fixtures():
    return FIXTURES
