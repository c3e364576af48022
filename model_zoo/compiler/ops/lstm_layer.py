"""One LSTM layer (optionally CIFG and projected) as ONNX Scan loops with a hand-written
backward loop.

LSTM after Hochreiter & Schmidhuber 1997 in PyTorch's gate order (i, f, g, o); CIFG
(coupled input and forget gate, i = 1 - f) after Greff et al. 2017, gate order (f, g, o),
used by Hard et al. 2018 for the keyboard; projection after Sak et al. 2014.

Everything that does not depend on the recurrence runs outside the loops as one large
operation over all time steps, in the rows layout [T * B, F]: the input projection
before the forward loop; the gate-derivative coefficients before the backward loop; the
weight gradients and the input gradient after it.

The loops run feature-major: states are [F, B] and each step multiplies W_hh [nH, P] by
h [P, B]. ONNX Runtime's Gemm (MLAS) repacks its right operand on every call, and W is
not a constant it could pack once; with the small h on the right only h is repacked and W
is read in place, which is measurably faster per product (docs/benchmarks.md), and
there are hundreds of products per train step. Gate blocks are
contiguous rows of [nH, B], so Split and Concat move whole blocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..gradients import Product
from .scan import scan
from .sequence import shift_back, to_rows, zeros_columns, zeros_rows

if TYPE_CHECKING:
    from .recurrent import RecurrentSpec


class LstmLayer:
    """One LSTM/CIFG layer over a rows sequence x [T, B, I]."""

    def __init__(self, spec: RecurrentSpec, input_size: int):
        self.input_size = input_size
        self.cifg = spec.kind == "cifg"
        self.projected = bool(spec.proj_size)
        self.n, self.H, self.P = spec.gates, spec.hidden_size, spec.output_size

    def forward(self, g, x, params, training, h0=None, c0=None):
        """x rows [T, B, I] -> (y rows [T, B, P], h_n [B, P], c_n [B, H]); the initial
        state h0 [B, P], c0 [B, H] is zeros unless given."""
        n, H, P = self.n, self.H, self.P
        if self.cifg:
            w_ih, w_hh, bias = params[:3]
            w_hr = params[3] if self.projected else None
        else:
            w_ih, w_hh, b_ih, b_hh = params[:4]
            w_hr = params[4] if self.projected else None
            bias = g.op("Add", b_ih, b_hh)
        self.x, self.w_ih, self.w_hh, self.w_hr = x, w_ih, w_hh, w_hr
        time_batch = g.op("Slice", g.op("Shape", x), g.ints(0), g.ints(2))
        xg = g.op("Gemm", g.op("Reshape", x, g.ints(-1, self.input_size)), w_ih, bias, transB=1)
        xg = g.op("Reshape", xg, g.op("Concat", time_batch, g.ints(n * H), axis=0))
        xg_fm = g.op("Transpose", xg, perm=[0, 2, 1])
        self.h0_rows = h0
        self.h0 = zeros_columns(g, x, P) if h0 is None else g.op("Transpose", h0, perm=[1, 0])
        self.c0 = zeros_columns(g, x, H) if c0 is None else g.op("Transpose", c0, perm=[1, 0])

        def body(b, states, slices):
            h, c = states
            parts = b.op(
                "Split", b.op("Gemm", w_hh, h, slices[0]), axis=0, num_outputs=n, outputs=n
            )
            if self.cifg:
                f = b.op("Sigmoid", parts[0])
                gg, o = b.op("Tanh", parts[1]), b.op("Sigmoid", parts[2])
                # c' = f c + (1 - f) g = g + f (c - g)
                c_new = b.op("Add", gg, b.op("Mul", f, b.op("Sub", c, gg)))
                i = None
            else:
                i, f = b.op("Sigmoid", parts[0]), b.op("Sigmoid", parts[1])
                gg, o = b.op("Tanh", parts[2]), b.op("Sigmoid", parts[3])
                c_new = b.op("Add", b.op("Mul", f, c), b.op("Mul", i, gg))
            tc = b.op("Tanh", c_new)
            m = b.op("Mul", o, tc)
            h_new = b.op("MatMul", w_hr, m) if w_hr else m
            outs = [h_new]
            if training:
                outs += self._coefficients(b, c, i, f, gg, o, tc) + ([m] if w_hr else [])
            return [h_new, c_new], outs

        n_outs = (1 + 3 + (1 if self.projected else 0)) if training else 1
        (h_n, c_n), outs = scan(g, body, [self.h0, self.c0], [xg_fm], n_outs)
        self.y = g.op("Transpose", outs[0], perm=[0, 2, 1])
        if training:
            self.coef_gates, self.coef_c, self.f = outs[1:4]
            self.m = outs[4] if self.projected else None
        return self.y, g.op("Transpose", h_n, perm=[1, 0]), g.op("Transpose", c_n, perm=[1, 0])

    def _coefficients(self, b, c, i, f, gg, o, tc):
        """The backward loop's per-step factors, computed where the gates are at hand:
        dgates = [dc, dc, (dc,) dm] * coef_gates, dc = dc_next + dm * coef_c, and f.
        Here they cost a few nodes per step; as about 20 passes over [T, H, B] after the
        loop they cost more (docs/benchmarks.md)."""
        one = b.const(1.0)
        sig_slope = lambda a: b.op("Mul", a, b.op("Sub", one, a))  # noqa: E731
        tanh_slope = lambda a: b.op("Sub", one, b.op("Mul", a, a))  # noqa: E731
        coef_o = b.op("Mul", tc, sig_slope(o))
        coef_c = b.op("Mul", o, tanh_slope(tc))
        if self.cifg:
            coef = [
                b.op("Mul", b.op("Sub", c, gg), sig_slope(f)),
                b.op("Mul", b.op("Sub", one, f), tanh_slope(gg)),
            ]
        else:
            coef = [
                b.op("Mul", gg, sig_slope(i)),
                b.op("Mul", c, sig_slope(f)),
                b.op("Mul", i, tanh_slope(gg)),
            ]
        return [b.op("Concat", *coef, coef_o, axis=0), coef_c, f]

    def backward(self, g, dy, need_dx, dc_n=None):
        """dy rows [T, B, P] (and dc_n [B, H], the final cell state's gradient, if it is
        used) -> (dx rows [T, B, I] or None, [this layer's param grads]); the initial
        state's gradients come from `initial_state_grads` afterwards."""
        n, H, P = self.n, self.H, self.P
        w_hh_t = g.op("Transpose", self.w_hh, perm=[1, 0])
        w_hr_t = g.op("Transpose", self.w_hr, perm=[1, 0]) if self.projected else None

        def body(b, states, slices):
            dh, dc = states
            dy_t, coef_t, coef_c_t, f_t = slices
            dh_tot = b.op("Add", dy_t, dh)
            dm = b.op("MatMul", w_hr_t, dh_tot) if w_hr_t else dh_tot
            dc_tot = b.op("Add", dc, b.op("Mul", dm, coef_c_t))
            stacked = b.op("Concat", *([dc_tot] * (n - 1)), dm, axis=0)
            dgates = b.op("Mul", stacked, coef_t)
            dh_prev = b.op("MatMul", w_hh_t, dgates)
            dc_prev = b.op("Mul", dc_tot, f_t)
            return [dh_prev, dc_prev], ([dgates, dh_tot] if w_hr_t else [dgates])

        dy_fm = g.op("Transpose", dy, perm=[0, 2, 1])
        dc_last = (
            zeros_columns(g, self.x, H) if dc_n is None else g.op("Transpose", dc_n, perm=[1, 0])
        )
        (dh0, dc0), outs = scan(
            g,
            body,
            [zeros_columns(g, self.x, P), dc_last],
            [dy_fm, self.coef_gates, self.coef_c, self.f],
            2 if self.projected else 1,
            reverse=True,
        )
        dgates = to_rows(g, outs[0], n * H)
        self._initial_grads = dh0, dc0  # columns; rows only if asked (the zoo never asks)
        first = zeros_rows(g, self.x, P) if self.h0_rows is None else self.h0_rows
        h_prev = shift_back(g, self.y, first)
        d_w_ih = Product(dgates, g.op("Reshape", self.x, g.ints(-1, self.input_size)), trans_a=True)
        d_w_hh = Product(dgates, g.op("Reshape", h_prev, g.ints(-1, P)), trans_a=True)
        d_bias = g.op("ReduceSum", dgates, g.ints(0), keepdims=0)
        grads = [d_w_ih, d_w_hh] + ([d_bias] if self.cifg else [d_bias, d_bias])
        if self.projected:
            grads.append(Product(to_rows(g, outs[1], P), to_rows(g, self.m, H), trans_a=True))
        dx = None
        if need_dx:
            dx = g.op("Reshape", g.op("MatMul", dgates, self.w_ih), g.op("Shape", self.x))
        return dx, grads

    def initial_state_grads(self, g) -> tuple[str, str]:
        """After backward: the gradients of h0 [B, P] and c0 [B, H]."""
        return tuple(g.op("Transpose", d, perm=[1, 0]) for d in self._initial_grads)
