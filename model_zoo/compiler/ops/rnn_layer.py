"""One Elman RNN layer (nn.RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh), act tanh or
relu) as a Scan loop in the rows layout [T, B, F], with a hand-written backward loop.

As in the GRU layer: the input projection runs before the forward loop over all steps,
the activation's slope (a function of the outputs alone) before the backward loop, and
the weight gradients after it as single products.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .scan import scan
from .sequence import shift_back, sum_time_batch, zeros_rows

if TYPE_CHECKING:
    from .recurrent import RecurrentSpec


class RnnLayer:
    """One tanh or relu RNN layer over time-major x [T, B, I]."""

    def __init__(self, spec: RecurrentSpec, input_size: int):
        self.input_size, self.H = input_size, spec.hidden_size
        self.activation = {"rnn_tanh": "Tanh", "rnn_relu": "Relu"}[spec.kind]

    def forward(self, g, x, params, training, h0=None, c0=None):
        """x rows [T, B, I] -> (y rows [T, B, H], h_n [B, H], None); h0 [B, H] is zeros
        unless given (c0 is the LSTM's and ignored)."""
        w_ih, w_hh, b_ih, b_hh = params
        self.x, self.w_ih, self.w_hh = x, w_ih, w_hh
        bias = g.op("Add", b_ih, b_hh)
        xg = g.op("Add", g.op("MatMul", x, g.op("Transpose", w_ih, perm=[1, 0])), bias)
        w_hh_t = g.op("Transpose", w_hh, perm=[1, 0])
        self.h0 = zeros_rows(g, x, self.H) if h0 is None else h0

        def body(b, states, slices):
            h_new = b.op(self.activation, b.op("Add", slices[0], b.op("MatMul", states[0], w_hh_t)))
            return [h_new], [b.op("Identity", h_new)]

        (h_n,), (self.y,) = scan(g, body, [self.h0], [xg], 1)
        return self.y, h_n, None

    def backward(self, g, dy, need_dx, dc_n=None):
        """dy rows [T, B, H] -> (dx or None, [dW_ih, dW_hh, db_ih, db_hh]); the initial
        state's gradient comes from `initial_state_grads` afterwards."""
        H = self.H
        if self.activation == "Tanh":  # tanh' = 1 - y^2
            slope = g.op("Sub", g.const(1.0), g.op("Mul", self.y, self.y))
        else:  # relu' = [y > 0]
            slope = g.op("Cast", g.op("Greater", self.y, g.const(0.0)), to=1)
        w_hh = self.w_hh

        def body(b, states, slices):
            dy_t, slope_t = slices
            da = b.op("Mul", b.op("Add", dy_t, states[0]), slope_t)
            return [b.op("MatMul", da, w_hh)], [b.op("Identity", da)]

        (dh0,), (da,) = scan(g, body, [zeros_rows(g, self.x, H)], [dy, slope], 1, reverse=True)
        self._initial_grad = dh0
        h_prev = shift_back(g, self.y, self.h0)
        d_bias = g.op("ReduceSum", g.op("Reshape", da, g.ints(-1, H)), g.ints(0), keepdims=0)
        grads = [
            sum_time_batch(g, da, self.x, H, self.input_size),
            sum_time_batch(g, da, h_prev, H, H),
            d_bias,
            d_bias,
        ]
        dx = g.op("MatMul", da, self.w_ih) if need_dx else None
        return dx, grads

    def initial_state_grads(self, g) -> tuple[str, None]:
        """After backward: the gradient of h0 [B, H] (no cell state)."""
        return self._initial_grad, None
