"""Shape-only ops: flatten, reshape, transpose/permute. Gradients undo the reshuffle."""

from __future__ import annotations

from .base import Op


class Flatten(Op):
    """torch.flatten(x, start_dim) with end_dim=-1: [d0..d(s-1), rest] -> 2-D when s=1."""

    def __init__(self, start_dim: int):
        self.start_dim = start_dim

    def forward(self, g, inputs, training):
        x = inputs[0]
        self.shape = g.op("Shape", x)
        if self.start_dim == 1:
            return g.op("Flatten", x, axis=1)
        lead = g.op("Slice", self.shape, g.ints(0), g.ints(self.start_dim))
        return g.op("Reshape", x, g.op("Concat", lead, g.ints(-1), axis=0))

    def backward(self, g, grad_outputs, needs_grad):
        return [g.op("Reshape", grad_outputs[0], self.shape)]


class Reshape(Op):
    """x.view/reshape with constant sizes (-1 allowed)."""

    def __init__(self, sizes: tuple[int, ...]):
        self.sizes = sizes

    def forward(self, g, inputs, training):
        self.shape = g.op("Shape", inputs[0])
        return g.op("Reshape", inputs[0], g.ints(*self.sizes))

    def backward(self, g, grad_outputs, needs_grad):
        return [g.op("Reshape", grad_outputs[0], self.shape)]


class Transpose(Op):
    def __init__(self, perm: tuple[int, ...]):
        self.perm = list(perm)

    def forward(self, g, inputs, training):
        return g.op("Transpose", inputs[0], perm=self.perm)

    def backward(self, g, grad_outputs, needs_grad):
        inverse = [self.perm.index(i) for i in range(len(self.perm))]
        return [g.op("Transpose", grad_outputs[0], perm=inverse)]


class Identity(Op):
    """Ops that are the identity in the compiled graphs (e.g. .contiguous(), eval dropout)."""

    def forward(self, g, inputs, training):
        return inputs[0]

    def backward(self, g, grad_outputs, needs_grad):
        return [grad_outputs[0]]
