"""bnorm: batch normalization exactly as Keras and PyTorch define it, from Python.

The C++ library's kernels, layers and Keras file tools on NumPy arrays (docs/python.md):

    import numpy as np, bnorm
    model = bnorm.load_model("model.keras")
    y = model.predict(np.zeros((4, 10), np.float32))
    report = bnorm.inspect("model.keras")        # one dict per batch-normalization layer
"""

from .errors import (ArgumentError, Error, FileError, FormatError, NumericalError, ShapeError,
                     StateError)
from ._bnorm import (BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormalization, Layer, Model,
                     TorchBatchNorm, __version__, batch_norm_forward_inference,
                     batch_norm_forward_training, inspect, load_model, recalibrate)

__all__ = [
    "__version__",
    "batch_norm_forward_training", "batch_norm_forward_inference",
    "Layer", "BatchNormalization", "TorchBatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
    "Model", "load_model", "inspect", "recalibrate",
    "Error", "ArgumentError", "ShapeError", "NumericalError", "StateError", "FileError",
    "FormatError",
]
