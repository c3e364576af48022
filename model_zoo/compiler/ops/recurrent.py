"""Recurrent modules (nn.LSTM, nn.GRU, CIFGLSTM; multi-layer, projected) as stacks of
layers, each a forward Scan loop with a hand-written backward loop: lstm_layer.py and
gru_layer.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Op, UnsupportedError
from .gru_layer import GruLayer
from .lstm_layer import LstmLayer

# weight blocks per layer: W_ih is [GATES * H, I]
GATES = {"lstm": 4, "cifg": 3, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


@dataclass(frozen=True)
class RecurrentSpec:
    kind: str  # "lstm" | "cifg" | "gru" | "rnn_tanh" | "rnn_relu"
    input_size: int
    hidden_size: int
    proj_size: int  # 0 = no projection
    num_layers: int
    batch_first: bool

    @property
    def gates(self) -> int:
        return GATES[self.kind]

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def layer_param_count(self) -> int:
        if self.kind == "cifg":
            return 3 + (1 if self.proj_size else 0)  # W_ih, W_hh, b, [W_hr]
        return 4 + (1 if self.proj_size else 0)  # W_ih, W_hh, b_ih, b_hh, [W_hr]


class Recurrent(Op):
    """A (multi-layer) recurrent module: inputs [x, *params]; outputs (y, (h_n, c_n)) for
    LSTM/CIFG and (y, h_n) for GRU, as PyTorch returns them. Only y carries gradients."""

    def __init__(self, spec: RecurrentSpec):
        self.spec = spec
        layer_cls = GruLayer if spec.kind == "gru" else LstmLayer
        sizes = [spec.input_size] + [spec.output_size] * (spec.num_layers - 1)
        self.layers = [layer_cls(spec, size) for size in sizes]

    def forward(self, g, inputs, training):
        s = self.spec
        x, params = inputs[0], inputs[1:]
        k = s.layer_param_count()
        if s.batch_first:
            x = g.op("Transpose", x, perm=[1, 0, 2])
        finals_h, finals_c = [], []
        for index, layer in enumerate(self.layers):
            x, h_n, c_n = layer.forward(g, x, params[index * k : (index + 1) * k], training)
            finals_h.append(g.op("Unsqueeze", h_n, g.ints(0)))
            if c_n is not None:
                finals_c.append(g.op("Unsqueeze", c_n, g.ints(0)))
        y = g.op("Transpose", x, perm=[1, 0, 2]) if s.batch_first else x
        h_n = g.op("Concat", *finals_h, axis=0)
        if s.kind == "gru":
            return (y, h_n)
        return (y, (h_n, g.op("Concat", *finals_c, axis=0)))

    def backward(self, g, grad_outputs, needs_grad):
        dy = grad_outputs[0]
        if any(grad is not None for grad in grad_outputs[1:]):
            raise UnsupportedError(
                "gradients through final recurrent states (h_n, c_n) are "
                "not supported; use the output sequence"
            )
        if self.spec.batch_first:
            dy = g.op("Transpose", dy, perm=[1, 0, 2])
        param_grads: list = []
        for index in reversed(range(len(self.layers))):
            need_dx = index > 0 or needs_grad[0]
            dy, grads = self.layers[index].backward(g, dy, need_dx)
            param_grads = grads + param_grads
        dx = None
        if needs_grad[0]:
            dx = g.op("Transpose", dy, perm=[1, 0, 2]) if self.spec.batch_first else dy
        return [dx] + param_grads
