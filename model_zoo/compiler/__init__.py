"""The training-bundle compiler: PyTorch module + loss + optimizer -> plain ONNX graphs."""

from .bundle import FORMAT_VERSION, compile_bundle
from .losses import CrossEntropy
from .ops.base import UnsupportedError
from .ops.dropout import dropout_keep_mask, normal_noise, uniform_noise
from .optimizers import SGD, Adam

__all__ = [
    "FORMAT_VERSION",
    "compile_bundle",
    "CrossEntropy",
    "UnsupportedError",
    "dropout_keep_mask",
    "normal_noise",
    "uniform_noise",
    "SGD",
    "Adam",
]
