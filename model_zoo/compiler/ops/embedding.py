"""nn.Embedding: a row lookup whose gradient scatters-adds rows back into the table.

The gradient stays `SparseRows` so a tied output layer's rows are scattered with it, once."""

from __future__ import annotations

from ..gradients import SparseRows
from .base import Op


class Embedding(Op):
    """y = W[ids] for ids int64 [...], W [V, D]; y [..., D].

    The gradient keeps the table's shape [V, D]; rows of `padding_idx` get none, as in
    PyTorch.
    """

    def __init__(self, num_embeddings: int, dim: int, padding_idx: int | None):
        self.num_embeddings, self.dim, self.padding_idx = num_embeddings, dim, padding_idx

    def forward(self, g, inputs, training):
        ids, w = inputs
        self.ids = ids
        return g.op("Gather", w, ids, axis=0)

    def backward(self, g, grad_outputs, needs_grad):
        (dy,) = grad_outputs
        if not needs_grad[1]:
            return [None, None]
        ids = g.op("Reshape", self.ids, g.ints(-1, 1))
        updates = g.op("Reshape", dy, g.ints(-1, self.dim))
        if self.padding_idx is not None:
            keep = g.op("Cast", g.op("Not", g.op("Equal", ids, g.ints(self.padding_idx))), to=1)
            updates = g.op("Mul", updates, keep)
        return [None, SparseRows(ids, updates, (self.num_embeddings, self.dim))]
