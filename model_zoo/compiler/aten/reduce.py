"""Reductions, softmax and cumulative sums."""

from __future__ import annotations

import torch

from ..ops.scan import scan
from .lowering import Lowering, lowers

aten = torch.ops.aten


def _axes(ctx: Lowering, node, dims):
    rank = ctx.rank(node.args[0])
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return list(range(rank))
    dims = [dims] if isinstance(dims, int) else dims
    return [d + rank if d < 0 else d for d in dims]


def reduction(onnx_op: str):
    def lower(ctx: Lowering, node, x, dims=None, keepdim=False, *rest):
        dtype = ctx.dtype(node)
        axes = _axes(ctx, node, dims)
        x = ctx.tensor(x, dtype)
        if not axes:  # a 0-d input
            return ctx.g.op("Identity", x)
        return ctx.g.op(onnx_op, x, ctx.g.ints(*axes), keepdims=int(bool(keepdim)))

    return lower


lowers(aten.sum.dim_IntList)(reduction("ReduceSum"))
lowers(aten.mean.dim)(reduction("ReduceMean"))
lowers(aten.amax.default)(reduction("ReduceMax"))
lowers(aten.amin.default)(reduction("ReduceMin"))
lowers(aten.prod.dim_int)(reduction("ReduceProd"))


@lowers(aten.sum.default, aten.mean.default)
def _all(ctx, node, x, *rest):
    op = "ReduceSum" if node.target == aten.sum.default else "ReduceMean"
    return ctx.g.op(op, ctx.tensor(x, ctx.dtype(node)), keepdims=0) if ctx.rank(node.args[0]) else x


@lowers(aten.any.dim, aten.any.dims, aten.any.default)
def _any(ctx, node, x, dims=None, keepdim=False):
    axes = _axes(ctx, node, dims)
    as_int = ctx.g.op("Cast", x, to=7)
    out = ctx.g.op("ReduceMax", as_int, ctx.g.ints(*axes), keepdims=int(bool(keepdim)))
    return ctx.g.op("Cast", out, to=9)


def _numeric(ctx, node, x):
    """ONNX's ArgMax and Reduce* take numbers, not booleans: flags go in as int32."""
    return ctx.cast(x, torch.int32) if ctx.dtype(node.args[0]) == torch.bool else x


@lowers(aten.max.dim, aten.min.dim)
def _max_dim(ctx, node, x, dim, keepdim=False):
    rank = ctx.rank(node.args[0])
    dim = dim + rank if dim < 0 else dim
    big = node.target == aten.max.dim
    flags = ctx.dtype(node.args[0]) == torch.bool
    x = _numeric(ctx, node, x)
    values = ctx.g.op(
        "ReduceMax" if big else "ReduceMin", x, ctx.g.ints(dim), keepdims=int(keepdim)
    )
    idx = ctx.g.op("ArgMax" if big else "ArgMin", x, axis=dim, keepdims=int(keepdim))
    return (ctx.cast(values, torch.bool) if flags else values), idx


@lowers(aten.max.default, aten.min.default)
def _max_all(ctx, node, x):
    op = "ReduceMax" if node.target == aten.max.default else "ReduceMin"
    out = ctx.g.op(op, _numeric(ctx, node, x), keepdims=0)
    return ctx.cast(out, torch.bool) if ctx.dtype(node) == torch.bool else out


@lowers(aten.argmax.default, aten.argmin.default)
def _argmax(ctx, node, x, dim=None, keepdim=False):
    op = "ArgMax" if node.target == aten.argmax.default else "ArgMin"
    x = _numeric(ctx, node, x)
    if dim is None:
        return ctx.g.op(op, ctx.g.op("Reshape", x, ctx.g.ints(-1)), axis=0, keepdims=0)
    return ctx.g.op(op, x, axis=dim, keepdims=int(keepdim))


@lowers(aten._softmax.default, aten.softmax.int)
def _softmax(ctx, node, x, dim, *rest):
    return ctx.g.op("Softmax", ctx.tensor(x, ctx.dtype(node)), axis=dim)


@lowers(aten._log_softmax.default, aten.log_softmax.int)
def _log_softmax(ctx, node, x, dim, *rest):
    return ctx.g.op("LogSoftmax", ctx.tensor(x, ctx.dtype(node)), axis=dim)


@lowers(aten.cumsum.default)
def _cumsum(ctx, node, x, dim, dtype=None):
    rank = ctx.rank(node)
    return ctx.g.op(
        "CumSum",
        ctx.tensor(x, ctx.dtype(node)),
        ctx.g.const(dim + rank if dim < 0 else dim, "int64"),
    )


@lowers(aten.var.correction, aten.var_mean.correction)
def _var(ctx, node, x, dims=None, correction=None, keepdim=False):
    """var (and var_mean: the variance and the mean, as torch.std_mean's decomposition
    asks)."""
    g = ctx.g
    axes = _axes(ctx, node, dims)
    mean = g.op("ReduceMean", x, g.ints(*axes), keepdims=1)
    d = g.op("Sub", x, mean)
    total = g.op("ReduceSum", g.op("Mul", d, d), g.ints(*axes), keepdims=int(bool(keepdim)))
    shape = g.op("Shape", x)
    n = g.op("ReduceProd", g.op("Gather", shape, g.ints(*axes)), keepdims=0)
    n = g.op("Cast", n, to=1)
    corr = 1.0 if correction is None else float(correction)
    var = g.op("Div", total, g.op("Max", g.op("Sub", n, g.const(corr)), g.const(0.0)))
    if node.target == aten.var.correction:
        return var
    return var, (mean if keepdim else g.op("Squeeze", mean, g.ints(*axes)))


@lowers(aten.linalg_vector_norm.default)
def _vector_norm(ctx, node, x, order=2, dims=None, keepdim=False, dtype=None):
    g = ctx.g
    axes = g.ints(*_axes(ctx, node, dims))
    keep = int(bool(keepdim))
    x = ctx.tensor(x, ctx.dtype(node))
    if order == 2:
        return g.op("Sqrt", g.op("ReduceSumSquare", x, axes, keepdims=keep))
    if order == 1:
        return g.op("ReduceL1", x, axes, keepdims=keep)
    if order == float("inf"):
        return g.op("ReduceMax", g.op("Abs", x), axes, keepdims=keep)
    p = ctx.tensor(float(order), ctx.dtype(node))
    total = g.op("ReduceSum", g.op("Pow", g.op("Abs", x), p), axes, keepdims=keep)
    return g.op("Pow", total, g.op("Reciprocal", p))


@lowers(aten.topk.default)
def _topk(ctx, node, x, k, dim=-1, largest=True, sorted=True):
    rank = ctx.rank(node.args[0])
    k = ctx.g.op("Reshape", ctx.tensor(k, torch.int64), ctx.g.ints(1))
    values, indices = ctx.g.op(
        "TopK", x, k, axis=dim + rank if dim < 0 else dim, largest=int(largest), sorted=1, outputs=2
    )
    return values, indices


@lowers(aten.sort.default, aten.sort.stable)
def _sort(ctx, node, x, *args):
    if node.target == aten.sort.stable:
        dim, descending = args[1], args[2]
    else:
        dim, descending = args[0], args[1]
    rank = ctx.rank(node.args[0])
    dim = dim + rank if dim < 0 else dim
    k = ctx.g.op("Shape", x, start=dim, end=dim + 1)
    values, indices = ctx.g.op(
        "TopK", x, k, axis=dim, largest=int(bool(descending)), sorted=1, outputs=2
    )
    return values, indices


def _running(ctx, node, x, dim, start: float, step) -> str:
    """A cumulative op ONNX lacks, as a Scan along `dim`: the state starts at `start`
    (broadcast to a slice) and `step(b, state, slice)` gives the next one, which is also
    that position's output."""
    g = ctx.g
    rank = ctx.rank(node)
    dim = dim + rank if dim < 0 else dim
    perm = [dim] + [i for i in range(rank) if i != dim]
    inverse = [perm.index(i) for i in range(rank)]
    x = ctx.tensor(x, ctx.dtype(node))
    front = g.op("Transpose", x, perm=perm) if dim else x
    first = g.op("Expand", g.const(start), g.op("Shape", front, start=1))

    def body(b, states, slices):
        value = step(b, states[0], slices[0])
        return [value], [b.op("Identity", value)]

    _, (values,) = scan(g, body, [first], [front], 1)
    return g.op("Transpose", values, perm=inverse) if dim else values


@lowers(aten.cumprod.default)
def _cumprod(ctx, node, x, dim, dtype=None):
    """The running product, in PyTorch's order (a log-sum-exp form would lose exactness
    and zeros)."""
    return _running(ctx, node, x, dim, 1.0, lambda b, p, v: b.op("Mul", p, v))


@lowers(aten.logcumsumexp.default)
def _logcumsumexp(ctx, node, x, dim):
    """log(exp(s) + exp(v)) = m + log(exp(s - m) + exp(v - m)), m = max(s, v): stable, and
    the first step (s = -inf) gives v."""

    def step(b, s, v):
        m = b.op("Max", s, v)
        total = b.op("Add", b.op("Exp", b.op("Sub", s, m)), b.op("Exp", b.op("Sub", v, m)))
        return b.op("Add", m, b.op("Log", total))

    return _running(ctx, node, x, dim, float("-inf"), step)
