"""The kernels on NumPy arrays: no copies (out= is written in place, foreign dtypes and
layouts are refused with a message naming the argument), any channel axis, and the
results of the real frameworks (Keras 3 training calls from keras3.json, PyTorch
training forwards from torch.json) within each case's tolerance."""

import numpy as np
import pytest

import bnorm
from conftest import assert_close, load_fixture, tensor


def reference(x, axis, gamma=None, beta=None, epsilon=1e-3):
    """Double two-pass batch normalization over every axis but `axis`."""
    xd = x.astype(np.float64)
    axes = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    mean = xd.mean(axis=axes, keepdims=True)
    var = ((xd - mean) ** 2).mean(axis=axes, keepdims=True)
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    g = np.ones(shape) if gamma is None else gamma.reshape(shape)
    b = np.zeros(shape) if beta is None else beta.reshape(shape)
    y = (xd - mean) / np.sqrt(var + epsilon) * g + b
    return y, mean.reshape(-1), var.reshape(-1)


@pytest.mark.parametrize("shape,axis", [((8, 5), -1), ((8, 5), 0), ((4, 3, 6), 1), ((2, 3, 4, 5), 1),
                                        ((2, 3, 4, 5), -1), ((2, 3, 4, 5), 2), ((2, 3, 4, 5), -4),
                                        ((2, 2, 3, 2, 3), 3)])
def test_training_any_axis_matches_reference(shape, axis):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    c = shape[axis]
    gamma = rng.uniform(0.5, 2, c).astype(np.float32)
    beta = rng.uniform(-1, 1, c).astype(np.float32)
    y, mean, var = bnorm.batch_norm_forward_training(x, gamma, beta, epsilon=1e-3, axis=axis)
    want_y, want_mean, want_var = reference(x, axis, gamma, beta)
    assert y.dtype == np.float32 and y.shape == x.shape and mean.shape == (c,) and var.shape == (c,)
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(var, want_var, rtol=1e-5)
    y_inf = bnorm.batch_norm_forward_inference(x, mean, var, gamma, beta, epsilon=1e-3, axis=axis)
    np.testing.assert_allclose(y_inf, y, rtol=1e-5, atol=1e-5)


def test_out_is_written_in_place_without_copies():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = np.empty_like(x)
    y, _, _ = bnorm.batch_norm_forward_training(x, out=out)
    assert y is out
    np.testing.assert_allclose(out, reference(x, -1)[0], atol=1e-5)
    # y may alias x: normalized in place.
    x_copy = x.copy()
    y, _, _ = bnorm.batch_norm_forward_training(x, out=x)
    assert y is x and np.shares_memory(y, x)
    np.testing.assert_allclose(x, reference(x_copy, -1)[0], atol=1e-5)
    mean, var = np.zeros(3, np.float32), np.ones(3, np.float32)
    out2 = np.empty_like(x)
    assert bnorm.batch_norm_forward_inference(x, mean, var, out=out2) is out2


def test_float64_input_is_refused_naming_the_argument():
    with pytest.raises(TypeError, match=r"batch_norm_forward_training: x: expected a float32 NumPy array, "
                                        r"received dtype float64"):
        bnorm.batch_norm_forward_training(np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"gamma: expected a float32 NumPy array, received dtype float64"):
        bnorm.batch_norm_forward_training(np.zeros((2, 3), np.float32), gamma=np.ones(3))
    with pytest.raises(TypeError, match=r"x: expected a float32 NumPy array, received an object of type list"):
        bnorm.batch_norm_forward_inference([[1.0]], np.zeros(1, np.float32), np.ones(1, np.float32))


def test_non_contiguous_and_read_only_are_refused():
    x = np.zeros((3, 4), np.float32).T
    with pytest.raises(ValueError, match=r"x: expected a C-contiguous array, received a non-contiguous one"):
        bnorm.batch_norm_forward_training(x)
    out = np.zeros((2, 3), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match=r"out: expected a writable array"):
        bnorm.batch_norm_forward_training(np.zeros((2, 3), np.float32), out=out)


def test_argument_and_shape_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(bnorm.ArgumentError,
                       match=r"axis: expected an axis in \[-2, 1\] for an input of rank 2, received 2"):
        bnorm.batch_norm_forward_training(x, axis=2)
    with pytest.raises(bnorm.ShapeError, match=r"gamma: expected an array of shape \(3,\)"):
        bnorm.batch_norm_forward_training(x, gamma=np.ones(4, np.float32))
    with pytest.raises(bnorm.ShapeError, match=r"out: expected an array of x's shape"):
        bnorm.batch_norm_forward_training(x, out=np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"epsilon: expected a finite value > 0, received 0.0"):
        bnorm.batch_norm_forward_training(x, epsilon=0.0)


def first_training_call(case):
    """(x, gamma, beta, expected y) of a case's first training-mode step, weights as set."""
    weights = {}
    for step in case["steps"]:
        if step["op"] in ("set_weights", "set_state"):
            weights.update({k: tensor(v) for k, v in step.items() if isinstance(v, dict)})
        elif step["op"] in ("call", "grad", "forward") and "expect_error" not in step:
            if step.get("training", True) is not True or "y" not in step.get("expect", {}):
                return None
            return tensor(step["x"]), weights, step["expect"]["y"]
    return None


def keras_kernel_cases():
    out = []
    for c in load_fixture("keras3.json")["cases"]:
        layer = c["layer"]
        if layer["trainable"] and isinstance(layer["axis"], int) and first_training_call(c):
            out.append(pytest.param(c, id=c["id"]))
    return out


def torch_kernel_cases():
    return [pytest.param(c, id=c["id"]) for c in load_fixture("torch.json")["cases"]
            if c["layer"].get("dim") and c["layer"]["eps"] > 0 and first_training_call(c)]


@pytest.mark.parametrize("case", keras_kernel_cases())
def test_kernel_matches_keras3_training_call(case):
    x, w, want = first_training_call(case)
    layer = case["layer"]
    gamma = w.get("gamma") if layer["scale"] else None
    beta = w.get("beta") if layer["center"] else None
    y, _, _ = bnorm.batch_norm_forward_training(x, gamma, beta, epsilon=layer["epsilon"], axis=layer["axis"])
    assert_close(y, want, case["rtol"], case["atol"], case["id"])


@pytest.mark.parametrize("case", torch_kernel_cases())
def test_kernel_matches_torch_training_forward(case):
    x, w, want = first_training_call(case)
    y, _, _ = bnorm.batch_norm_forward_training(x, w.get("weight"), w.get("bias"),
                                                epsilon=case["layer"]["eps"], axis=1)
    assert_close(y, want, case["rtol"], case["atol"], case["id"])


def test_kernel_cases_cover_several_axes():
    axes = {c.values[0]["layer"]["axis"] for c in keras_kernel_cases()}
    assert {-1, 1, 2} <= axes
    assert len(torch_kernel_cases()) >= 5
