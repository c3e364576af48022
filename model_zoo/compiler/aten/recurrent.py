"""nn.LSTM and nn.GRU on the general path: a fast path inside the general one.

Their ATen decomposition unrolls the time loop, which fixes the sequence length. So
while capturing, each layer and direction runs as one custom op, `edge_fl::rnn_layer`
(time-major x [T, B, I] -> y [T, B, H], zero initial state), whose autograd formula is a
second custom op, `edge_fl::rnn_layer_backward`. Both are lowered to the fast path's ONNX
Scan loops with their hand-written backward (ops/lstm_layer.py, ops/gru_layer.py); the
reverse direction runs on the time-reversed sequence. Stacking, bidirectional
concatenation and inter-layer dropout are ordinary captured ops (the dropout is seeded
like every other).

Limits (refused with UnsupportedError): an initial state, packed sequences, proj_size,
bias=False, unbatched input; the LSTM's final cell state c_n cannot be used (h_n can).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..gradients import dense
from ..ops.base import UnsupportedError
from ..ops.gru_layer import GruLayer
from ..ops.lstm_layer import LstmLayer
from ..ops.recurrent import RecurrentSpec
from .lowering import Lowering, lowers


@torch.library.custom_op("edge_fl::rnn_layer", mutates_args=())
def rnn_layer(
    x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor, kind: str, reverse: bool
) -> Tensor:
    raise UnsupportedError("edge_fl::rnn_layer exists only while the compiler captures a step")


@rnn_layer.register_fake
def _rnn_layer_fake(x, w_ih, w_hh, b_ih, b_hh, kind, reverse):
    return x.new_empty(x.shape[0], x.shape[1], w_hh.shape[1])


@torch.library.custom_op("edge_fl::rnn_layer_backward", mutates_args=())
def rnn_layer_backward(
    dy: Tensor,
    x: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
    kind: str,
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    raise UnsupportedError("edge_fl::rnn_layer_backward exists only while capturing")


@rnn_layer_backward.register_fake
def _rnn_layer_backward_fake(dy, x, w_ih, w_hh, b_ih, b_hh, kind, reverse):
    return (
        torch.empty_like(x),
        torch.empty_like(w_ih),
        torch.empty_like(w_hh),
        torch.empty_like(b_ih),
        torch.empty_like(b_hh),
    )


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:5])
    ctx.kind, ctx.reverse = inputs[5], inputs[6]


def _backward(ctx, dy):
    return (*rnn_layer_backward(dy, *ctx.saved_tensors, ctx.kind, ctx.reverse), None, None)


rnn_layer.register_autograd(_backward, setup_context=_setup)


class _Unavailable:
    """Stands for the LSTM's final cell state, which the lowering does not produce: any
    use of it is refused."""

    @staticmethod
    def _refuse(*args, **kwargs):
        raise UnsupportedError(
            "the LSTM's final cell state c_n on the general path; use the outputs or h_n"
        )

    __torch_function__ = classmethod(lambda cls, *args, **kwargs: _Unavailable._refuse())
    __getitem__ = __iter__ = __len__ = __add__ = __radd__ = __mul__ = __rmul__ = _refuse

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        self._refuse()


def _forward(self, input, hx=None):
    """nn.LSTM / nn.GRU forward through rnn_layer (installed while capturing)."""
    name = type(self).__name__
    if hx is not None or not isinstance(input, Tensor):
        raise UnsupportedError(f"{name} with an initial state or a packed sequence")
    if getattr(self, "proj_size", 0) or not self.bias or input.dim() != 3:
        raise UnsupportedError(
            f"{name} with proj_size, bias=False or unbatched input on the general path"
        )
    kind = "lstm" if isinstance(self, nn.LSTM) else "gru"
    x = input.transpose(0, 1) if self.batch_first else input
    finals = []
    for layer in range(self.num_layers):
        outs = []
        for direction in range(2 if self.bidirectional else 1):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            weights = [
                getattr(self, f"{w}{suffix}")
                for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
            y = rnn_layer(x, *weights, kind, bool(direction))
            outs.append(y)
            finals.append(y[0] if direction else y[-1])
        x = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
        if self.dropout and self.training and layer < self.num_layers - 1:
            x = F.dropout(x, self.dropout, training=True)
    y = x.transpose(0, 1) if self.batch_first else x
    h_n = torch.stack(finals)
    return y, ((h_n, _Unavailable()) if kind == "lstm" else h_n)


@contextlib.contextmanager
def recurrent_layers():
    """Route nn.LSTM and nn.GRU through rnn_layer while capturing."""
    originals = nn.LSTM.forward, nn.GRU.forward
    nn.LSTM.forward = nn.GRU.forward = _forward
    try:
        yield
    finally:
        nn.LSTM.forward, nn.GRU.forward = originals


def _reversed(ctx: Lowering, x: str) -> str:
    g = ctx.g
    return g.op("Slice", x, g.ints(-1), g.ints(-(2**63 - 1)), g.ints(0), g.ints(-1))


def _layer(ctx: Lowering, node, kind: str):
    input_size = node.args[0].meta["val"].shape[-1]
    hidden = node.args[2].meta["val"].shape[1]
    spec = RecurrentSpec(kind, input_size, hidden, 0, 1, False)
    return (GruLayer if kind == "gru" else LstmLayer)(spec, input_size)


@lowers(torch.ops.edge_fl.rnn_layer.default)
def _rnn_layer(ctx: Lowering, node, x, w_ih, w_hh, b_ih, b_hh, kind, reverse):
    layer = _layer(ctx, node, kind)
    y, _, _ = layer.forward(
        ctx.g, _reversed(ctx, x) if reverse else x, [w_ih, w_hh, b_ih, b_hh], ctx.seed is not None
    )
    ctx.layers[(x, w_ih, reverse)] = layer
    return _reversed(ctx, y) if reverse else y


@lowers(torch.ops.edge_fl.rnn_layer_backward.default)
def _rnn_layer_backward(ctx: Lowering, node, dy, x, w_ih, w_hh, b_ih, b_hh, kind, reverse):
    layer = ctx.layers[(x, w_ih, reverse)]
    dx, grads = layer.backward(ctx.g, _reversed(ctx, dy) if reverse else dy, True)
    dx = _reversed(ctx, dx) if reverse else dx
    return (dx, *[dense(ctx.g, grad) for grad in grads])
