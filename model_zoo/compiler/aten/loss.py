"""Cross-entropy's backward kept whole: `nll_loss_backward` and `_log_softmax_backward_data`.

Core ATen decomposes them into about seven passes over the [N, C] logits (a zero tensor,
a scatter, a scale; exp, a row sum, a product and a difference). Their composition is
(softmax - one-hot) scaled per row, which takes two: exp(log-probabilities) times the
row's coefficient, then the target column alone, scattered in place.

The nll gradient is therefore not written out when its only users are log-softmax
backwards over the class axis: its lowering returns an `NllGradient` (the per-row
coefficient and the target column) that the log-softmax backward consumes. Elsewhere it
is written out as PyTorch does (zeros, the coefficient at the target column).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .lowering import Lowering, keeps

aten = torch.ops.aten
_MEAN = 1  # torch's Reduction enum: 0 none, 1 mean, 2 sum


@dataclass(frozen=True)
class NllGradient:
    """The gradient of nll_loss w.r.t. its [N, C] input, not formed: `coef` [N, 1] at
    column `column` [N, 1] (int64) of each row, 0 elsewhere."""

    coef: str
    column: str


@keeps(aten.nll_loss_backward.default)
def _nll_loss_backward(
    ctx: Lowering, node, dy, x, target, weight, reduction, ignore_index, total_weight
):
    """PyTorch's CPU kernel: grad[n, t_n] = w[t_n] * -(dy / total_weight) (mean), or
    -dy (sum) or -dy[n] (none); 0 where t_n == ignore_index. x [N, C] or [C]."""
    g = ctx.g
    rows = ctx.rank(node.args[1]) == 2
    t = target if rows else g.op("Reshape", target, g.ints(1))
    valid = g.op("Not", g.op("Equal", t, g.const(int(ignore_index), "int64")))
    column = g.op("Where", valid, t, g.const(0, "int64"))  # ignored rows: any valid column
    coef = g.op("Neg", g.op("Div", dy, total_weight) if reduction == _MEAN else dy)
    if weight is not None:
        coef = g.op("Mul", g.op("Gather", weight, column), coef)
    # Where, not a 0/1 product: with every target ignored, total_weight is 0 and the
    # coefficient inf, and PyTorch's gradient is still 0
    coef = g.op("Where", valid, coef, ctx.tensor(0.0, ctx.dtype(node)))
    coef = g.op("Unsqueeze", coef, g.ints(1))
    column = g.op("Unsqueeze", column, g.ints(1))
    if rows and all(_consumes_whole(user, node) for user in node.users):
        return NllGradient(coef, column)
    shape = g.op("Shape", x)
    if not rows:  # [C] as [1, C]
        shape = g.op("Concat", g.ints(1), shape, axis=0)
    zeros = g.op("Expand", ctx.tensor(0.0, ctx.dtype(node)), shape)
    grad = g.op("ScatterElements", zeros, column, coef, axis=1)
    return grad if rows else g.op("Reshape", grad, g.op("Shape", x))


def _consumes_whole(user, nll) -> bool:
    """A log-softmax backward over the class axis (1 of [N, C]) of nll's gradient."""
    return (
        user.target == aten._log_softmax_backward_data.default
        and user.args[0] is nll
        and user.args[2] in (1, -1)
    )


@keeps(aten._log_softmax_backward_data.default)
def _log_softmax_backward(ctx: Lowering, node, dy, out, dim, input_dtype):
    """dx = dy - exp(out) * sum(dy over dim), PyTorch's formula. From an NllGradient
    (coefficient c at column t, 0 elsewhere; the row sum is c): -exp(out) * c everywhere,
    then c - exp(out_t) * c scattered at column t (in place: ONNX Runtime reuses the
    product's buffer, its only reader)."""
    g = ctx.g
    p = g.op("Exp", out)
    if isinstance(dy, NllGradient):
        dense = g.op("Mul", p, g.op("Neg", dy.coef))
        classes, dtype = node.args[1].meta["val"].shape[1], ctx.dtype(node)
        # the rows may be unknown after a Reshape: naming them keeps the scatter in place
        # (a fresh name per loss: two losses' rows need not be equal)
        if isinstance(classes, int) and dtype in (torch.float32, torch.float64):
            rows = g.fresh("logit_rows")
            g.hint_shape(dense, str(dtype).removeprefix("torch."), [rows, classes])
        p_t = g.op("Exp", g.op("GatherElements", out, dy.column, axis=1))
        at_target = g.op("Sub", dy.coef, g.op("Mul", p_t, dy.coef))
        return g.op("ScatterElements", dense, dy.column, at_target, axis=1)
    total = g.op("ReduceSum", dy, g.ints(dim), keepdims=1)
    return g.op("Sub", dy, g.op("Mul", p, total))
