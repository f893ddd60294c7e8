"""The layers against the real frameworks: the cases of tests/fixtures/keras3.json
(Keras 3) and torch.json (PyTorch) replayed through the Python API, within each case's
tolerance (as tests/nn/golden_test.cpp). Gradient steps are replayed as calls (their
outputs and statistic updates are compared; gradients are not part of the Python API)."""

import numpy as np
import pytest

import bnorm
from conftest import assert_close, load_fixture, tensor

KERAS3 = load_fixture("keras3.json")["cases"]
TORCH = load_fixture("torch.json")["cases"]

INITIALIZERS = ("beta_initializer", "gamma_initializer", "moving_mean_initializer",
                "moving_variance_initializer")


def initializer(spec):
    return spec["value"] if spec["name"] == "constant" else spec["name"]


def keras_supported(case):
    # Regularizers (losses) are not part of the Python API.
    return case["layer"].get("beta_regularizer") is None and case["layer"].get("gamma_regularizer") is None


def keras_cases():
    return [pytest.param(c, id=c["id"]) for c in KERAS3 if keras_supported(c)]


def torch_cases():
    return [pytest.param(c, id=c["id"]) for c in TORCH if c["layer"].get("dim") is not None]


def test_replays_most_cases():
    # The filters above leave out only the regularizer and lazy-module cases.
    assert len(keras_cases()) >= len(KERAS3) - 2
    assert len(torch_cases()) >= len(TORCH) - 2


KERAS_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")


@pytest.mark.parametrize("case", keras_cases())
def test_keras3_layer(case):
    spec, rtol, atol = case["layer"], case["rtol"], case["atol"]
    layer = bnorm.BatchNormalization(momentum=spec["momentum"], epsilon=spec["epsilon"], axis=spec["axis"],
                                     center=spec["center"], scale=spec["scale"], trainable=spec["trainable"],
                                     **{k: initializer(spec[k]) for k in INITIALIZERS if k in spec})
    if spec.get("input_shape"):
        layer.build(spec["input_shape"])
    for n, step in enumerate(case["steps"]):
        what = f"{case['id']} step {n} ({step['op']})"
        op = step["op"]
        y = None
        if op in ("call", "grad"):
            x = tensor(step["x"])
            if "expect_error" in step:
                with pytest.raises(bnorm.Error):
                    layer(x, training=step.get("training"))
                continue
            y = layer(x, training=step.get("training"))
            assert y.dtype == np.float32 and y.shape == x.shape
        elif op == "set_weights":
            for k in KERAS_VARIABLES:
                if k in step:
                    setattr(layer, k, tensor(step[k]))
        elif op == "set_trainable":
            layer.trainable = step["value"]
        elif op == "inspect":
            pass  # weight lists and losses: tests/nn/golden_test.cpp; values below
        else:
            pytest.fail(f"{what}: unknown op")
        for key, want in step.get("expect", {}).items():
            if key == "y" and y is not None:
                assert_close(y, want, rtol, atol, f"{what}: y")
            elif key in KERAS_VARIABLES:
                got = getattr(layer, key)
                assert got is not None, f"{what}: {key} absent"
                assert_close(got, want, rtol, atol, f"{what}: {key}")


TORCH_TENSORS = ("weight", "bias", "running_mean", "running_var")


@pytest.mark.parametrize("case", torch_cases())
def test_torch_layer(case):
    spec, rtol, atol = case["layer"], case["rtol"], case["atol"]
    make = {1: bnorm.BatchNorm1d, 2: bnorm.BatchNorm2d, 3: bnorm.BatchNorm3d}[spec["dim"]]
    module = make(spec["num_features"], eps=spec["eps"], momentum=spec["momentum"],
                  affine=spec.get("affine", True), track_running_stats=spec.get("track_running_stats", True))
    assert module.training
    for n, step in enumerate(case["steps"]):
        what = f"{case['id']} step {n} ({step['op']})"
        op = step["op"]
        y = None
        if op in ("forward", "grad"):
            x = tensor(step["x"])
            if "expect_error" in step:
                with pytest.raises(bnorm.Error):
                    module(x)
                continue
            y = module(x)
        elif op == "train":
            assert module.train() is module
        elif op == "eval":
            assert module.eval() is module and not module.training
        elif op == "set_track_running_stats":
            module.track_running_stats = step["value"]
        elif op == "set_momentum":
            module.momentum = step["value"]
        elif op == "reset_running_stats":
            module.reset_running_stats()
        elif op == "set_state":
            for k in TORCH_TENSORS:
                if k in step:
                    setattr(module, k, tensor(step[k]))
            if "num_batches_tracked" in step:
                module.num_batches_tracked = step["num_batches_tracked"]
        elif op == "inspect":
            pass
        else:
            pytest.fail(f"{what}: unknown op")
        for key, want in step.get("expect", {}).items():
            if key == "y" and y is not None:
                assert_close(y, want, rtol, atol, f"{what}: y")
            elif key in TORCH_TENSORS:
                got = getattr(module, key)
                if want is None:
                    assert got is None, f"{what}: {key} should be absent"
                else:
                    assert_close(got, want, rtol, atol, f"{what}: {key}")
            elif key == "num_batches_tracked" and want is not None:
                assert module.num_batches_tracked == want, what
            elif key == "num_features":
                assert module.num_features == want, what
            elif key == "training":
                assert module.training == want, what
            elif key == "momentum":
                assert module.momentum == want, what
