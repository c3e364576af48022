"""nn.LSTM, nn.GRU and nn.RNN on the general path: a fast path inside the general one.

Their ATen decomposition unrolls the time loop, which fixes the sequence length. So
while capturing, each layer and direction runs as one custom op, `edge_fl::rnn_layer`
(time-major x [T, B, I] and the initial state h0, c0 [B, H] -> y [T, B, H] and the final
cell state c_n), whose autograd formula is a second custom op,
`edge_fl::rnn_layer_backward` (which also gives the initial state's gradients, so a state
handed from an encoder to a decoder trains both). Both are lowered to the fast path's ONNX
Scan loops with their hand-written backward (ops/lstm_layer.py, gru_layer.py,
rnn_layer.py); the
reverse direction runs on the time-reversed sequence. Stacking, bidirectional
concatenation and inter-layer dropout are ordinary captured ops (the dropout is seeded
like every other).

An LSTM's projection (proj_size) is the op's optional w_hr; bias=False runs with zero
biases whose gradients are dropped; an unbatched input runs as a batch of one. Refused
with UnsupportedError: packed sequences. A GRU's c0 is its h0 again (unused: the op's
signature is shared).
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
from ..ops.recurrent import GATES, RecurrentSpec
from ..ops.rnn_layer import RnnLayer
from .lowering import Lowering, lowers

# one layer and direction: its input, weights, initial state (a GRU's c0 is its h0) and
# an LSTM's projection
_LAYER_ARGS = (
    "Tensor x, Tensor w_ih, Tensor w_hh, Tensor b_ih, Tensor b_hh, Tensor h0, Tensor c0, "
    "Tensor? w_hr, str kind, bool reverse"
)


def _only_while_capturing(*args):
    raise UnsupportedError("edge_fl's recurrent ops exist only while the compiler captures")


rnn_layer = torch.library.custom_op(  # -> y [T, B, H], c_n [B, H]
    "edge_fl::rnn_layer",
    _only_while_capturing,
    mutates_args=(),
    schema=f"({_LAYER_ARGS}) -> (Tensor, Tensor)",
)


@rnn_layer.register_fake
def _rnn_layer_fake(x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, kind, reverse):
    return x.new_empty(x.shape[0], x.shape[1], w_hh.shape[1]), torch.empty_like(c0)


rnn_layer_backward = torch.library.custom_op(  # -> the gradients of the tensors, in order
    "edge_fl::rnn_layer_backward",
    _only_while_capturing,
    mutates_args=(),
    schema=f"(Tensor dy, Tensor dc_n, {_LAYER_ARGS}) -> Tensor[]",
)


@rnn_layer_backward.register_fake
def _rnn_layer_backward_fake(dy, dc_n, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, kind, reverse):
    tensors = (x, w_ih, w_hh, b_ih, b_hh, h0, c0) + ((w_hr,) if w_hr is not None else ())
    return [torch.empty_like(t) for t in tensors]


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:7])
    ctx.w_hr, ctx.kind, ctx.reverse = inputs[7:]


def _backward(ctx, dy, dc_n):
    grads = rnn_layer_backward(dy, dc_n, *ctx.saved_tensors, ctx.w_hr, ctx.kind, ctx.reverse)
    return (*grads[:7], grads[7] if ctx.w_hr is not None else None, None, None)


rnn_layer.register_autograd(_backward, setup_context=_setup)


def _forward(self, input, hx=None):
    """nn.LSTM / nn.GRU / nn.RNN forward through rnn_layer (installed while capturing)."""
    name = type(self).__name__
    if not isinstance(input, Tensor):
        raise UnsupportedError(f"{name} with a packed sequence (pad the batch instead)")
    kind = _KINDS[self.mode]
    unbatched = input.dim() == 2  # [T, I]: a batch of one, in and out
    if unbatched:
        input = input.unsqueeze(1)
        if hx is not None:
            hx = tuple(h.unsqueeze(1) for h in hx) if kind == "lstm" else hx.unsqueeze(1)
    x = input.transpose(0, 1) if self.batch_first and not unbatched else input
    directions = 2 if self.bidirectional else 1
    projected = getattr(self, "proj_size", 0)
    if hx is None:
        size = (self.num_layers * directions, x.shape[1])
        h0 = x.new_zeros(*size, projected or self.hidden_size)
        c0 = x.new_zeros(*size, self.hidden_size) if kind == "lstm" else h0
    elif kind == "lstm":
        h0, c0 = hx
    else:
        h0 = c0 = hx
    finals, cells = [], []
    for layer in range(self.num_layers):
        outs = []
        for direction in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            w_ih, w_hh = (getattr(self, f"{w}{suffix}") for w in ("weight_ih", "weight_hh"))
            if self.bias:
                biases = [getattr(self, f"{b}{suffix}") for b in ("bias_ih", "bias_hh")]
            else:  # constants: their gradients go nowhere
                biases = [w_ih.new_zeros(w_ih.shape[0])] * 2
            w_hr = getattr(self, f"weight_hr{suffix}") if projected else None
            at = layer * directions + direction
            y, c_n = rnn_layer(x, w_ih, w_hh, *biases, h0[at], c0[at], w_hr, kind, bool(direction))
            outs.append(y)
            finals.append(y[0] if direction else y[-1])
            cells.append(c_n)
        x = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
        if self.dropout and self.training and layer < self.num_layers - 1:
            x = F.dropout(x, self.dropout, training=True)
    y = x.transpose(0, 1) if self.batch_first and not unbatched else x
    h_n, c_n = torch.stack(finals), torch.stack(cells)
    if unbatched:
        y, h_n, c_n = y.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
    return y, ((h_n, c_n) if kind == "lstm" else h_n)


_KINDS = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}
_LAYERS = {"lstm": LstmLayer, "gru": GruLayer, "rnn_tanh": RnnLayer, "rnn_relu": RnnLayer}


@contextlib.contextmanager
def recurrent_layers():
    """Route nn.LSTM, nn.GRU and nn.RNN through rnn_layer while capturing."""
    modules = (nn.LSTM, nn.GRU, nn.RNN)
    originals = [m.forward for m in modules]
    for m in modules:
        m.forward = _forward
    try:
        yield
    finally:
        for m, forward in zip(modules, originals):
            m.forward = forward


def _reversed(ctx: Lowering, x: str) -> str:
    g = ctx.g
    return g.op("Slice", x, g.ints(-1), g.ints(-(2**63 - 1)), g.ints(0), g.ints(-1))


def _layer(ctx: Lowering, node, kind: str, projected: bool):
    input_size = node.args[0].meta["val"].shape[-1]
    rows = node.args[1].meta["val"].shape[0]  # w_ih: [gates * H, I]
    proj_size = node.args[2].meta["val"].shape[1] if projected else 0  # w_hh: [gates * H, P]
    spec = RecurrentSpec(kind, input_size, rows // GATES[kind], proj_size, 1, False)
    return _LAYERS[kind](spec, input_size)


@lowers(torch.ops.edge_fl.rnn_layer.default)
def _rnn_layer(ctx: Lowering, node, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, kind, reverse):
    layer = _layer(ctx, node, kind, w_hr is not None)
    y, h_n, c_n = layer.forward(
        ctx.g,
        _reversed(ctx, x) if reverse else x,
        [w_ih, w_hh, b_ih, b_hh] + ([w_hr] if w_hr is not None else []),
        ctx.seed is not None,
        h0=h0,
        c0=c0 if kind == "lstm" else None,
    )
    ctx.layers[(x, w_ih, reverse)] = layer
    return (_reversed(ctx, y) if reverse else y), (c_n if kind == "lstm" else h_n)


@lowers(torch.ops.edge_fl.rnn_layer_backward.default)
def _rnn_layer_backward(
    ctx: Lowering, node, dy, dc_n, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, kind, reverse
):
    layer = ctx.layers[(x, w_ih, reverse)]
    dx, grads = layer.backward(
        ctx.g, _reversed(ctx, dy) if reverse else dy, True, dc_n if kind == "lstm" else None
    )
    dx = _reversed(ctx, dx) if reverse else dx
    dh0, dc0 = layer.initial_state_grads(ctx.g)
    if dc0 is None:  # a GRU or RNN: its c0 is its h0 again, whose gradient dh0 already is
        dc0 = ctx.g.op("Mul", h0, ctx.g.const(0.0))
    grads = [dense(ctx.g, grad) for grad in grads]  # w_ih, w_hh, b_ih, b_hh[, w_hr]
    return [dx, *grads[:4], dh0, dc0, *grads[4:]]
