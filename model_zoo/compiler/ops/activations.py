"""Pointwise activations; each backward uses the forward's output where it can."""

from __future__ import annotations

import math
from dataclasses import replace

from ..gradients import Unpooled
from .base import Op


class Relu(Op):
    structured_gradients = (Unpooled,)

    def forward(self, g, inputs, training):
        self.y = g.op("Relu", inputs[0])
        return self.y

    def backward(self, g, grad_outputs, needs_grad):
        (dy,) = grad_outputs
        if isinstance(dy, Unpooled):
            # a max-pool of this output: its gradient reaches only the arg-max elements,
            # whose values are the pool's output, so the mask is taken at the pooled size
            return [replace(dy, grad=_times_positive(g, dy.grad, dy.pooled))]
        return [_times_positive(g, dy, self.y)]


def _times_positive(g, dy: str, y: str) -> str:
    """dy where y > 0, else 0: a float mask and Mul (Where with a scalar branch runs
    element by element in ONNX Runtime, several times slower; docs/benchmarks.md)."""
    return g.op("Mul", dy, g.op("Cast", g.op("Greater", y, g.const(0.0)), to=1))


class _SlopeFromOutput(Op):
    """y = onnx_op(x), whose derivative is a function of y alone: dx = dy * slope(y)."""

    onnx_op: str

    def forward(self, g, inputs, training):
        self.y = g.op(self.onnx_op, inputs[0])
        return self.y

    def backward(self, g, grad_outputs, needs_grad):
        return [g.op("Mul", grad_outputs[0], self.slope(g, self.y))]


class Tanh(_SlopeFromOutput):
    onnx_op = "Tanh"

    @staticmethod
    def slope(g, y):  # 1 - y^2
        return g.op("Sub", g.const(1.0), g.op("Mul", y, y))


class Sigmoid(_SlopeFromOutput):
    onnx_op = "Sigmoid"

    @staticmethod
    def slope(g, y):  # y (1 - y)
        return g.op("Mul", y, g.op("Sub", g.const(1.0), y))


class Gelu(Op):
    """Exact GELU: x * Phi(x); d/dx = Phi(x) + x * phi(x)."""

    def forward(self, g, inputs, training):
        x = self.x = inputs[0]
        self.cdf = g.op(
            "Mul",
            g.const(0.5),
            g.op("Add", g.const(1.0), g.op("Erf", g.op("Mul", x, g.const(1 / math.sqrt(2))))),
        )
        return g.op("Mul", x, self.cdf)

    def backward(self, g, grad_outputs, needs_grad):
        x = self.x
        pdf = g.op(
            "Mul",
            g.const(1 / math.sqrt(2 * math.pi)),
            g.op("Exp", g.op("Mul", g.const(-0.5), g.op("Mul", x, x))),
        )
        slope = g.op("Add", self.cdf, g.op("Mul", x, pdf))
        return [g.op("Mul", grad_outputs[0], slope)]
