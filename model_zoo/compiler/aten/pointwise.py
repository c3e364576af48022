"""Elementwise ATen ops, type casts, and Python arithmetic on symbolic sizes.

Inputs are cast to the node's result dtype (PyTorch's type promotion, read from the FX
node's meta) before the ONNX op, so int/float mixes and float64 size arithmetic behave as
in PyTorch; comparisons cast both sides to their promoted type.
"""

from __future__ import annotations

import math
import operator

import torch

from .lowering import ONNX_TYPES, Lowering, keeps, lowers

aten = torch.ops.aten


def _operand_dtype(ctx: Lowering, node, index: int):
    arg = node.args[index]
    if hasattr(arg, "meta"):
        v = arg.meta["val"]
        return (
            torch.empty((1,) * v.dim(), dtype=v.dtype)
            if isinstance(v, torch.Tensor)
            else (0.0 if ctx.dtype(arg) == torch.float64 else 0)
        )
    return arg


def _promoted(ctx, node, *indices) -> torch.dtype:
    vals = [_operand_dtype(ctx, node, i) for i in indices]
    if not any(isinstance(v, torch.Tensor) for v in vals):
        return torch.float64 if any(isinstance(v, float) for v in vals) else torch.int64
    return torch.result_type(*vals) if len(vals) == 2 else vals[0].dtype


def binary(onnx_op: str):
    def lower(ctx: Lowering, node, a, b, *rest):
        dtype = ctx.dtype(node)
        flags = dtype == torch.bool  # ONNX's arithmetic takes no booleans: int32, then back
        compute = torch.int32 if flags else dtype
        alpha = rest[0] if rest and node.target in _ALPHA else 1
        a, b = ctx.tensor(a, compute), ctx.tensor(b, compute)
        if alpha != 1:
            b = ctx.g.op("Mul", b, ctx.tensor(alpha, compute))
        out = ctx.g.op(onnx_op, a, b)
        return ctx.cast(_typed(ctx, out, compute), torch.bool) if flags else out

    return lower


_ALPHA = {aten.add.Tensor, aten.add.Scalar, aten.sub.Tensor, aten.sub.Scalar}
for _op, _onnx in [
    ((aten.add.Tensor, aten.add.Scalar), "Add"),
    ((aten.sub.Tensor, aten.sub.Scalar, aten.rsub.Scalar), "Sub"),
    ((aten.mul.Tensor, aten.mul.Scalar), "Mul"),
    ((aten.maximum.default,), "Max"),
    ((aten.minimum.default,), "Min"),
    ((aten.pow.Tensor_Tensor, aten.pow.Scalar), "Pow"),
]:
    lowers(*_op)(binary(_onnx))


@lowers(aten.remainder.Tensor, aten.remainder.Scalar)
def _remainder(ctx, node, a, b):
    """Python's modulo (the divisor's sign): ONNX's Mod does it for integers only, so
    floats take a - b * floor(a / b)."""
    dtype = ctx.dtype(node)
    a, b = ctx.tensor(a, dtype), ctx.tensor(b, dtype)
    if not dtype.is_floating_point:
        return ctx.g.op("Mod", a, b)
    g = ctx.g
    return g.op("Sub", a, g.op("Mul", b, g.op("Floor", g.op("Div", a, b))))


@lowers(aten.atan2.default)
def _atan2(ctx, node, y, x):
    """ONNX has Atan only: atan(y / x), moved by pi into the left half-plane, and +-pi/2
    (or 0) on the vertical axis, as atan2 is defined."""
    g = ctx.g
    dtype = ctx.dtype(node)
    y, x = ctx.tensor(y, dtype), ctx.tensor(x, dtype)
    zero = g.const(0.0)
    base = g.op("Atan", g.op("Div", y, x))
    left = g.op("Less", x, zero)
    turn = g.op("Where", g.op("Less", y, zero), g.const(-math.pi), g.const(math.pi))
    angle = g.op("Where", left, g.op("Add", base, turn), base)
    vertical = g.op("Mul", g.op("Sign", y), g.const(math.pi / 2))
    return g.op("Where", g.op("Equal", x, zero), vertical, angle)


@lowers(aten.rsub.Scalar)
def _rsub(ctx, node, a, b, alpha=1):
    dtype = ctx.dtype(node)
    a = ctx.tensor(a, dtype)
    if alpha != 1:
        a = ctx.g.op("Mul", a, ctx.tensor(alpha, dtype))
    return ctx.g.op("Sub", ctx.tensor(b, dtype), a)


@lowers(aten.div.Tensor, aten.div.Scalar, aten.div.Tensor_mode, aten.div.Scalar_mode)
def _div(ctx, node, a, b, rounding_mode=None):
    dtype = ctx.dtype(node)
    if rounding_mode is None:
        return ctx.g.op("Div", ctx.tensor(a, dtype), ctx.tensor(b, dtype))
    compute = torch.float64 if dtype == torch.int64 else dtype
    q = ctx.g.op("Div", ctx.tensor(a, compute), ctx.tensor(b, compute))
    if rounding_mode == "floor":
        q = ctx.g.op("Floor", q)
    else:  # trunc
        q = ctx.g.op("Mul", ctx.g.op("Sign", q), ctx.g.op("Floor", ctx.g.op("Abs", q)))
    return ctx.cast(_typed(ctx, q, compute), dtype)


def _typed(ctx, name, dtype):
    ctx.types[name] = dtype
    return name


@lowers(aten.pow.Tensor_Scalar)
def _pow(ctx, node, x, exponent):
    dtype = ctx.dtype(node)
    x = ctx.tensor(x, dtype)
    if exponent == 2:
        return ctx.g.op("Mul", x, x)
    if exponent == 1:
        return ctx.g.op("Identity", x)
    if exponent == 0.5:
        return ctx.g.op("Sqrt", x)
    if exponent == -1:
        return ctx.g.op("Reciprocal", x)
    return ctx.g.op("Pow", x, ctx.tensor(exponent, dtype))


def unary(onnx_op: str, **attrs):
    def lower(ctx: Lowering, node, x, *rest):
        return ctx.g.op(onnx_op, ctx.tensor(x, ctx.dtype(node)), **attrs)

    return lower


for _op, _onnx in [
    (aten.neg.default, "Neg"),
    (aten.exp.default, "Exp"),
    (aten.log.default, "Log"),
    (aten.sqrt.default, "Sqrt"),
    (aten.abs.default, "Abs"),
    (aten.sign.default, "Sign"),
    (aten.relu.default, "Relu"),
    (aten.sigmoid.default, "Sigmoid"),
    (aten.tanh.default, "Tanh"),
    (aten.erf.default, "Erf"),
    (aten.reciprocal.default, "Reciprocal"),
    (aten.floor.default, "Floor"),
    (aten.ceil.default, "Ceil"),
    (aten.round.default, "Round"),
    (aten.sin.default, "Sin"),
    (aten.cos.default, "Cos"),
]:
    lowers(_op)(unary(_onnx))


@lowers(aten.rsqrt.default)
def _rsqrt(ctx, node, x):
    return ctx.g.op("Reciprocal", ctx.g.op("Sqrt", ctx.tensor(x, ctx.dtype(node))))


@lowers(aten.log1p.default)
def _log1p(ctx, node, x):
    dtype = ctx.dtype(node)
    return ctx.g.op("Log", ctx.g.op("Add", ctx.tensor(x, dtype), ctx.tensor(1.0, dtype)))


@lowers(aten.expm1.default)
def _expm1(ctx, node, x):
    dtype = ctx.dtype(node)
    return ctx.g.op("Sub", ctx.g.op("Exp", ctx.tensor(x, dtype)), ctx.tensor(1.0, dtype))


@lowers(aten.leaky_relu.default)
def _leaky_relu(ctx, node, x, slope=0.01):
    return ctx.g.op("LeakyRelu", x, alpha=float(slope))


@lowers(aten.elu.default)
def _elu(ctx, node, x, alpha=1.0, scale=1.0, input_scale=1.0):
    dtype = ctx.dtype(node)
    if input_scale != 1:
        x = ctx.g.op("Mul", x, ctx.tensor(float(input_scale), dtype))
    y = ctx.g.op("Elu", x, alpha=float(alpha))
    return y if scale == 1 else ctx.g.op("Mul", y, ctx.tensor(float(scale), dtype))


@lowers(aten.gelu.default)
def _gelu(ctx, node, x, approximate="none"):
    g, dtype = ctx.g, ctx.dtype(node)

    def c(v):
        return ctx.tensor(v, dtype)

    if approximate == "tanh":
        inner = g.op(
            "Mul",
            c(math.sqrt(2 / math.pi)),
            g.op("Add", x, g.op("Mul", c(0.044715), g.op("Mul", x, g.op("Mul", x, x)))),
        )
        return g.op("Mul", g.op("Mul", c(0.5), x), g.op("Add", c(1.0), g.op("Tanh", inner)))
    cdf = g.op("Mul", c(0.5), g.op("Add", c(1.0), g.op("Erf", g.op("Mul", x, c(1 / math.sqrt(2))))))
    return g.op("Mul", x, cdf)


@lowers(aten.hardtanh.default)
def _hardtanh(ctx, node, x, low=-1.0, high=1.0):
    dtype = ctx.dtype(node)
    return ctx.g.op("Clip", x, ctx.tensor(float(low), dtype), ctx.tensor(float(high), dtype))


def _masked(ctx, node, grad, dropped):
    """grad where not `dropped`, else 0, as grad x 0/1: ONNX Runtime's Where is several
    times slower than Cast and Mul. Differs from PyTorch only where the incoming gradient
    is inf or NaN (NaN here, 0 there), i.e. in a step that has already diverged."""
    dtype = ctx.dtype(node)
    return ctx.g.op(
        "Mul",
        ctx.tensor(grad, dtype),
        ctx.g.op("Cast", ctx.g.op("Not", dropped), to=ONNX_TYPES[dtype]),
    )


@keeps(aten.threshold_backward.default)
def _threshold_backward(ctx, node, grad, x, threshold):
    """ReLU's backward: 0 where x <= threshold."""
    x = ctx.tensor(x, ctx.dtype(node))
    return _masked(
        ctx, node, grad, ctx.g.op("LessOrEqual", x, ctx.tensor(float(threshold), ctx.dtype(node)))
    )


@keeps(aten.hardtanh_backward.default)
def _hardtanh_backward(ctx, node, grad, x, low, high):
    """ReLU6's (and hardtanh's) backward: 0 where x <= low or x >= high."""
    dtype = ctx.dtype(node)
    x = ctx.tensor(x, dtype)
    dropped = ctx.g.op(
        "Or",
        ctx.g.op("LessOrEqual", x, ctx.tensor(float(low), dtype)),
        ctx.g.op("GreaterOrEqual", x, ctx.tensor(float(high), dtype)),
    )
    return _masked(ctx, node, grad, dropped)


@lowers(aten.hardsigmoid.default)
def _hardsigmoid(ctx, node, x):
    return ctx.g.op("HardSigmoid", x, alpha=1 / 6, beta=0.5)


@lowers(
    aten.clamp.default,
    aten.clamp.Tensor,
    aten.clamp_min.default,
    aten.clamp_max.default,
    aten.clamp_min.Tensor,
    aten.clamp_max.Tensor,
)
def _clamp(ctx, node, x, low=None, high=None):
    dtype = ctx.dtype(node)
    y = ctx.tensor(x, dtype)
    if node.target in (aten.clamp_max.default, aten.clamp_max.Tensor):
        low, high = None, low
    if low is not None:
        y = ctx.g.op("Max", y, ctx.tensor(low, dtype))
    if high is not None:
        y = ctx.g.op("Min", y, ctx.tensor(high, dtype))
    return y


@lowers(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar)
def _where(ctx, node, cond, a, b):
    dtype = ctx.dtype(node)
    return ctx.g.op(
        "Where", ctx.tensor(cond, torch.bool), ctx.tensor(a, dtype), ctx.tensor(b, dtype)
    )


def compare(onnx_op: str, negate: bool = False):
    def lower(ctx: Lowering, node, a, b):
        dtype = _promoted(ctx, node, 0, 1)
        if dtype == torch.bool and onnx_op != "Equal":
            dtype = torch.int64
        out = ctx.g.op(onnx_op, ctx.tensor(a, dtype), ctx.tensor(b, dtype))
        return ctx.g.op("Not", out) if negate else out

    return lower


for _ops, _onnx, _neg in [
    ((aten.eq.Tensor, aten.eq.Scalar), "Equal", False),
    ((aten.ne.Tensor, aten.ne.Scalar), "Equal", True),
    ((aten.lt.Tensor, aten.lt.Scalar), "Less", False),
    ((aten.le.Tensor, aten.le.Scalar), "LessOrEqual", False),
    ((aten.gt.Tensor, aten.gt.Scalar), "Greater", False),
    ((aten.ge.Tensor, aten.ge.Scalar), "GreaterOrEqual", False),
]:
    lowers(*_ops)(compare(_onnx, _neg))


def logical(bool_op: str, int_op: str | None):
    def lower(ctx: Lowering, node, *xs):
        dtype = ctx.dtype(node)
        if dtype == torch.bool or int_op is None:
            return ctx.g.op(bool_op, *[ctx.tensor(x, torch.bool) for x in xs])
        return ctx.g.op(int_op, *[ctx.tensor(x, dtype) for x in xs])

    return lower


for _ops, _b, _i in [
    ((aten.bitwise_and.Tensor, aten.logical_and.default), "And", "BitwiseAnd"),
    ((aten.bitwise_or.Tensor, aten.logical_or.default), "Or", "BitwiseOr"),
    ((aten.bitwise_xor.Tensor, aten.logical_xor.default), "Xor", "BitwiseXor"),
    ((aten.bitwise_not.default, aten.logical_not.default), "Not", "BitwiseNot"),
]:
    lowers(*_ops)(logical(_b, _i))


@lowers(aten.logical_not.default)
def _logical_not(ctx, node, x):
    return ctx.g.op("Not", ctx.tensor(x, torch.bool))


@lowers(aten.isnan.default)
def _isnan(ctx, node, x):
    return ctx.g.op("IsNaN", x)


@lowers(aten.isinf.default)
def _isinf(ctx, node, x):
    return ctx.g.op("IsInf", x)


@lowers(aten._to_copy.default, aten.to.dtype)
def _to_copy(ctx, node, x, *rest):
    return ctx.g.op("Identity", ctx.tensor(x, ctx.dtype(node)))


@lowers(
    aten.clone.default,
    aten.alias.default,
    aten.detach.default,
    aten.lift_fresh_copy.default,
    aten.contiguous.default,
)
def _same(ctx, node, x, *rest):
    return x


@lowers(aten.copy.default)
def _copy(ctx, node, x, src, non_blocking=False):
    """x.copy_(src) made functional: src's values in x's shape and dtype."""
    return ctx.g.op("Expand", ctx.tensor(src, ctx.dtype(node)), ctx.shape(x))


# -- Python arithmetic on symbolic sizes (int64 or float64 scalars) ---------------------
def sym_binary(onnx_op: str):
    def lower(ctx: Lowering, node, a, b):
        dtype = ctx.dtype(node)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return _PY[onnx_op](a, b)
        return ctx.g.op(onnx_op, ctx.tensor(a, dtype), ctx.tensor(b, dtype))

    return lower


_PY = {
    "Add": operator.add,
    "Sub": operator.sub,
    "Mul": operator.mul,
    "Div": operator.truediv,
    "Max": max,
    "Min": min,
    "Mod": operator.mod,
    "Pow": operator.pow,
}
for _f, _onnx in [
    (operator.add, "Add"),
    (operator.sub, "Sub"),
    (operator.mul, "Mul"),
    (operator.truediv, "Div"),
    (operator.floordiv, "Div"),
    (operator.mod, "Mod"),
    (operator.pow, "Pow"),
    (torch.sym_max, "Max"),
    (torch.sym_min, "Min"),
]:
    lowers(_f)(sym_binary(_onnx))


@lowers(operator.neg)
def _sym_neg(ctx, node, a):
    return -a if isinstance(a, (int, float)) else ctx.g.op("Neg", a)


@lowers(torch.sym_float)
def _sym_float(ctx, node, a):
    return float(a) if isinstance(a, (int, float)) else ctx.tensor(a, torch.float64)


@lowers(torch.sym_int, math.floor, math.trunc)
def _sym_int(ctx, node, a):
    if isinstance(a, (int, float)):
        return int(a)
    if ctx.types.get(a) == torch.int64:
        return a
    return ctx.cast(_typed(ctx, ctx.g.op("Floor", a), torch.float64), torch.int64)


@lowers(math.ceil)
def _sym_ceil(ctx, node, a):
    if isinstance(a, (int, float)):
        return math.ceil(a)
    return ctx.cast(
        _typed(ctx, ctx.g.op("Ceil", ctx.tensor(a, torch.float64)), torch.float64), torch.int64
    )


@lowers(aten.sym_size.int)
def _sym_size(ctx, node, x, dim):
    """Read from the first graph input with the same size symbol (the inference graph has
    no targets, whose batch size the captured graph may read)."""
    source = ctx.symbols.get(str(node.meta["val"]))
    return ctx.dim(*source) if source is not None else ctx.dim(x, dim)


@lowers(aten.sym_numel.default)
def _sym_numel(ctx, node, x):
    return ctx.g.op("ReduceProd", ctx.shape(x), keepdims=0)


@lowers(aten.fmod.Scalar, aten.fmod.Tensor)
def _fmod(ctx, node, a, b):
    dtype = ctx.dtype(node)
    return ctx.g.op(
        "Mod", ctx.tensor(a, dtype), ctx.tensor(b, dtype), fmod=int(dtype.is_floating_point)
    )


@lowers(
    aten._assert_tensor_metadata.default,
    aten._assert_async.msg,
    aten._assert_scalar.default,
    aten.sym_constrain_range_for_size.default,
)
def _no_op(ctx, node, *args):
    """Runtime checks PyTorch inserts; the graph's shapes were checked at capture."""
