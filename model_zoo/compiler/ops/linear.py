"""Affine maps: nn.Linear and F.linear (the latter also serves tied output embeddings)."""
from __future__ import annotations

from .base import Op, flatten_last


class Linear(Op):
    """y = x W^T + b for x [..., in], W [out, in], b [out] (optional)."""

    def __init__(self, in_features: int, out_features: int, has_bias: bool):
        self.in_features, self.out_features, self.has_bias = in_features, out_features, has_bias

    def forward(self, g, inputs, training):
        x, w = inputs[0], inputs[1]
        self.x, self.w = x, w
        y = g.op("MatMul", x, g.op("Transpose", w, perm=[1, 0]))
        if self.has_bias:
            y = g.op("Add", y, inputs[2])
        return y

    def backward(self, g, grad_outputs, needs_grad):
        (dy,) = grad_outputs
        grads = [None] * (3 if self.has_bias else 2)
        if needs_grad[0]:
            grads[0] = g.op("MatMul", dy, self.w)
        if needs_grad[1] or (self.has_bias and needs_grad[2]):
            dy2 = flatten_last(g, dy, self.out_features)
            if needs_grad[1]:
                x2 = flatten_last(g, self.x, self.in_features)
                grads[1] = g.op("Gemm", dy2, x2, transA=1)
            if self.has_bias and needs_grad[2]:
                grads[2] = g.op("ReduceSum", dy2, g.ints(0), keepdims=0)
        return grads
