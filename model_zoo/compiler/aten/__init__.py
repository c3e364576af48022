"""The general path: any train step PyTorch can capture, lowered op by op to plain ONNX.

`capture` exports the step to core ATen; `lowering` walks the FX graph through one
registry (ATen op -> lowering, filled by the op-family modules imported below); `plan`
assembles the train/eval/infer graphs around it with the optimizer update.
"""

from . import loss, nn, pointwise, recurrent, reduce, shape  # noqa: F401 - they fill the registry
from .lowering import LOWERINGS, supported_ops

__all__ = ["LOWERINGS", "supported_ops"]
