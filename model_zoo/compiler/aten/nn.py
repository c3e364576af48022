"""Layers' ATen ops: matrix products, convolution (and its backward), pooling (and its
backward), the normalisations, embedding lookups and dropout.

Convolution backward, written as convolutions (Dumoulin & Visin 2016, "A guide to
convolution arithmetic for deep learning"): the input gradient is the transposed
convolution of dy, padded or cropped to the input's (dynamic) size; the weight gradient
correlates the padded input with dy, the batch as channel axis, groups kept apart by a
grouped convolution.
"""

from __future__ import annotations

import numpy as np
import torch

from ..ops.base import UnsupportedError
from ..ops.dropout import emit_normal, seeded_uniform
from .lowering import ONNX_TYPES, Lowering, _np, keeps, lowers

aten = torch.ops.aten


@lowers(aten.addmm.default)
def _addmm(ctx: Lowering, node, bias, a, b, beta=1, alpha=1):
    return ctx.g.op("Gemm", a, b, bias, alpha=float(alpha), beta=float(beta))


@lowers(aten.mm.default, aten.bmm.default, aten.matmul.default)
def _mm(ctx, node, a, b):
    return ctx.g.op("MatMul", a, b)


# -- convolution ------------------------------------------------------------------------
def _conv_attrs(stride, padding, dilation, groups, spatial):
    return {
        "strides": list(stride),
        "pads": list(padding) * 2,
        "dilations": list(dilation),
        "group": int(groups),
        "kernel_shape": list(spatial),
    }


@lowers(aten.convolution.default)
def _convolution(
    ctx, node, x, w, bias, stride, padding, dilation, transposed, output_padding, groups
):
    spatial = tuple(node.args[1].meta["val"].shape[2:])
    attrs = _conv_attrs(stride, padding, dilation, groups, spatial)
    inputs = [x, w] + ([bias] if bias is not None else [])
    if transposed:
        return ctx.g.op("ConvTranspose", *inputs, output_padding=list(output_padding), **attrs)
    return ctx.g.op("Conv", *inputs, **attrs)


@lowers(aten.convolution_backward.default)
def _convolution_backward(
    ctx,
    node,
    dy,
    x,
    w,
    bias_sizes,
    stride,
    padding,
    dilation,
    transposed,
    output_padding,
    groups,
    output_mask,
):
    spatial = tuple(node.args[2].meta["val"].shape[2:])
    n = len(spatial)
    grads = [None, None, None]
    if output_mask[0]:
        if transposed:  # the adjoint of a transposed convolution is a convolution
            grads[0] = ctx.g.op(
                "Conv", dy, w, **_conv_attrs(stride, padding, dilation, groups, spatial)
            )
        else:
            grads[0] = _conv_input_grad(
                ctx,
                dy,
                x,
                w,
                tuple(node.args[2].meta["val"].shape),
                stride,
                padding,
                dilation,
                groups,
                spatial,
                _static_output_padding(node, stride, padding, dilation),
            )
    if output_mask[1]:
        if not transposed and _is_depthwise_2d(node, groups):
            grads[1] = _depthwise_weight_grad(ctx, node, dy, x, stride, padding, dilation)
        else:  # a transposed convolution swaps the roles of its input and output
            a, b, source = (x, dy, node.args[0]) if transposed else (dy, x, node.args[1])
            c_in = source.meta["val"].shape[1]
            grads[1] = _conv_weight_grad(
                ctx, a, b, c_in, stride, padding, dilation, groups, spatial, n
            )
    if output_mask[2]:
        grads[2] = ctx.g.op("ReduceSum", dy, ctx.g.ints(0, *range(2, 2 + n)), keepdims=0)
    return tuple(grads)


def _static_output_padding(node, stride, padding, dilation) -> list[int] | None:
    """ConvTranspose's output_padding that gives the input gradient the input's size, when
    the images have static sizes and ONNX allows it (0 <= it < stride or dilation)."""
    x, dy, w = (node.args[i].meta["val"] for i in (1, 0, 2))
    sizes = (*x.shape[2:], *dy.shape[2:])
    if not all(isinstance(v, int) for v in sizes):
        return None
    extra = [
        int(i) - ((int(o) - 1) * s - 2 * p + d * (int(k) - 1) + 1)
        for i, o, s, p, d, k in zip(
            x.shape[2:], dy.shape[2:], stride, padding, dilation, w.shape[2:]
        )
    ]
    ok = all(0 <= e < max(s, d) for e, s, d in zip(extra, stride, dilation))
    return extra if ok else None


def _conv_input_grad(
    ctx, dy, x, w, w_shape, stride, padding, dilation, groups, spatial, output_padding=None
):
    """With stride 1, a convolution (`_conv_input_grad_stride1`); else, with static image
    sizes, one ConvTranspose(dy) with the forward's pads and `output_padding` (the rows a
    strided convolution skipped); else ConvTranspose(dy) without padding, extended by
    stride - 1 zeros at the end, then cut to the input's extent (a Pad and a Slice, each
    a pass over the gradient)."""
    g = ctx.g
    n = len(spatial)
    flipped_pads = [d * (k - 1) - p for d, k, p in zip(dilation, spatial, padding)]
    if all(s == 1 for s in stride) and all(p >= 0 for p in flipped_pads):
        return _conv_input_grad_stride1(
            ctx, dy, w, w_shape, dilation, groups, spatial, flipped_pads
        )
    transposed = dict(
        strides=list(stride),
        dilations=list(dilation),
        group=int(groups),
        kernel_shape=list(spatial),
    )
    if output_padding is not None:
        return g.op(
            "ConvTranspose",
            dy,
            w,
            pads=list(padding) * 2,
            output_padding=output_padding,
            **transposed,
        )
    full = g.op("ConvTranspose", dy, w, **transposed)
    extra = [s - 1 for s in stride]
    if any(extra):
        full = g.op("Pad", full, g.ints(*([0] * (2 + n) + [0, 0] + extra)))
    size = g.op("Shape", x, start=2)
    starts = g.ints(*padding)
    return g.op("Slice", full, starts, g.op("Add", starts, size), g.ints(*range(2, 2 + n)))


def _conv_input_grad_stride1(ctx, dy, w, w_shape, dilation, groups, spatial, pads):
    """With stride 1 the input gradient is a plain convolution of dy with the kernel
    flipped in space and its channel axes swapped per group, padded by d(k-1) - p: the
    output is the input's size. ONNX Runtime's Conv is faster than its ConvTranspose
    (2.5x for a depthwise 3x3). w_shape: [C_out, C_in / groups, *k], static."""
    g = ctx.g
    n = len(spatial)
    c_out, cig = int(w_shape[0]), int(w_shape[1])
    if groups == 1:
        wt = g.op("Transpose", w, perm=[1, 0] + list(range(2, 2 + n)))
    elif cig == 1 and c_out == groups:  # depthwise: nothing to swap
        wt = w
    else:  # [g * cog, cig, *k] -> [g, cog, cig, *k] -> [g, cig, cog, *k] -> [g * cig, cog, *k]
        cog = c_out // groups
        wt = g.op("Reshape", w, g.ints(int(groups), cog, cig, *spatial))
        wt = g.op("Transpose", wt, perm=[0, 2, 1] + list(range(3, 3 + n)))
        wt = g.op("Reshape", wt, g.ints(int(groups) * cig, cog, *spatial))
    big = 2**62
    if all(k == 1 for k in spatial):  # a 1 x 1 kernel is its own mirror image
        return g.op("Conv", dy, wt, group=int(groups), kernel_shape=list(spatial))
    wt = g.op(
        "Slice",
        wt,
        g.ints(*[-1] * n),
        g.ints(*[-big] * n),
        g.ints(*range(2, 2 + n)),
        g.ints(*[-1] * n),
    )
    return g.op(
        "Conv",
        dy,
        wt,
        pads=list(pads) * 2,
        dilations=list(dilation),
        group=int(groups),
        kernel_shape=list(spatial),
    )


def _conv_weight_grad(ctx, dy, x, c_in, stride, padding, dilation, groups, spatial, n):
    """dW [C_out, C_in/g, *k] = sum over batch and positions of dy x_pad, as one grouped
    convolution of x_pad (channels in the batch slot) with dy (batch in the channel slot):
    dilation of that convolution = forward stride, stride = forward dilation."""
    g = ctx.g
    if (
        groups == 1
        and all(k == 1 for k in spatial)
        and not any(padding)
        and all(s == 1 for s in stride)
    ):
        return _pointwise_weight_grad(g, dy, x, n)
    if any(padding):
        x = g.op("Pad", x, g.ints(*([0, 0] + list(padding) + [0, 0] + list(padding))))
    cig = c_in // groups
    shape = g.op("Shape", x)
    batch, rest = (
        g.op("Slice", shape, g.ints(0), g.ints(1)),
        g.op("Slice", shape, g.ints(2), g.ints(2 + n)),
    )
    # x [N, C_in, *S] -> [N, g, cig, *S] -> [cig, g, N, *S] -> [cig, g*N, *S]
    xg = g.op("Reshape", x, g.op("Concat", batch, g.ints(groups, cig), rest, axis=0))
    xg = g.op("Transpose", xg, perm=[2, 1, 0] + list(range(3, 3 + n)))
    xg = g.op("Reshape", xg, g.op("Concat", g.ints(cig, -1), rest, axis=0))
    dyt = g.op("Transpose", dy, perm=[1, 0] + list(range(2, 2 + n)))  # [C_out, N, *O]
    corr = g.op("Conv", xg, dyt, strides=list(dilation), dilations=list(stride), group=int(groups))
    corr = g.op("Slice", corr, g.ints(*[0] * n), g.ints(*spatial), g.ints(*range(2, 2 + n)))
    return g.op("Transpose", corr, perm=[1, 0] + list(range(2, 2 + n)))


def _is_depthwise_2d(node, groups) -> bool:
    """A 2-D convolution with one input and one output channel per group, whose input and
    output images have static sizes (the default: only the batch is dynamic)."""
    x, dy, w = (node.args[i].meta["val"] for i in (1, 0, 2))
    return (
        w.dim() == 4
        and int(w.shape[1]) == 1
        and int(w.shape[0]) == groups == int(x.shape[1])
        and all(isinstance(v, int) for v in (*x.shape[2:], *dy.shape[2:]))
    )


def _depthwise_weight_grad(ctx, node, dy, x, stride, padding, dilation):
    """dW [C, 1, kh, kw] of a depthwise 2-D convolution as two matrix products with one-hot
    matrices built from the static sizes, instead of the grouped correlation below (whose
    per-group kernel is the whole image: 2-4x slower in ONNX Runtime, see docs/compiler.md).

    dW[c, i, j] = sum over n, y, x of x_pad[n, c, y s + i d, x s + j d] dy[n, c, y, x]:
    1. xs = x @ S, S [W, kw * Wo] one-hot: xs[n, c, r, (j, x)] = x_pad[n, c, r + p, x s + j d]
       (columns that fall in the padding stay 0);
    2. z = xs as [N, C, H * kw, Wo] @ dy^T [N, C, Wo, Ho]: z[n, c, (r, j), y] sums over x;
    3. z summed over the batch, then dW[c, i, j] = sum over y of z[c, (y s + i d - p, j), y],
       a Gather of constant positions (rows in the padding point at an appended 0).
    Products with 1 and additions of 0 are exact, so only the order of the sums differs
    from PyTorch's: x, then n in float32, then y in float64. With y in float32 too, the
    run drifted from PyTorch's beyond the tests' tolerance (mobilenet_cnn_tiny's stem
    after 20 SGD-momentum steps); the float64 sum over y (a small tensor) stays with it."""
    g = ctx.g
    c, _, kh, kw = (int(v) for v in node.args[2].meta["val"].shape)
    h, w = (int(v) for v in node.args[1].meta["val"].shape[2:])
    ho, wo = (int(v) for v in node.args[0].meta["val"].shape[2:])
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    dtype = _np(ctx.dtype(node.args[1]))
    select = np.zeros((w, kw * wo), dtype)
    for j in range(kw):
        for col in range(wo):
            source = col * sw + j * dil_w - pw
            if 0 <= source < w:
                select[source, j * wo + col] = 1
    zero = h * kw * ho  # the appended 0
    rows = np.arange(kh)[:, None, None] * dil_h + np.arange(ho)[None, None, :] * sh - ph
    flat = (rows * kw + np.arange(kw)[None, :, None]) * ho + np.arange(ho)
    positions = np.where((rows >= 0) & (rows < h), flat, zero)  # [kh, kw, Ho]
    xs = g.op("MatMul", x, g.const(select, dtype))  # [N, C, H, kw * Wo]
    xs = g.op("Reshape", xs, g.ints(0, 0, h * kw, wo))
    z = g.op("MatMul", xs, g.op("Transpose", dy, perm=[0, 1, 3, 2]))  # [N, C, H * kw, Ho]
    z = g.op("Reshape", g.op("ReduceSum", z, g.ints(0), keepdims=0), g.ints(c, -1))
    z = g.op("Cast", z, to=ONNX_TYPES[torch.float64])  # sums over rows in float64
    z = g.op("Pad", z, g.ints(0, 0, 0, 1))
    taps = g.op("Gather", z, g.const(positions, "int64"), axis=1)  # [C, kh, kw, Ho]
    grad = g.op("ReduceSum", taps, g.ints(-1), keepdims=0)
    grad = g.op("Cast", grad, to=ONNX_TYPES[ctx.dtype(node.args[1])])
    return g.op("Unsqueeze", grad, g.ints(1))


def _pointwise_weight_grad(g, dy, x, n):
    """dW [C_out, C_in, 1, ...] of a 1x1 convolution: per example dy [C_out, S] x^T
    [S, C_in], summed over the batch. A batched MatMul, several times faster than the
    correlation above, whose kernel would be the whole image."""
    dy3 = g.op("Reshape", dy, g.ints(0, 0, -1))
    xt = g.op("Transpose", g.op("Reshape", x, g.ints(0, 0, -1)), perm=[0, 2, 1])
    dw = g.op("ReduceSum", g.op("MatMul", dy3, xt), g.ints(0), keepdims=0)
    return g.op("Unsqueeze", dw, g.ints(*range(2, 2 + n)))


# -- pooling ----------------------------------------------------------------------------
@lowers(aten.max_pool2d_with_indices.default, aten.max_pool3d_with_indices.default)
def _max_pool(ctx, node, x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
    n = len(kernel)
    attrs = _pool_attrs(kernel, stride, padding, n)
    dilation = [dilation] * n if isinstance(dilation, int) else list(dilation) or [1] * n
    y, idx = ctx.g.op(
        "MaxPool", x, outputs=2, dilations=dilation, ceil_mode=int(ceil_mode), **attrs
    )
    return y, idx  # flat positions in the input, used only by the backward below


def _pool_attrs(kernel, stride, padding, n):
    stride = list(stride) if stride else list(kernel)
    padding = [padding] * n if isinstance(padding, int) else list(padding)
    if len(padding) == 1:
        padding = padding * n
    return {"kernel_shape": list(kernel), "strides": stride, "pads": padding * 2}


@lowers(
    aten.max_pool2d_with_indices_backward.default, aten.max_pool3d_with_indices_backward.default
)
def _max_pool_backward(ctx, node, dy, x, kernel, stride, padding, dilation, ceil_mode, indices):
    g = ctx.g
    shape = g.op("Shape", x)
    zeros = g.op("Expand", g.const(0.0), g.op("ReduceProd", shape, keepdims=1))
    flat = g.op(
        "ScatterElements",
        zeros,
        g.op("Reshape", indices, g.ints(-1)),
        g.op("Reshape", dy, g.ints(-1)),
        axis=0,
        reduction="add",
    )
    return g.op("Reshape", flat, shape)


@lowers(aten.adaptive_max_pool2d.default)
def _adaptive_max_pool(ctx, node, x, output_size):
    """A MaxPool when the input sizes are multiples of the output's (equal windows); its
    indices feed the backward below, like max_pool2d's."""
    sizes, out = list(node.args[0].meta["val"].shape[2:]), list(node.meta["val"][0].shape[2:])
    kernel = _adaptive_kernel(sizes, out)
    if kernel is None:
        raise UnsupportedError(
            "adaptive max pooling whose input size is not a fixed multiple of its output size"
        )
    return ctx.g.op("MaxPool", x, outputs=2, kernel_shape=kernel, strides=kernel)


@lowers(aten.adaptive_max_pool2d_backward.default)
def _adaptive_max_pool_backward(ctx, node, dy, x, indices):
    return _max_pool_backward(ctx, node, dy, x, None, None, None, None, None, indices)


@lowers(aten.avg_pool2d.default, aten.avg_pool1d.default, aten.avg_pool3d.default)
def _avg_pool(
    ctx,
    node,
    x,
    kernel,
    stride=(),
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    if divisor_override:
        raise UnsupportedError("avg_pool with divisor_override")
    attrs = _pool_attrs(kernel, stride, padding, len(kernel))
    return ctx.g.op(
        "AveragePool",
        x,
        ceil_mode=int(ceil_mode),
        count_include_pad=int(count_include_pad),
        **attrs,
    )


@lowers(aten.avg_pool2d_backward.default, aten.avg_pool3d_backward.default)
def _avg_pool_backward(
    ctx, node, dy, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
):
    """The sum pool's transpose applied to dy / divisor. The divisor is one constant (the
    window's size, or divisor_override) unless windows differ: padding not counted, or
    ceil_mode's last windows cut short; then it is counted per output position by pooling
    ones laid out as PyTorch counts them."""
    attrs = _pool_attrs(kernel, stride, padding, len(kernel))
    channels = node.args[1].meta["val"].shape[1]
    if not isinstance(channels, int):
        raise UnsupportedError("avg_pool over a dynamic channel dimension")
    n = len(kernel)
    pads = attrs["pads"][:n]
    size = 1
    for k in kernel:
        size *= k
    varying = (any(pads) and not count_include_pad) or ceil_mode
    if divisor_override or not varying:
        scale = 1.0 / (divisor_override or size)
    else:
        dy = ctx.g.op(
            "Div", dy, _window_counts(ctx, dy, x, kernel, attrs["strides"], pads, count_include_pad)
        )
        scale = 1.0
    ones = ctx.g.const(torch.full((channels, 1, *kernel), scale).numpy())
    return _conv_input_grad(
        ctx,
        dy,
        x,
        ones,
        (channels, 1, *kernel),
        attrs["strides"],
        pads,
        [1] * n,
        channels,
        tuple(kernel),
    )


def _window_counts(ctx, dy, x, kernel, strides, pads, count_padding):
    """[1, 1, *out]: how many elements PyTorch divides each average pool window by. Ones
    over the input, padded by `pads` (ones if padding counts, else zeros) and then by
    zeros up to the extent ceil_mode's windows reach, summed over each window."""
    g = ctx.g
    n = len(kernel)
    one = ctx.tensor(1.0, torch.float32)
    ones = g.op("Expand", one, g.op("Concat", g.ints(1, 1), g.op("Shape", x, start=2), axis=0))
    pad = g.ints(*([0, 0] + list(pads) + [0, 0] + list(pads)))
    ones = g.op("Pad", ones, pad, ctx.tensor(1.0 if count_padding else 0.0, torch.float32))
    # extra zeros at the end: (out - 1) * stride + kernel - padded size, when positive
    out = g.op("Shape", dy, start=2)
    padded = g.op("Shape", ones, start=2)
    reach = g.op("Add", g.op("Mul", g.op("Sub", out, g.ints(1)), g.ints(*strides)), g.ints(*kernel))
    extra = g.op("Max", g.op("Sub", reach, padded), g.ints(*[0] * n))
    ones = g.op("Pad", ones, g.op("Concat", g.ints(*[0] * (n + 2)), g.ints(0, 0), extra, axis=0))
    window = g.const(torch.ones((1, 1, *kernel)).numpy())
    return g.op("Conv", ones, window, strides=list(strides), kernel_shape=list(kernel))


# -- normalisation ----------------------------------------------------------------------
def _moments(g, x, axes):
    mean = g.op("ReduceMean", x, g.ints(*axes), keepdims=1)
    d = g.op("Sub", x, mean)
    var = g.op("ReduceMean", g.op("Mul", d, d), g.ints(*axes), keepdims=1)
    return mean, d, var


def _channel(g, t, rank):
    """[C] -> [1, C, 1, ...] for broadcasting over x [N, C, *S]."""
    return g.op("Reshape", t, g.ints(1, -1, *[1] * (rank - 2)))


def _count(g, x, dtype):
    """Elements per channel of x [N, C, *S] (N x prod(S)) as a scalar of `dtype`."""
    shape = g.op("Shape", x)
    return g.op(
        "Cast",
        g.op(
            "Div", g.op("ReduceProd", shape, keepdims=0), g.op("Gather", shape, g.const(1, "int64"))
        ),
        to=dtype,
    )


def _affine(g, x, invstd, mean, w, b, rank):
    """x * alpha + beta with alpha = invstd * w, beta = b - mean * alpha (float32, per
    channel), PyTorch's CPU kernel's order; invstd, mean [C].

    One pass: ONNX's BatchNormalization with mean 0, variance 0 and epsilon 1 computes
    x * (alpha / sqrt(0 + 1)) + (beta - 0 * alpha) = x * alpha + beta, the same two
    roundings as Mul then Add (bit for bit on ONNX Runtime, test_speed_forms.py), in
    one pass over x instead of two."""
    alpha = invstd if w is None else g.op("Mul", invstd, w)
    shift = g.op("Mul", mean, alpha)
    beta = g.op("Neg", shift) if b is None else g.op("Sub", b, shift)
    zero = g.op("Mul", alpha, g.const(0.0))  # [C] zeros: BatchNormalization's shapes
    return g.op("BatchNormalization", x, alpha, beta, zero, zero, epsilon=1.0)


_F32, _F64 = 1, 11


@lowers(aten._native_batch_norm_legit_functional.default)
def _batch_norm_train(ctx, node, x, w, b, running_mean, running_var, training, momentum, eps):
    """Batch statistics as PyTorch's CPU kernel computes them: the mean and the sum of
    squared deviations accumulated in float64 and stored as float32, 1/sqrt(var + eps)
    and the running statistics in float64; then x * alpha + beta (`_affine`)."""
    g = ctx.g
    rank = ctx.rank(node.args[0])
    axes = g.ints(0, *range(2, rank))
    mean = g.op("Cast", g.op("ReduceMean", g.op("Cast", x, to=_F64), axes, keepdims=1), to=_F32)
    d = g.op("Sub", x, mean)
    var_sum = g.op(
        "Cast",
        g.op("ReduceSum", g.op("Cast", g.op("Mul", d, d), to=_F64), axes, keepdims=0),
        to=_F32,
    )
    var_sum = g.op("Cast", var_sum, to=_F64)
    count = _count(g, x, _F64)
    invstd = g.op(
        "Cast",
        g.op(
            "Reciprocal",
            g.op("Sqrt", g.op("Add", g.op("Div", var_sum, count), g.const(float(eps), "float64"))),
        ),
        to=_F32,
    )
    mean_c = g.op("Reshape", mean, g.ints(-1))
    ctx.layers[("batch_norm", x, mean_c)] = d  # x - mean, for the backward
    y = _affine(g, x, invstd, mean_c, w, b, rank)
    m = float(momentum)
    unbiased = g.op(
        "Div",
        var_sum,
        g.op("Max", g.op("Sub", count, g.const(1.0, "float64")), g.const(1.0, "float64")),
    )

    def blend(batch, running):
        return g.op(
            "Cast",
            g.op(
                "Add",
                g.op("Mul", batch, g.const(m, "float64")),
                g.op("Mul", g.op("Cast", running, to=_F64), g.const(1 - m, "float64")),
            ),
            to=_F32,
        )

    return (
        y,
        mean_c,
        invstd,
        blend(g.op("Cast", mean_c, to=_F64), running_mean),
        blend(unbiased, running_var),
    )


@keeps(aten.native_batch_norm_backward.default)
def _batch_norm_backward(
    ctx, node, dy, x, w, running_mean, running_var, save_mean, save_invstd, train, eps, output_mask
):
    """PyTorch's CPU kernel's order: per channel sum(dy) and dotp = sum((x - mean) dy),
    each a float32 sum per (example, channel) plane added up in float64; then
    dx = (dy - sum / N - (x - mean) * k) * invstd * w with k = dotp * invstd^2 / N
    (training) or dy * invstd * w; dw = dotp * invstd; db = sum."""
    g = ctx.g
    rank = ctx.rank(node.args[1])
    if train:
        mean, invstd = save_mean, save_invstd
    else:
        mean = running_mean
        invstd = g.op(
            "Cast",
            g.op(
                "Reciprocal",
                g.op(
                    "Sqrt",
                    g.op("Add", g.op("Cast", running_var, to=_F64), g.const(float(eps), "float64")),
                ),
            ),
            to=_F32,
        )
    d = ctx.layers.get(("batch_norm", x, mean)) or g.op("Sub", x, _channel(g, mean, rank))

    def channel_sum(t):  # [N, C, *S] -> float64 [C]
        if rank > 2:
            t = g.op("ReduceSum", t, g.ints(*range(2, rank)), keepdims=0)
        return g.op("ReduceSum", g.op("Cast", t, to=_F64), g.ints(0), keepdims=0)

    total = channel_sum(dy)
    dotp = channel_sum(g.op("Mul", d, dy))
    grads = [None, None, None]
    invstd_c = _channel(g, invstd, rank)
    if output_mask[0]:
        if train:
            count = _count(g, x, _F64)
            k = g.op(
                "Div",
                g.op("Mul", g.op("Mul", g.op("Cast", dotp, to=_F32), invstd), invstd),
                g.op("Cast", count, to=_F32),
            )
            grad_mean = g.op("Cast", g.op("Div", total, count), to=_F32)
            dx = g.op(
                "Sub",
                g.op("Sub", dy, _channel(g, grad_mean, rank)),
                g.op("Mul", d, _channel(g, k, rank)),
            )
            dx = g.op("Mul", dx, invstd_c)
        else:
            dx = g.op("Mul", dy, invstd_c)
        grads[0] = dx if w is None else g.op("Mul", dx, _channel(g, w, rank))
    if output_mask[1]:
        grads[1] = g.op("Cast", g.op("Mul", dotp, g.op("Cast", invstd, to=_F64)), to=_F32)
    if output_mask[2]:
        grads[2] = g.op("Cast", total, to=_F32)
    return tuple(grads)


@lowers(aten._native_batch_norm_legit_no_training.default)
def _batch_norm_eval(ctx, node, x, w, b, running_mean, running_var, momentum, eps):
    g = ctx.g
    rank = ctx.rank(node.args[0])
    invstd = g.op("Reciprocal", g.op("Sqrt", g.op("Add", running_var, g.const(float(eps)))))
    y = _affine(g, x, invstd, running_mean, w, b, rank)
    empty = g.const(torch.zeros(0).numpy())
    return y, empty, empty


@lowers(aten.native_layer_norm.default)
def _layer_norm(ctx, node, x, normalized_shape, w, b, eps):
    g = ctx.g
    rank = ctx.rank(node.args[0])
    axes = list(range(rank - len(normalized_shape), rank))
    mean, d, var = _moments(g, x, axes)
    rstd = g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, g.const(float(eps)))))
    y = g.op("Mul", d, rstd)
    if w is not None:
        y = g.op("Mul", y, w)
    if b is not None:
        y = g.op("Add", y, b)
    return y, mean, rstd


@lowers(aten.native_group_norm.default)
def _group_norm(ctx, node, x, w, b, n, c, hw, groups, eps):
    g = ctx.g
    rank = ctx.rank(node.args[0])
    grouped = g.op("Reshape", x, g.ints(0, int(groups), -1))
    mean, d, var = _moments(g, grouped, [2])
    rstd = g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, g.const(float(eps)))))
    y = g.op("Reshape", g.op("Mul", d, rstd), g.op("Shape", x))
    if w is not None:
        y = g.op("Mul", y, _channel(g, w, rank))
    if b is not None:
        y = g.op("Add", y, _channel(g, b, rank))
    return y, g.op("Squeeze", mean, g.ints(2)), g.op("Squeeze", rstd, g.ints(2))


# -- embedding and dropout --------------------------------------------------------------
@lowers(aten.embedding.default)
def _embedding(ctx, node, weight, indices, *rest):
    return ctx.g.op("Gather", weight, indices, axis=0)


@lowers(aten.embedding_dense_backward.default)
def _embedding_backward(ctx, node, dy, indices, num_weights, padding_idx, scale_grad):
    g = ctx.g
    if scale_grad:
        raise UnsupportedError("Embedding with scale_grad_by_freq")
    dim = node.args[0].meta["val"].shape[-1]
    rows = g.op("Reshape", dy, g.ints(-1, dim))
    ids = g.op("Reshape", indices, g.ints(-1, 1))
    if padding_idx is not None and padding_idx >= 0:
        keep = g.op("Cast", g.op("Not", g.op("Equal", ids, g.const(padding_idx, "int64"))), to=1)
        rows = g.op("Mul", rows, keep)
    zeros = g.op("Expand", g.const(0.0), g.ints(num_weights, dim))
    return g.op("ScatterND", zeros, ids, rows, reduction="add")


def _uniform(ctx, like: str | None, shape: str | None = None) -> str:
    """Uniform [0, 1) noise in the shape of `like` (or `shape`), a fresh salt per random
    op. The train step draws from its seed input; eval and infer graphs (which have none)
    from seed 0, so a model that samples in eval mode scores the same every run."""
    seed = ctx.seed if ctx.seed is not None else ctx.g.const(0, "int64")
    return seeded_uniform(ctx.g, like, seed, ctx.next_random_salt(), shape=shape)


def _noise(ctx, node, like: str | None, shape: str | None, normal: bool) -> str:
    """Uniform or standard normal noise of the node's dtype (two salts for a normal)."""
    draw = _uniform(ctx, like, shape)
    if normal:
        draw = emit_normal(ctx.g, draw, _uniform(ctx, like, shape))
    return ctx.cast(draw, ctx.dtype(node))


@lowers(aten.rand_like.default, aten.randn_like.default)
def _rand_like(ctx, node, x, *rest, **options):
    return _noise(ctx, node, x, None, node.target == aten.randn_like.default)


@lowers(aten.rand.default, aten.randn.default)
def _rand(ctx, node, size, *rest, **options):
    return _noise(ctx, node, None, ctx.sizes(size), node.target == aten.randn.default)


@lowers(aten.normal_functional.default)
def _normal_functional(ctx, node, x, mean=0.0, std=1.0, generator=None):
    z = _noise(ctx, node, x, None, True)
    return ctx.g.op("Add", ctx.g.op("Mul", z, ctx.tensor(std)), ctx.tensor(mean))


@lowers(aten.normal.Tensor_float, aten.normal.float_Tensor, aten.normal.Tensor_Tensor)
def _normal(ctx, node, mean, std=1.0, generator=None):
    like = mean if isinstance(mean, str) else std
    z = _noise(ctx, node, like, None, True)
    scaled = ctx.g.op("Mul", z, ctx.tensor(std, ctx.dtype(node)))
    return ctx.g.op("Add", scaled, ctx.tensor(mean, ctx.dtype(node)))


@lowers(aten.uniform.default)
def _uniform_between(ctx, node, x, low=0.0, high=1.0, generator=None):
    u = _noise(ctx, node, x, None, False)
    return ctx.g.op(
        "Add", ctx.g.op("Mul", u, ctx.g.const(float(high - low))), ctx.g.const(float(low))
    )


@lowers(aten.native_dropout.default)
def _native_dropout(ctx, node, x, p, train):
    g = ctx.g
    if not train or p == 0:
        return x, g.op("Expand", g.const(True, "bool"), g.op("Shape", x))
    keep = g.op("GreaterOrEqual", _uniform(ctx, x), g.const(float(p)))
    scale = g.op("Mul", g.op("Cast", keep, to=1), g.const(1.0 / (1.0 - p)))
    return g.op("Mul", x, scale), keep


@lowers(aten.bernoulli.p)
def _bernoulli(ctx, node, x, p=0.5, generator=None):
    """Ones with probability p in x's shape (Dropout2d/3d draw their channel masks so)."""
    draw = ctx.g.op("Less", _uniform(ctx, x), ctx.g.const(float(p)))
    return ctx.g.op("Cast", draw, to=ONNX_TYPES[ctx.dtype(node)])


def _adaptive_sizes(node, x_arg) -> tuple[list, list]:
    """(input sizes, output sizes) of an adaptive average pool's spatial dimensions."""
    out = (
        node.meta["val"].shape[2:]
        if node.target == aten._adaptive_avg_pool2d.default
        else node.args[0].meta["val"].shape[2:]
    )
    return list(x_arg.meta["val"].shape[2:]), list(out)


def _adaptive_kernel(sizes, out) -> list[int] | None:
    """The window of an adaptive average pool whose input sizes are multiples of its
    output sizes (then it is an ordinary average pool), else None."""
    if all(isinstance(s, int) and isinstance(o, int) and s % o == 0 for s, o in zip(sizes, out)):
        return [s // o for s, o in zip(sizes, out)]
    return None


def _pooling_matrices(sizes, out) -> list:
    """Per spatial dimension, PyTorch's adaptive windows as a matrix P [out, in]: output i
    averages inputs floor(i * in / out) to ceil((i + 1) * in / out) - 1."""
    if not all(isinstance(s, int) for s in sizes):
        raise UnsupportedError(
            "adaptive average pooling over a dynamic size that is not a multiple of the output size"
        )
    matrices = []
    for n_in, n_out in zip(sizes, out):
        p = np.zeros((n_out, n_in), np.float32)
        for i in range(n_out):
            start, end = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
            p[i, start:end] = 1.0 / (end - start)
        matrices.append(p)
    return matrices


@lowers(aten._adaptive_avg_pool2d.default)
def _adaptive_avg_pool(ctx, node, x, output_size):
    """An AveragePool when the windows are equal; else each spatial dimension multiplied
    by its pooling matrix (windows of two sizes, as PyTorch draws them)."""
    sizes, out = _adaptive_sizes(node, node.args[0])
    kernel = _adaptive_kernel(sizes, out)
    if kernel is not None:
        return ctx.g.op("AveragePool", x, kernel_shape=kernel, strides=kernel)
    rows, cols = _pooling_matrices(sizes, out)  # [N, C, H, W]: rows act on H, cols on W
    g = ctx.g
    return g.op("MatMul", g.op("MatMul", g.const(rows), x), g.const(cols.T.copy()))


@lowers(aten._adaptive_avg_pool2d_backward.default)
def _adaptive_avg_pool_backward(ctx, node, dy, x):
    sizes, out = _adaptive_sizes(node, node.args[1])
    kernel = _adaptive_kernel(sizes, out)
    if kernel is None:  # dx = P_rows^T dy P_cols
        rows, cols = _pooling_matrices(sizes, out)
        g = ctx.g
        return g.op("MatMul", g.op("MatMul", g.const(rows.T.copy()), dy), g.const(cols))
    channels = node.args[1].meta["val"].shape[1]
    size = 1
    for k in kernel:
        size *= k
    ones = ctx.g.const(torch.full((channels, 1, *kernel), 1.0 / size).numpy())
    return _conv_input_grad(
        ctx,
        dy,
        x,
        ones,
        (channels, 1, *kernel),
        kernel,
        [0] * len(kernel),
        [1] * len(kernel),
        channels,
        tuple(kernel),
    )


@lowers(aten._native_batch_norm_legit.no_stats)
def _batch_norm_no_stats(ctx, node, x, w, b, training, momentum, eps):
    """Batch statistics without running ones (InstanceNorm, track_running_stats=False)."""
    g = ctx.g
    rank = ctx.rank(node.args[0])
    mean, d, var = _moments(g, x, [0] + list(range(2, rank)))
    rstd = g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, g.const(float(eps)))))
    y = g.op("Mul", d, rstd)
    if w is not None:
        y = g.op("Mul", y, _channel(g, w, rank))
    if b is not None:
        y = g.op("Add", y, _channel(g, b, rank))
    return y, g.op("Reshape", mean, g.ints(-1)), g.op("Reshape", rstd, g.ints(-1))


# -- resampling -------------------------------------------------------------------------
_RESIZE_MODES = {
    # PyTorch's "nearest" picks floor(out_index * in / out): ONNX's asymmetric + floor
    aten.upsample_nearest1d.vec: dict(mode="nearest", nearest_mode="floor"),
    aten.upsample_nearest2d.vec: dict(mode="nearest", nearest_mode="floor"),
}


@lowers(aten.upsample_nearest1d.vec, aten.upsample_nearest2d.vec, aten.upsample_bilinear2d.vec)
def _upsample(ctx, node, x, output_size, *rest):
    """F.interpolate (nearest, bilinear) as one Resize, sized as PyTorch sizes it."""
    if node.target == aten.upsample_bilinear2d.vec:
        align_corners, scales = rest
        attrs = dict(
            mode="linear",
            coordinate_transformation_mode="align_corners"
            if align_corners
            else "pytorch_half_pixel",
        )
    else:
        (scales,) = rest
        attrs = dict(_RESIZE_MODES[node.target], coordinate_transformation_mode="asymmetric")
    if output_size is not None:
        sizes = ctx.g.op(
            "Concat",
            ctx.g.op("Shape", x, start=0, end=2),
            ctx.sizes(output_size),
            axis=0,
        )
        return ctx.g.op("Resize", x, "", "", sizes, **attrs)
    factors = ctx.g.const(torch.tensor([1.0, 1.0, *scales], dtype=torch.float32).numpy())
    return ctx.g.op("Resize", x, "", factors, **attrs)


@lowers(
    aten.replication_pad1d_backward.default,
    aten.replication_pad2d_backward.default,
    aten.replication_pad3d_backward.default,
)
def _replication_pad_backward(ctx, node, dy, x, padding):
    """The gradient of edge padding: along each padded dimension, every element of dy goes
    to clamp(i - before, 0, n - 1) of the input (a ScatterElements add), so the edges
    collect their copies; sizes may be dynamic."""
    rank = ctx.rank(node)
    dtype = ctx.dtype(node)
    g = dy
    for i in range(len(padding) // 2):
        d = rank - 1 - i
        before, after = padding[2 * i], padding[2 * i + 1]
        if not before and not after:
            continue
        n = ctx.dim(x, d)
        m = ctx.dim(g, d)
        positions = ctx.g.op("Range", ctx.g.const(0, "int64"), m, ctx.g.const(1, "int64"))
        last = ctx.g.op("Sub", n, ctx.g.const(1, "int64"))
        index = ctx.g.op(
            "Clip",
            ctx.g.op("Sub", positions, ctx.g.const(before, "int64")),
            ctx.g.const(0, "int64"),
            last,
        )
        shape = [1] * rank
        shape[d] = -1
        index = ctx.g.op("Expand", ctx.g.op("Reshape", index, ctx.g.ints(*shape)), ctx.shape(g))
        target = ctx.g.op(
            "Concat",
            ctx.g.op("Shape", g, start=0, end=d),
            ctx.g.op("Reshape", n, ctx.g.ints(1)),
            ctx.g.op("Shape", g, start=d + 1),
            axis=0,
        )
        zeros = ctx.g.op("Expand", ctx.tensor(0.0, dtype), target)
        g = ctx.g.op("ScatterElements", zeros, index, g, axis=d, reduction="add")
    return g
