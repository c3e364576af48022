"""One GRU layer (Cho et al. 2014, PyTorch's form: the reset gate applies to W_hn h + b_hn)
as a Scan loop in the rows layout [T, B, F], with a hand-written backward loop.

The input projection runs before the forward loop over all steps; the gate-derivative
coefficients before the backward loop; the weight gradients after it as single Gemms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .scan import scan
from .sequence import shift_back, sum_time_batch, zeros_rows

if TYPE_CHECKING:
    from .recurrent import RecurrentSpec


class GruLayer:
    """One GRU layer over time-major x [T, B, I]."""

    def __init__(self, spec: RecurrentSpec, input_size: int):
        self.spec, self.input_size, self.H = spec, input_size, spec.hidden_size

    def forward(self, g, x, params, training, h0=None, c0=None):
        """x rows [T, B, I] -> (y rows [T, B, H], h_n [B, H], None); the initial state h0
        [B, H] is zeros unless given (c0 is the LSTM's and ignored)."""
        w_ih, w_hh, b_ih, b_hh = params
        self.x, self.w_ih, self.w_hh = x, w_ih, w_hh
        xg = g.op("Add", g.op("MatMul", x, g.op("Transpose", w_ih, perm=[1, 0])), b_ih)
        w_hh_t = g.op("Transpose", w_hh, perm=[1, 0])
        self.h0 = zeros_rows(g, x, self.H) if h0 is None else h0

        def body(b, states, slices):
            (h,) = states
            hg = b.op("Add", b.op("MatMul", h, w_hh_t), b_hh)
            xr, xz, xn = b.op("Split", slices[0], axis=1, num_outputs=3, outputs=3)
            hr, hz, hn = b.op("Split", hg, axis=1, num_outputs=3, outputs=3)
            r = b.op("Sigmoid", b.op("Add", xr, hr))
            z = b.op("Sigmoid", b.op("Add", xz, hz))
            n = b.op("Tanh", b.op("Add", xn, b.op("Mul", r, hn)))
            h_new = b.op("Add", n, b.op("Mul", z, b.op("Sub", h, n)))
            outs = [h_new]
            if training:
                outs.append(b.op("Concat", r, z, n, hn, axis=1))
            return [h_new], outs

        (h_n,), outs = scan(g, body, [self.h0], [xg], 2 if training else 1)
        self.y = outs[0]
        if training:
            self.saved = outs[1]
        return self.y, h_n, None

    def backward(self, g, dy, need_dx, dc_n=None):
        """dy rows [T, B, H] -> (dx or None, param grads); the initial state's gradient
        comes from `initial_state_grads` afterwards (dc_n is the LSTM's and ignored)."""
        H = self.H
        one = g.const(1.0)
        r, z, n, hn = g.op("Split", self.saved, axis=2, num_outputs=4, outputs=4)
        h_prev = shift_back(g, self.y, self.h0)
        # coefficients that do not depend on the recurrence
        coef_n = g.op("Mul", g.op("Sub", one, z), g.op("Sub", one, g.op("Mul", n, n)))
        coef_z = g.op("Mul", g.op("Sub", h_prev, n), g.op("Mul", z, g.op("Sub", one, z)))
        coef_r = g.op("Mul", hn, g.op("Mul", r, g.op("Sub", one, r)))
        w_hh = self.w_hh

        def body(b, states, slices):
            (dh,) = states
            dy_t, cn, cz, cr, r_t, z_t = slices
            dh_tot = b.op("Add", dy_t, dh)
            dn_pre = b.op("Mul", dh_tot, cn)
            dz_pre = b.op("Mul", dh_tot, cz)
            dr_pre = b.op("Mul", dn_pre, cr)
            dxg = b.op("Concat", dr_pre, dz_pre, dn_pre, axis=1)
            dhg = b.op("Concat", dr_pre, dz_pre, b.op("Mul", dn_pre, r_t), axis=1)
            dh_prev = b.op("Add", b.op("Mul", dh_tot, z_t), b.op("MatMul", dhg, w_hh))
            return [dh_prev], [dxg, dhg]

        (dh0,), (dxg, dhg) = scan(
            g, body, [zeros_rows(g, self.x, H)], [dy, coef_n, coef_z, coef_r, r, z], 2, reverse=True
        )
        self._initial_grad = dh0
        grads = [
            sum_time_batch(g, dxg, self.x, 3 * H, self.input_size),
            sum_time_batch(g, dhg, h_prev, 3 * H, H),
            g.op("ReduceSum", g.op("Reshape", dxg, g.ints(-1, 3 * H)), g.ints(0), keepdims=0),
            g.op("ReduceSum", g.op("Reshape", dhg, g.ints(-1, 3 * H)), g.ints(0), keepdims=0),
        ]
        dx = g.op("MatMul", dxg, self.w_ih) if need_dx else None
        return dx, grads

    def initial_state_grads(self, g) -> tuple[str, None]:
        """After backward: the gradient of h0 [B, H] (a GRU has no cell state)."""
        return self._initial_grad, None
