"""nn.LayerNorm over the last dimension."""

from __future__ import annotations

from .base import Op, flatten_last


class LayerNorm(Op):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta, statistics over the last axis [D]."""

    def __init__(self, dim: int, eps: float, affine: bool):
        self.dim, self.eps, self.affine = dim, eps, affine

    def forward(self, g, inputs, training):
        x = inputs[0]
        mean = g.op("ReduceMean", x, g.ints(-1), keepdims=1)
        centred = g.op("Sub", x, mean)
        var = g.op("ReduceMean", g.op("Mul", centred, centred), g.ints(-1), keepdims=1)
        self.rstd = g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, g.const(self.eps))))
        self.xhat = g.op("Mul", centred, self.rstd)
        if not self.affine:
            return self.xhat
        self.gamma = inputs[1]
        return g.op("Add", g.op("Mul", self.xhat, inputs[1]), inputs[2])

    def backward(self, g, grad_outputs, needs_grad):
        dy = grad_outputs[0]
        grads = [None] * (3 if self.affine else 1)
        dxhat = g.op("Mul", dy, self.gamma) if self.affine else dy
        if needs_grad[0]:
            mean_d = g.op("ReduceMean", dxhat, g.ints(-1), keepdims=1)
            mean_dx = g.op("ReduceMean", g.op("Mul", dxhat, self.xhat), g.ints(-1), keepdims=1)
            inner = g.op("Sub", g.op("Sub", dxhat, mean_d), g.op("Mul", self.xhat, mean_dx))
            grads[0] = g.op("Mul", self.rstd, inner)
        if self.affine:
            dy2 = flatten_last(g, dy, self.dim)
            if needs_grad[1]:
                prod = flatten_last(g, g.op("Mul", dy, self.xhat), self.dim)
                grads[1] = g.op("ReduceSum", prod, g.ints(0), keepdims=0)
            if needs_grad[2]:
                grads[2] = g.op("ReduceSum", dy2, g.ints(0), keepdims=0)
        return grads
