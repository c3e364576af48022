"""ATen ops that move, select or create elements: views, concatenation, slicing,
indexing, gather/scatter, and tensors made from sizes (full, arange)."""

from __future__ import annotations

import torch

from ..ops.base import UnsupportedError
from .lowering import Lowering, lowers

aten = torch.ops.aten
INT64_MAX = 2**63 - 1


def _dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


@lowers(aten.view.default, aten._unsafe_view.default, aten.reshape.default)
def _view(ctx: Lowering, node, x, size):
    return ctx.g.op("Reshape", x, ctx.sizes(size))


@lowers(aten.permute.default)
def _permute(ctx, node, x, dims):
    rank = ctx.rank(node)
    return ctx.g.op("Transpose", x, perm=[_dim(d, rank) for d in dims])


@lowers(aten.t.default)
def _t(ctx, node, x):
    return x if ctx.rank(node) < 2 else ctx.g.op("Transpose", x, perm=[1, 0])


@lowers(aten.transpose.int)
def _transpose(ctx, node, x, d0, d1):
    rank = ctx.rank(node)
    perm = list(range(rank))
    d0, d1 = _dim(d0, rank), _dim(d1, rank)
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return ctx.g.op("Transpose", x, perm=perm)


@lowers(aten.expand.default)
def _expand(ctx, node, x, size, implicit=False):
    # ONNX Expand broadcasts both ways: 1 keeps the input's size, as -1 does in PyTorch
    return ctx.g.op(
        "Expand", x, ctx.sizes([1 if isinstance(s, int) and s == -1 else s for s in size])
    )


@lowers(aten.unsqueeze.default)
def _unsqueeze(ctx, node, x, dim):
    return ctx.g.op("Unsqueeze", x, ctx.g.ints(_dim(dim, ctx.rank(node))))


@lowers(aten.squeeze.dims, aten.squeeze.dim, aten.squeeze.default)
def _squeeze(ctx, node, x, dims=None):
    shape = node.args[0].meta["val"].shape
    rank = len(shape)
    dims = range(rank) if dims is None else [dims] if isinstance(dims, int) else dims
    dims = [
        _dim(d, rank)
        for d in dims
        if isinstance(shape[_dim(d, rank)], int) and shape[_dim(d, rank)] == 1
    ]
    return ctx.g.op("Squeeze", x, ctx.g.ints(*dims)) if dims else x


@lowers(aten.cat.default)
def _cat(ctx, node, tensors, dim=0):
    vals = [a.meta["val"] for a in node.args[0]]
    rank = ctx.rank(node)
    keep = [t for t, v in zip(tensors, vals) if not (v.dim() == 1 and v.shape[0] == 0)]
    dtype = ctx.dtype(node)
    keep = [ctx.tensor(t, dtype) for t in keep]
    return keep[0] if len(keep) == 1 else ctx.g.op("Concat", *keep, axis=_dim(dim, rank))


@lowers(aten.split_with_sizes.default)
def _split_with_sizes(ctx, node, x, sizes, dim=0):
    if not all(isinstance(s, int) for s in sizes):
        raise UnsupportedError("split into sizes that depend on the batch or sequence length")
    rank = ctx.rank(node.args[0])
    return tuple(ctx.g.op("Split", x, ctx.g.ints(*sizes), axis=_dim(dim, rank), outputs=len(sizes)))


@lowers(aten.split.Tensor)
def _split(ctx, node, x, size, dim=0):
    total = node.args[0].meta["val"].shape[dim]
    if not isinstance(total, int):
        raise UnsupportedError("split along a dynamic dimension")
    sizes = [min(size, total - s) for s in range(0, total, size)]
    rank = ctx.rank(node.args[0])
    out = ctx.g.op("Split", x, ctx.g.ints(*sizes), axis=_dim(dim, rank), outputs=len(sizes))
    return tuple(out) if isinstance(out, list) else (out,)


@lowers(aten.select.int)
def _select(ctx, node, x, dim, index):
    rank = ctx.rank(node.args[0])
    return ctx.g.op("Gather", x, ctx.tensor(index, torch.int64), axis=_dim(dim, rank))


@lowers(aten.slice.Tensor)
def _slice(ctx, node, x, dim=0, start=None, end=None, step=1):
    rank = ctx.rank(node.args[0])
    start = 0 if start is None else start
    end = INT64_MAX if end is None else end
    return ctx.g.op(
        "Slice",
        x,
        ctx.sizes([start]),
        ctx.sizes([end]),
        ctx.g.ints(_dim(dim, rank)),
        ctx.g.ints(step),
    )


def _positions(ctx, base: str, dim: int, start, end, step):
    """int64 [L]: the indices start, start + step, ... < end along `dim` (PyTorch's slice
    clamping, negative start/end counted from the end)."""
    g = ctx.g
    size = ctx.dim(base, dim)

    def norm(v, default):
        if v is None:
            return default
        if isinstance(v, int):
            if v >= INT64_MAX // 2:
                return size
            return g.ints(v) if v >= 0 else g.op("Add", size, g.const(v, "int64"))
        return v

    begin = g.op("Reshape", norm(start, g.const(0, "int64")), g.ints(-1))
    finish = g.op(
        "Min", g.op("Reshape", norm(end, size), g.ints(-1)), g.op("Reshape", size, g.ints(-1))
    )
    begin = g.op("Squeeze", g.op("Max", g.op("Min", begin, finish), g.ints(0)), g.ints(0))
    finish = g.op("Squeeze", finish, g.ints(0))
    return g.op("Range", begin, finish, g.const(step, "int64"))


def _along(ctx, idx: str, dim: int, rank: int, like: str) -> str:
    """Indices [L] placed on axis `dim` and broadcast to the shape of `like`."""
    shape = [1] * rank
    shape[dim] = -1
    return ctx.g.op("Expand", ctx.g.op("Reshape", idx, ctx.g.ints(*shape)), ctx.shape(like))


@lowers(aten.slice_scatter.default)
def _slice_scatter(ctx, node, base, src, dim=0, start=None, end=None, step=1):
    rank = ctx.rank(node)
    dim = _dim(dim, rank)
    src = ctx.tensor(src, ctx.dtype(node))
    idx = _along(ctx, _positions(ctx, base, dim, start, end, step), dim, rank, src)
    return ctx.g.op("ScatterElements", base, idx, src, axis=dim)


@lowers(aten.select_scatter.default)
def _select_scatter(ctx, node, base, src, dim, index):
    rank = ctx.rank(node)
    dim = _dim(dim, rank)
    src = ctx.g.op("Unsqueeze", ctx.tensor(src, ctx.dtype(node)), ctx.g.ints(dim))
    size = ctx.dim(base, dim)
    i = ctx.tensor(index, torch.int64)
    i = ctx.g.op("Mod", ctx.g.op("Add", i, size), size)  # negative index from the end
    idx = _along(ctx, ctx.g.op("Reshape", i, ctx.g.ints(1)), dim, rank, src)
    return ctx.g.op("ScatterElements", base, idx, src, axis=dim)


@lowers(aten.flip.default)
def _flip(ctx, node, x, dims):
    rank = ctx.rank(node)
    dims = [_dim(d, rank) for d in dims]
    n = len(dims)
    return ctx.g.op(
        "Slice",
        x,
        ctx.g.ints(*[-1] * n),
        ctx.g.ints(*[-INT64_MAX] * n),
        ctx.g.ints(*dims),
        ctx.g.ints(*[-1] * n),
    )


@lowers(aten.repeat.default)
def _repeat(ctx, node, x, repeats):
    rank = ctx.rank(node.args[0])
    extra = len(repeats) - rank
    if extra > 0:
        x = ctx.g.op("Unsqueeze", x, ctx.g.ints(*range(extra)))
    return ctx.g.op("Tile", x, ctx.sizes(repeats))


@lowers(aten.gather.default)
def _gather(ctx, node, x, dim, index, sparse_grad=False):
    return ctx.g.op("GatherElements", x, index, axis=_dim(dim, ctx.rank(node)))


@lowers(
    aten.scatter.src,
    aten.scatter.value,
    aten.scatter_add.default,
    aten.scatter.reduce,
    aten.scatter.value_reduce,
)
def _scatter(ctx, node, x, dim, index, src, reduce=None):
    dtype = ctx.dtype(node)
    if not isinstance(src, str) or node.target in (aten.scatter.value, aten.scatter.value_reduce):
        src = ctx.g.op("Expand", ctx.tensor(src, dtype), ctx.shape(index))
    reduction = (
        "add"
        if node.target == aten.scatter_add.default or reduce == "add"
        else "mul"
        if reduce == "multiply"
        else "none"
    )
    return ctx.g.op(
        "ScatterElements",
        x,
        index,
        ctx.tensor(src, dtype),
        axis=_dim(dim, ctx.rank(node)),
        reduction=reduction,
    )


@lowers(aten.index_select.default)
def _index_select(ctx, node, x, dim, index):
    return ctx.g.op("Gather", x, index, axis=_dim(dim, ctx.rank(node)))


def _index_tensors(ctx, node, indices):
    """The index tensors (Nones left out) -> int64 [..., k] for GatherND/ScatterND."""
    idx = []
    for i, arg in zip(indices, node.args[1]):
        if i is None:
            continue
        if arg.meta["val"].dtype == torch.bool:
            raise UnsupportedError(
                "indexing with a boolean mask (its result's size depends on "
                "the data); use torch.where or masked_fill"
            )
        idx.append(ctx.g.op("Unsqueeze", ctx.tensor(i, torch.int64), ctx.g.ints(-1)))
    if len(idx) == 1:
        return idx[0]
    shape = ctx.g.op("Shape", ctx.g.op("Sum", *[ctx.g.op("Cast", i, to=1) for i in idx]))
    return ctx.g.op("Concat", *[ctx.g.op("Expand", i, shape) for i in idx], axis=-1)


class _Indexing:
    """x[indices] with None (a whole dimension) anywhere among the index tensors, as
    PyTorch lays it out: the indexed dimensions move to the front (a Transpose), GatherND
    or ScatterND works on them there, and the result's index dimensions go where PyTorch
    puts them: in place of the indexed dimensions when those are adjacent, else first."""

    def __init__(self, ctx, node, indices):
        rank = ctx.rank(node.args[0].meta["val"])
        self.picked = [d for d, i in enumerate(indices) if i is not None]
        rest = [d for d in range(rank) if d not in self.picked]
        self.perm = self.picked + rest  # x with the indexed dimensions first
        adjacent = self.picked == list(range(self.picked[0], self.picked[-1] + 1))
        self.at = self.picked[0] if adjacent else 0  # where PyTorch puts the index dims
        vals = [a.meta["val"] for a, i in zip(node.args[1], indices) if i is not None]
        self.index_rank = len(torch.broadcast_shapes(*[v.shape for v in vals]))
        self.rest = len(rest)

    @property
    def moves(self) -> bool:
        return self.perm != list(range(len(self.perm)))

    def front(self) -> list[int]:
        """Result layout [index dims, rest] -> PyTorch's layout."""
        b, at = self.index_rank, self.at
        return list(range(b, b + at)) + list(range(b)) + list(range(b + at, b + self.rest))


@lowers(aten.index.Tensor)
def _index(ctx, node, x, indices):
    present = [i for i in indices if i is not None]
    d = indices.index(present[0])
    if len(present) == 1 and node.args[1][d].meta["val"].dtype != torch.bool:
        return ctx.g.op("Gather", x, ctx.tensor(present[0], torch.int64), axis=d)
    plan = _Indexing(ctx, node, indices)
    if plan.moves:
        x = ctx.g.op("Transpose", x, perm=plan.perm)
    y = ctx.g.op("GatherND", x, _index_tensors(ctx, node, indices))
    front = plan.front()
    return ctx.g.op("Transpose", y, perm=front) if front != sorted(front) else y


@lowers(aten.index_put.default)
def _index_put(ctx, node, x, indices, values, accumulate=False):
    dtype = ctx.dtype(node)
    if (
        len(indices) == 1
        and indices[0] is not None
        and node.args[1][0].meta["val"].dtype == torch.bool
    ):
        return _masked_put(ctx, node, x, indices[0], values, accumulate, dtype)
    idx = _index_tensors(ctx, node, indices)
    plan = _Indexing(ctx, node, indices)
    rank = ctx.rank(node)
    xt = ctx.g.op("Transpose", x, perm=plan.perm) if plan.moves else x
    k = len(plan.picked)
    # the values broadcast to x[indices] (PyTorch's layout), then laid out as
    # idx.shape[:-1] + xt.shape[k:], the updates ScatterND takes
    index_shape = ctx.g.op("Slice", ctx.shape(idx), ctx.g.ints(0), ctx.g.ints(-1))
    rest_shape = ctx.g.op("Slice", ctx.shape(xt), ctx.g.ints(k), ctx.g.ints(rank))
    front = plan.front()
    if front == sorted(front):
        target = ctx.g.op("Concat", index_shape, rest_shape, axis=0)
        updates = ctx.g.op("Expand", ctx.tensor(values, dtype), target)
    else:
        at = plan.at
        target = ctx.g.op(
            "Concat",
            ctx.g.op("Slice", rest_shape, ctx.g.ints(0), ctx.g.ints(at)),
            index_shape,
            ctx.g.op("Slice", rest_shape, ctx.g.ints(at), ctx.g.ints(rank)),
            axis=0,
        )
        updates = ctx.g.op("Expand", ctx.tensor(values, dtype), target)
        back = [front.index(i) for i in range(len(front))]
        updates = ctx.g.op("Transpose", updates, perm=back)
    y = ctx.g.op("ScatterND", xt, idx, updates, reduction="add" if accumulate else "none")
    if plan.moves:
        y = ctx.g.op("Transpose", y, perm=[plan.perm.index(i) for i in range(rank)])
    return y


def _masked_put(ctx, node, x, mask, values, accumulate, dtype):
    """x[mask] = v (or += v) for one value broadcast to every selected element."""
    if node.args[2].meta["val"].numel() != 1:
        raise UnsupportedError(
            "assigning a tensor of values through a boolean mask (their "
            "number depends on the data); assign one value or use "
            "torch.where"
        )
    mask_rank = node.args[1][0].meta["val"].dim()
    if mask_rank < ctx.rank(node):
        mask = ctx.g.op("Unsqueeze", mask, ctx.g.ints(*range(mask_rank, ctx.rank(node))))
    value = ctx.g.op("Reshape", ctx.tensor(values, dtype), ctx.g.ints(*[1] * ctx.rank(node)))
    if accumulate:
        value = ctx.g.op("Add", x, value)
    return ctx.g.op("Where", mask, value, x)


@lowers(aten.constant_pad_nd.default)
def _pad(ctx, node, x, pad, value=0):
    rank = ctx.rank(node)
    begins, ends = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):
        begins[rank - 1 - i], ends[rank - 1 - i] = pad[2 * i], pad[2 * i + 1]
    if not all(isinstance(p, int) for p in begins + ends):
        raise UnsupportedError("padding by a size that depends on the batch or sequence length")
    crop = [d for d in range(rank) if begins[d] < 0 or ends[d] < 0]
    if crop:  # negative padding crops (the backward of padding): a Slice
        starts = [max(0, -begins[d]) for d in crop]
        stops = [ends[d] if ends[d] < 0 else INT64_MAX for d in crop]
        x = ctx.g.op("Slice", x, ctx.g.ints(*starts), ctx.g.ints(*stops), ctx.g.ints(*crop))
        begins, ends = [max(0, b) for b in begins], [max(0, e) for e in ends]
    if not any(begins + ends):
        return x if crop else ctx.g.op("Identity", x)
    return ctx.g.op("Pad", x, ctx.g.ints(*(begins + ends)), ctx.tensor(value, ctx.dtype(node)))


# -- tensors made from sizes ------------------------------------------------------------
@lowers(aten.full.default, aten.new_full.default)
def _full(ctx, node, *args):
    size, value = (args[0], args[1]) if node.target == aten.full.default else (args[1], args[2])
    return ctx.g.op("Expand", ctx.tensor(value, ctx.dtype(node)), ctx.sizes(size))


@lowers(
    aten.zeros.default,
    aten.empty.memory_format,
    aten.empty_permuted.default,
    aten.new_zeros.default,
    aten.new_empty.default,
    aten.new_empty_strided.default,
    aten.empty_strided.default,
)
def _zeros(ctx, node, *args):
    # empty tensors are zeros here; the strides of *_strided do not matter to ONNX
    methods = (aten.new_zeros.default, aten.new_empty.default, aten.new_empty_strided.default)
    size = args[1] if node.target in methods else args[0]
    return ctx.g.op("Expand", ctx.tensor(0, ctx.dtype(node)), ctx.sizes(size))


@lowers(aten.ones.default, aten.new_ones.default)
def _ones(ctx, node, *args):
    size = args[1] if node.target == aten.new_ones.default else args[0]
    return ctx.g.op("Expand", ctx.tensor(1, ctx.dtype(node)), ctx.sizes(size))


@lowers(
    aten.full_like.default, aten.zeros_like.default, aten.ones_like.default, aten.empty_like.default
)
def _full_like(ctx, node, x, *args):
    value = (
        args[0]
        if node.target == aten.full_like.default
        else 1
        if node.target == aten.ones_like.default
        else 0
    )
    return ctx.g.op("Expand", ctx.tensor(value, ctx.dtype(node)), ctx.shape(x))


@lowers(aten.scalar_tensor.default)
def _scalar_tensor(ctx, node, value, *rest):
    return ctx.g.op("Identity", ctx.tensor(value, ctx.dtype(node)))


@lowers(aten.arange.start_step, aten.arange.default, aten.arange.start)
def _arange(ctx, node, *args):
    dtype = ctx.dtype(node)
    if node.target == aten.arange.default:
        start, end, step = 0, args[0], 1
    elif node.target == aten.arange.start:
        start, end, step = args[0], args[1], 1
    else:
        start, end, step = args[0], args[1], args[2] if args[2] is not None else 1
    # ONNX's Range counts in these types only (torch.eye counts in uint8, for one)
    counted = (
        dtype
        if dtype in _RANGE_TYPES
        else (torch.float32 if dtype.is_floating_point else torch.int64)
    )
    out = ctx.g.op(
        "Range", ctx.tensor(start, counted), ctx.tensor(end, counted), ctx.tensor(step, counted)
    )
    if counted != dtype:
        ctx.types[out] = counted
        out = ctx.cast(out, dtype)
    return out


_RANGE_TYPES = (torch.float32, torch.float64, torch.int16, torch.int32, torch.int64)
