"""The one lookup from PyTorch calls to lowerings: modules by type, functions, methods."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import CIFGLSTM
from .ops.activations import Gelu, Relu, Sigmoid, Tanh
from .ops.arithmetic import Binary
from .ops.base import UnsupportedError
from .ops.conv import Conv2d
from .ops.dropout import Dropout
from .ops.embedding import Embedding
from .ops.linear import Linear
from .ops.norm import LayerNorm
from .ops.pooling import MaxPool2d
from .ops.recurrent import Recurrent, RecurrentSpec
from .ops.shape import Flatten, Identity, Reshape, Transpose


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _linear(ctx, node, m: nn.Linear):
    op = Linear(m.in_features, m.out_features, m.bias is not None, len(ctx.shape(node.args[0])))
    return op, [ctx.arg(node.args[0]), ctx.param(m.weight), ctx.param(m.bias)]


def _embedding(ctx, node, m: nn.Embedding):
    if m.max_norm is not None or m.sparse:
        raise UnsupportedError("Embedding with max_norm or sparse gradients")
    op = Embedding(m.num_embeddings, m.embedding_dim, m.padding_idx)
    return op, [ctx.arg(node.args[0]), ctx.param(m.weight)]


def _rnn(ctx, node, m):
    if isinstance(m, CIFGLSTM):
        spec = RecurrentSpec("cifg", m.input_size, m.hidden_size, m.proj_size, 1, True)
        params = [m.weight_ih, m.weight_hh, m.bias, m.weight_hr]
    else:
        kind = "lstm" if isinstance(m, nn.LSTM) else "gru"
        if m.bidirectional or not m.bias or (m.num_layers > 1 and m.dropout > 0):
            raise UnsupportedError(
                f"{type(m).__name__} with bidirectional=True, bias=False or inter-layer dropout"
            )
        if len(node.args) > 1 or node.kwargs:
            raise UnsupportedError(f"{type(m).__name__} with an initial state argument")
        proj = getattr(m, "proj_size", 0)
        spec = RecurrentSpec(kind, m.input_size, m.hidden_size, proj, m.num_layers, m.batch_first)
        params = []
        for k in range(m.num_layers):
            names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] + (
                ["weight_hr"] if proj else []
            )
            params += [getattr(m, f"{n}_l{k}") for n in names]
    return Recurrent(spec), [ctx.arg(node.args[0])] + [ctx.param(p) for p in params]


def _conv(ctx, node, m: nn.Conv2d):
    if m.groups != 1 or _pair(m.dilation) != (1, 1) or m.padding_mode != "zeros":
        raise UnsupportedError("Conv2d with groups, dilation or non-zero padding mode")
    padding = m.padding
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif all(k % 2 == 1 for k in _pair(m.kernel_size)):
            padding = tuple(k // 2 for k in _pair(m.kernel_size))
        else:
            raise UnsupportedError("Conv2d padding='same' with an even kernel")
    shape = ctx.shape(node.args[0])
    op = Conv2d(
        _pair(m.kernel_size), _pair(m.stride), _pair(padding), shape[2:], m.bias is not None
    )
    return op, [ctx.arg(node.args[0]), ctx.param(m.weight), ctx.param(m.bias)]


def _maxpool(ctx, node, m: nn.MaxPool2d):
    if m.ceil_mode or _pair(m.dilation) != (1, 1) or m.return_indices:
        raise UnsupportedError("MaxPool2d with ceil_mode, dilation or return_indices")
    stride = m.stride if m.stride is not None else m.kernel_size
    return MaxPool2d(_pair(m.kernel_size), _pair(stride), _pair(m.padding)), [ctx.arg(node.args[0])]


def _layernorm(ctx, node, m: nn.LayerNorm):
    if len(m.normalized_shape) != 1:
        raise UnsupportedError("LayerNorm over more than the last dimension")
    op = LayerNorm(m.normalized_shape[0], m.eps, m.elementwise_affine)
    args = [ctx.arg(node.args[0])]
    if m.elementwise_affine:
        if m.bias is None:
            raise UnsupportedError("LayerNorm with bias=False")
        args += [ctx.param(m.weight), ctx.param(m.bias)]
    return op, args


def _dropout(ctx, node, m: nn.Dropout):
    return Dropout(m.p, ctx.seed_input, ctx.next_dropout_salt()), [ctx.arg(node.args[0])]


def _flatten_module(ctx, node, m: nn.Flatten):
    if m.end_dim != -1:
        raise UnsupportedError("Flatten with end_dim other than -1")
    return Flatten(m.start_dim), [ctx.arg(node.args[0])]


def _pointwise(op_cls):
    return lambda ctx, node, *_: (op_cls(), [ctx.arg(node.args[0])])


def _gelu_module(ctx, node, m: nn.GELU):
    if m.approximate != "none":
        raise UnsupportedError("GELU(approximate='tanh')")
    return Gelu(), [ctx.arg(node.args[0])]


MODULES = {
    nn.Linear: _linear,
    nn.Embedding: _embedding,
    nn.LSTM: _rnn,
    nn.GRU: _rnn,
    CIFGLSTM: _rnn,
    nn.Conv2d: _conv,
    nn.MaxPool2d: _maxpool,
    nn.LayerNorm: _layernorm,
    nn.Dropout: _dropout,
    nn.Flatten: _flatten_module,
    nn.ReLU: _pointwise(Relu),
    nn.Tanh: _pointwise(Tanh),
    nn.Sigmoid: _pointwise(Sigmoid),
    nn.GELU: _gelu_module,
    nn.Identity: _pointwise(Identity),
}
LEAF_MODULES = tuple(MODULES)


def _binary(op_type):
    def lower(ctx, node):
        a, b = (ctx.arg(x) for x in node.args)
        if isinstance(a, str) and isinstance(b, str):
            return Binary(op_type), [a, b]
        if isinstance(a, str) and isinstance(b, (int, float)):
            return Binary(op_type, scalar=b), [a]
        if isinstance(b, str) and isinstance(a, (int, float)):
            return Binary(op_type, scalar=a, scalar_first=True), [b]
        raise UnsupportedError(f"{op_type} of {type(a).__name__} and {type(b).__name__}")

    return lower


def _f_linear(ctx, node):
    x, w = ctx.arg(node.args[0]), ctx.arg(node.args[1])
    b = ctx.arg(node.args[2]) if len(node.args) > 2 else ctx.arg(node.kwargs.get("bias"))
    out_features, in_features = ctx.shape(node.args[1])
    op = Linear(in_features, out_features, b is not None, len(ctx.shape(node.args[0])))
    return op, [x, w, b]


def _flatten_call(ctx, node):
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    if end != -1:
        raise UnsupportedError("flatten with end_dim other than -1")
    return Flatten(start), [ctx.arg(node.args[0])]


def _reshape_call(ctx, node):
    sizes = node.args[1:]
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    if not all(isinstance(s, int) for s in sizes):
        raise UnsupportedError(
            "view/reshape with computed sizes; use constants and -1, or flatten()"
        )
    return Reshape(tuple(sizes)), [ctx.arg(node.args[0])]


def _transpose_call(ctx, node):
    rank = len(ctx.shape(node.args[0]))
    d0, d1 = (d % rank for d in node.args[1:3])
    perm = list(range(rank))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return Transpose(tuple(perm)), [ctx.arg(node.args[0])]


def _permute_call(ctx, node):
    dims = node.args[1:]
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    return Transpose(tuple(dims)), [ctx.arg(node.args[0])]


def _f_dropout(ctx, node):
    raise UnsupportedError("F.dropout; use nn.Dropout so train and eval graphs can differ")


def _f_gelu(ctx, node):
    if node.kwargs.get("approximate", "none") != "none":
        raise UnsupportedError("gelu(approximate='tanh')")
    return Gelu(), [ctx.arg(node.args[0])]


FUNCTIONS = {
    operator.add: _binary("Add"),
    operator.sub: _binary("Sub"),
    operator.mul: _binary("Mul"),
    torch.add: _binary("Add"),
    torch.mul: _binary("Mul"),
    torch.relu: _pointwise(Relu),
    F.relu: _pointwise(Relu),
    torch.tanh: _pointwise(Tanh),
    torch.sigmoid: _pointwise(Sigmoid),
    F.gelu: _f_gelu,
    F.linear: _f_linear,
    torch.flatten: _flatten_call,
    torch.reshape: _reshape_call,
    torch.transpose: _transpose_call,
    torch.permute: _permute_call,
    F.dropout: _f_dropout,
}

METHODS = {
    "relu": _pointwise(Relu),
    "tanh": _pointwise(Tanh),
    "sigmoid": _pointwise(Sigmoid),
    "view": _reshape_call,
    "reshape": _reshape_call,
    "flatten": _flatten_call,
    "transpose": _transpose_call,
    "permute": _permute_call,
    "contiguous": _pointwise(Identity),
}
