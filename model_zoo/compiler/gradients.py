"""Gradients that are cheaper kept in factored form than written out as one tensor.

Backpropagation passes tensor names between lowerings; four gradients are worth passing
as structure instead, because the op that consumes them can skip a full pass over a large
tensor:

- `RowScaled`: the gradient of cross-entropy w.r.t. the logits, s * (softmax - onehot)
  with a scale s per row. A Linear producing the logits applies s to its small [N, in]
  operands instead of making another pass over the [N, C] tensor.
- `SparseRows`: a gradient that is zero except in a few rows (embedding lookups); rows
  are scattered into the dense sum of the other terms, with no zero table written.
- `Product`: a weight gradient op(a) @ op(b) not yet computed; plain SGD folds it into
  the update as one Gemm, new_p = p - op(a) @ op(b), instead of writing the gradient out.
- `Unpooled`: a max-pool's input gradient before MaxUnpool places it; a ReLU before the
  pool applies its mask at the pooled size.

`accumulate` sums a parameter's or tensor's gradient terms; `dense` writes any of them out.
"""

from __future__ import annotations

from dataclasses import dataclass

from .graph import GraphBuilder


@dataclass(frozen=True)
class RowScaled:
    """The gradient scale * base of flattened logits: base float32 [N, C], scale float32
    [N, 1]; logits_shape is the int64 shape of the unflattened logits it is for (None:
    the logits are [N, C]).

    Cross-entropy gives base = softmax - onehot(target) and scale = mask / count; a Linear
    producing the logits applies the scale to its [N, in] operands, not to [N, C].
    """

    base: str
    scale: str
    logits_shape: str | None

    def dense(self, g: GraphBuilder) -> str:
        flat = g.op("Mul", self.base, self.scale)
        return flat if self.logits_shape is None else g.op("Reshape", flat, self.logits_shape)


@dataclass(frozen=True)
class SparseRows:
    """A gradient of static shape `shape` that is zero but for `updates` [K, *shape[1:]]
    added at rows `ids` int64 [K, 1] (repeated ids add up)."""

    ids: str
    updates: str
    shape: tuple[int, ...]

    def dense(self, g: GraphBuilder) -> str:
        zeros = g.op("ConstantOfShape", g.ints(*self.shape))
        return add_rows(g, zeros, self.ids, self.updates, len(self.shape))


def add_rows(g: GraphBuilder, total: str, ids: str, updates: str, rank: int) -> str:
    """total with updates [K, *rest] added at rows ids int64 [K, 1], in order.

    For rank 2, ScatterElements with the ids repeated along the row: ONNX Runtime runs it
    in place on `total`, where ScatterND copies `total` first (docs/compiler.md, factored
    gradients); each element takes its additions in the same order."""
    if rank != 2:
        return g.op("ScatterND", total, ids, updates, reduction="add")
    ids = g.op("Expand", ids, g.op("Shape", updates))
    return g.op("ScatterElements", total, ids, updates, axis=0, reduction="add")


@dataclass(frozen=True)
class Product:
    """The gradient op(a) @ op(b) for 2-D a and b, op = transpose where asked."""

    a: str
    b: str
    trans_a: bool = False
    trans_b: bool = False

    def dense(self, g: GraphBuilder) -> str:
        return self.gemm(g)

    def gemm(self, g: GraphBuilder, c: str | None = None, alpha: float = 1.0) -> str:
        """alpha * op(a) @ op(b) (+ c)."""
        attrs = dict(transA=int(self.trans_a), transB=int(self.trans_b))
        if c is None:
            return g.op("Gemm", self.a, self.b, alpha=alpha, **attrs)
        return g.op("Gemm", self.a, self.b, c, alpha=alpha, beta=1.0, **attrs)


@dataclass(frozen=True)
class Unpooled:
    """The gradient of a max-pool's input when its windows do not overlap: `grad`
    float32 [N, C, H', W'] placed at `indices` (MaxPool's flat arg-max positions) of
    zeros of shape `shape` (int64). `pooled` is the max-pool's output, the input's value
    at each of those positions: a ReLU before the pool masks `grad` with it, a quarter
    of the elements for a 2 x 2 pool, instead of the unpooled gradient."""

    grad: str
    indices: str
    shape: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pooled: str

    def dense(self, g: GraphBuilder) -> str:
        return g.op(
            "MaxUnpool",
            self.grad,
            self.indices,
            self.shape,
            kernel_shape=list(self.kernel),
            strides=list(self.stride),
        )


Gradient = str | RowScaled | SparseRows | Product | Unpooled


def dense(g: GraphBuilder, grad: Gradient) -> str:
    return grad if isinstance(grad, str) else grad.dense(g)


def accumulate(g: GraphBuilder, terms: list[Gradient]) -> Gradient:
    """The sum of gradient terms; a single term is returned as it is (maybe structured).

    Sparse rows of all terms are scattered once into the sum of the dense terms.
    """
    if len(terms) == 1:
        return terms[0]
    sparse = [t for t in terms if isinstance(t, SparseRows)]
    dense_terms = [dense(g, t) for t in terms if not isinstance(t, SparseRows)]
    if not dense_terms:
        total = sparse[0].dense(g)
        sparse = sparse[1:]
    else:
        total = dense_terms[0] if len(dense_terms) == 1 else g.op("Sum", *dense_terms)
    if not sparse:
        return total
    ids = sparse[0].ids if len(sparse) == 1 else g.op("Concat", *[s.ids for s in sparse], axis=0)
    updates = (
        sparse[0].updates
        if len(sparse) == 1
        else g.op("Concat", *[s.updates for s in sparse], axis=0)
    )
    return add_rows(g, total, ids, updates, len(sparse[0].shape))
