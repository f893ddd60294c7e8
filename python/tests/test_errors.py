"""bnorm's C++ exceptions arrive as bnorm.Error subclasses of the matching built-in
exceptions, with the C++ message, and leave the objects unchanged."""

import numpy as np
import pytest

import bnorm


def test_hierarchy():
    assert issubclass(bnorm.ArgumentError, bnorm.Error) and issubclass(bnorm.ArgumentError, ValueError)
    assert issubclass(bnorm.ShapeError, bnorm.ArgumentError)
    assert issubclass(bnorm.NumericalError, FloatingPointError) and issubclass(bnorm.NumericalError, ArithmeticError)
    assert issubclass(bnorm.StateError, RuntimeError)
    assert issubclass(bnorm.FileError, OSError)
    assert issubclass(bnorm.FormatError, ValueError)
    for cls in (bnorm.ArgumentError, bnorm.ShapeError, bnorm.NumericalError, bnorm.StateError, bnorm.FileError,
                bnorm.FormatError):
        assert issubclass(cls, bnorm.Error)


def test_argument_error_names_the_option():
    with pytest.raises(bnorm.ArgumentError, match=r"momentum"):
        bnorm.BatchNormalization(momentum=1.5)
    with pytest.raises(ValueError, match=r"epsilon"):
        bnorm.BatchNormalization(epsilon=-1.0)


def test_shape_error_leaves_the_layer_unchanged():
    layer = bnorm.BatchNormalization(name="bn")
    layer(np.ones((4, 3), np.float32), training=True)
    before = layer.moving_mean
    with pytest.raises(bnorm.ShapeError, match=r"BatchNormalization 'bn'"):
        layer(np.ones((4, 5), np.float32), training=True)
    np.testing.assert_array_equal(layer.moving_mean, before)
    with pytest.raises(bnorm.ShapeError, match=r"moving_mean: expected an array of shape \(3,\), received shape \(4,\)"):
        layer.moving_mean = np.zeros(4, np.float32)


def test_numerical_error_on_non_finite_statistics():
    layer = bnorm.BatchNormalization()
    x = np.ones((4, 3), np.float32)
    x[1, 2] = np.nan
    with pytest.raises(bnorm.NumericalError) as info:
        layer(x, training=True)
    assert isinstance(info.value, ArithmeticError)


def test_state_error_before_build():
    layer = bnorm.BatchNormalization()
    assert layer.moving_mean is None and not layer.built
    with pytest.raises(bnorm.StateError, match=r"not built"):
        layer.moving_mean = np.zeros(3, np.float32)


def test_torch_errors():
    bn = bnorm.BatchNorm1d(3)
    with pytest.raises(bnorm.ShapeError, match=r"BatchNorm1d: input: expected 2D or 3D input, received 4D input"):
        bn(np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(bnorm.ShapeError):
        bn(np.zeros((1, 3), np.float32))  # one value per channel in training
    assert bn.num_batches_tracked == 0
    with pytest.raises(bnorm.ArgumentError, match=r"num_features"):
        bnorm.BatchNorm2d(0)


def test_layer_conventions():
    # Keras momentum weighs the old value, PyTorch momentum the new batch (unbiased variance).
    x = np.array([[1.0, 2.0], [3.0, 6.0]], np.float32)
    keras = bnorm.BatchNormalization(momentum=0.9)
    keras(x, training=True)
    np.testing.assert_allclose(keras.moving_mean, 0.1 * x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(keras.moving_variance, 0.9 + 0.1 * x.var(0), rtol=1e-6)
    torch = bnorm.BatchNorm1d(2, momentum=0.1)
    y = torch(x)
    np.testing.assert_allclose(torch.running_var, 0.9 + 0.1 * x.var(0, ddof=1), rtol=1e-6)
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-5, atol=1e-6)
    assert torch.num_batches_tracked == 1
    torch.eval()
    before = torch.running_mean
    torch(x)
    np.testing.assert_array_equal(torch.running_mean, before)
