"""Keras model files through the Python API: predict against Keras's own outputs
(tests/fixtures/keras_models.json, the tolerance of tests/io/keras_golden_test.cpp),
inspect, recalibrate, save, and the errors files give."""

import re

import numpy as np
import pytest

import bnorm
from conftest import FIXTURES, assert_close, load_fixture, tensor

MODELS = load_fixture("keras_models.json")
TOL = MODELS["tolerance"]


def model_files():
    return [pytest.param(case, f, id=f["file"]) for case in MODELS["cases"] for f in case["files"]]


@pytest.mark.parametrize("case,entry", model_files())
def test_predict_matches_keras(case, entry):
    if entry["load"] == "model":
        model = bnorm.load_model(str(FIXTURES / entry["file"]))
    else:
        model = bnorm.load_model(str(FIXTURES / entry["into"]))
        model.load_weights(str(FIXTURES / entry["file"]))
    y = model.predict(tensor(case["input"]))
    assert_close(y, entry["output"], TOL["rtol"], TOL["atol"], entry["file"])


def test_model_layers_summary_and_call():
    model = bnorm.load_model(str(FIXTURES / "models/mlp.keras"))
    assert model.layer_names == ["d_in", "bn", "act", "drop", "d_out"]
    assert [layer.name for layer in model.layers] == model.layer_names
    bn = model.get_layer("bn")
    assert isinstance(bn, bnorm.BatchNormalization) and bn.moving_mean.shape == (16,)
    assert "bn" in model.summary() and "BatchNormalization" in model.summary()
    x = tensor(MODELS["cases"][0]["input"])
    np.testing.assert_array_equal(model(x), model.predict(x, batch_size=len(x)))


def test_inspect_returns_the_facts_of_the_cli():
    report = bnorm.inspect(str(FIXTURES / "models/mlp.keras"))
    assert len(report) == 1
    bn = report[0]
    assert bn["name"] == "bn" and bn["class_name"] == "BatchNormalization" and bn["convention"] == "keras"
    assert bn["channels"] == 16 and bn["momentum"] == pytest.approx(0.99) and bn["epsilon"] == pytest.approx(1e-3)
    assert bn["updates"] == 6 and bn["updates_source"] == "estimated from optimizer iterations"
    assert {"count", "non_finite", "min", "mean", "max"} <= set(bn["moving_mean"])
    assert bn["moving_variance"]["count"] == 16
    assert [w["kind"] for w in bn["warnings"]] == ["short-memory"]
    # A loaded model gives the same report.
    model = bnorm.load_model(str(FIXTURES / "models/mlp.keras"))
    assert bnorm.inspect(model)[0]["moving_mean"] == bn["moving_mean"]


def test_recalibrate_stores_population_statistics(tmp_path):
    model = bnorm.load_model(str(FIXTURES / "models/bn_center_scale.keras"))
    rng = np.random.default_rng(3)
    shape = (50,) + tuple(tensor(MODELS["cases"][3]["input"]).shape[1:])
    x = rng.standard_normal(shape).astype(np.float32)
    report = bnorm.recalibrate(model, x, batch_size=16)
    assert report and all(r["recalibrated"] for r in report)
    first = report[0]
    bn = model.layers[first["index"]]
    np.testing.assert_array_equal(bn.moving_mean, first["new_mean"])
    np.testing.assert_array_equal(bn.moving_variance, first["new_variance"])
    # The file written keeps the recalibrated statistics.
    path = tmp_path / "recalibrated.keras"
    model.save(str(path))
    again = bnorm.load_model(str(path))
    np.testing.assert_array_equal(again.layers[first["index"]].moving_mean, first["new_mean"])
    np.testing.assert_allclose(again.predict(x), model.predict(x), rtol=1e-6, atol=1e-6)


def test_file_errors_are_python_exceptions(tmp_path):
    missing = tmp_path / "missing.keras"
    with pytest.raises(bnorm.FileError) as info:
        bnorm.load_model(str(missing))
    assert isinstance(info.value, OSError) and isinstance(info.value, bnorm.Error)
    assert str(missing) in str(info.value)
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a model")
    with pytest.raises(bnorm.FormatError) as info:
        bnorm.load_model(str(garbage))
    assert isinstance(info.value, ValueError) and str(garbage) in str(info.value)
    with pytest.raises(bnorm.FormatError, match="Conv3D"):
        bnorm.load_model(str(FIXTURES / "models/unsupported_conv3d.keras"))
    model = bnorm.load_model(str(FIXTURES / "models/mlp.keras"))
    with pytest.raises(bnorm.ShapeError):
        model.predict(np.zeros((2, 7), np.float32))


def test_version_is_the_cmake_project_version():
    cmake = (FIXTURES.parents[1] / "CMakeLists.txt").read_text()
    version = re.search(r"project\(bnorm VERSION ([0-9.]+)", cmake).group(1)
    assert bnorm.__version__ == version
