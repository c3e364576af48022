"""nn.MaxPool2d: the gradient goes to the arg-max element of each window (as in PyTorch).

The arg-max comes from MaxPool's indices output: the first maximal element, PyTorch's tie
rule, which matters after ReLU and on images with flat backgrounds."""

from __future__ import annotations

from ..gradients import Unpooled
from .base import Op


class MaxPool2d(Op):
    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]):
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, g, inputs, training):
        x = inputs[0]
        ph, pw = self.padding
        attrs = dict(
            kernel_shape=list(self.kernel), strides=list(self.stride), pads=[ph, pw, ph, pw]
        )
        if not training:
            return g.op("MaxPool", x, **attrs)
        self.shape = g.op("Shape", x)
        # Indices are flat positions in the NCHW input, so one scatter routes every grad
        self.y, self.indices = g.op("MaxPool", x, outputs=2, **attrs)
        return self.y

    def backward(self, g, grad_outputs, needs_grad):
        if all(s >= k for s, k in zip(self.stride, self.kernel)) and not any(self.padding):
            # windows do not overlap, so no input element takes two gradients: MaxUnpool
            # places them, faster than zeros + ScatterElements (docs/benchmarks.md)
            dy = grad_outputs[0]
            return [Unpooled(dy, self.indices, self.shape, self.kernel, self.stride, self.y)]
        numel = g.op("ReduceProd", self.shape, keepdims=1)
        zeros = g.op("ConstantOfShape", numel)
        flat = g.op(
            "ScatterElements",
            zeros,
            g.op("Reshape", self.indices, g.ints(-1)),
            g.op("Reshape", grad_outputs[0], g.ints(-1)),
            axis=0,
            reduction="add",
        )
        return [g.op("Reshape", flat, self.shape)]
