"""Elementwise add/sub/mul of two same-shaped tensors, or of a tensor and a Python number."""

from __future__ import annotations

from .base import Op


class Binary(Op):
    """op in {Add, Sub, Mul}; `scalar` replaces the second (or first) tensor operand."""

    def __init__(self, op_type: str, scalar: float | None = None, scalar_first: bool = False):
        self.op_type, self.scalar, self.scalar_first = op_type, scalar, scalar_first

    def _operands(self, g, inputs):
        if self.scalar is None:
            return inputs[0], inputs[1]
        c = g.const(float(self.scalar))
        return (c, inputs[0]) if self.scalar_first else (inputs[0], c)

    def forward(self, g, inputs, training):
        self.a, self.b = self._operands(g, inputs)
        return g.op(self.op_type, self.a, self.b)

    def backward(self, g, grad_outputs, needs_grad):
        dy = grad_outputs[0]
        if self.op_type == "Add":
            da, db = dy, dy
        elif self.op_type == "Sub":
            da, db = dy, g.op("Neg", dy)
        else:
            da, db = g.op("Mul", dy, self.b), g.op("Mul", dy, self.a)
        if self.scalar is None:
            return [da if needs_grad[0] else None, db if needs_grad[1] else None]
        return [db if self.scalar_first else da]
