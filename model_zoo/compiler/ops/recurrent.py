"""LSTM (optionally CIFG and projected) and GRU layers as ONNX Scan loops with hand-written
backward loops.

Everything that does not depend on the recurrence runs outside the loops as one large
operation over all time steps: the input projection x W_ih^T before the forward loop; the
gate-derivative coefficients before the backward loop; the weight gradients
(sum_t dgates_t^T h_{t-1}) and the input gradient after it. The loops themselves keep only
the recurrent matrix product and a few elementwise operations, which is what makes the
step cheap on ONNX Runtime.

LSTM after Hochreiter & Schmidhuber 1997 in PyTorch's gate order (i, f, g, o); CIFG
(coupled input and forget gate, i = 1 - f) after Greff et al. 2017, used by Hard et al.
2018 for the keyboard; projection after Sak et al. 2014; GRU after Cho et al. 2014 in
PyTorch's form (r, z, n with the reset gate applied to W_hn h + b_hn).
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Op, UnsupportedError
from .scan import scan


@dataclass(frozen=True)
class RecurrentSpec:
    kind: str  # "lstm" | "cifg" | "gru"
    input_size: int
    hidden_size: int
    proj_size: int  # 0 = no projection
    num_layers: int
    batch_first: bool

    @property
    def gates(self) -> int:
        return {"lstm": 4, "cifg": 3, "gru": 3}[self.kind]

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def layer_param_count(self) -> int:
        if self.kind == "cifg":
            return 3 + (1 if self.proj_size else 0)  # W_ih, W_hh, b, [W_hr]
        return 4 + (1 if self.proj_size else 0)  # W_ih, W_hh, b_ih, b_hh, [W_hr]


def _matmul_t(g, x, w_t):
    return g.op("MatMul", x, w_t)


def _zeros_state(g, x_tm, size):
    batch = g.op("Slice", g.op("Shape", x_tm), g.ints(1), g.ints(2))
    return g.op("ConstantOfShape", g.op("Concat", batch, g.ints(size), axis=0))


def _shift_back(g, seq, first):
    """[first, seq[0], ..., seq[T-2]]: the previous-step values for every step."""
    head = g.op("Unsqueeze", first, g.ints(0))
    body = g.op("Slice", seq, g.ints(0), g.ints(-1), g.ints(0))
    return g.op("Concat", head, body, axis=0)


def _sum_time_batch(g, a, b, width_a, width_b):
    """sum_t a_t^T b_t for a [T, B, width_a], b [T, B, width_b] -> [width_a, width_b]."""
    a2 = g.op("Reshape", a, g.ints(-1, width_a))
    b2 = g.op("Reshape", b, g.ints(-1, width_b))
    return g.op("Gemm", a2, b2, transA=1)


class _LstmLayer:
    """One LSTM/CIFG layer over time-major x [T, B, I]."""

    def __init__(self, spec: RecurrentSpec, input_size: int):
        self.spec, self.input_size = spec, input_size
        self.cifg = spec.kind == "cifg"
        self.H, self.P = spec.hidden_size, spec.output_size

    def forward(self, g, x, params, training):
        H = self.H
        if self.cifg:
            w_ih, w_hh, bias = params[:3]
            w_hr = params[3] if self.spec.proj_size else None
        else:
            w_ih, w_hh, b_ih, b_hh = params[:4]
            w_hr = params[4] if self.spec.proj_size else None
            bias = g.op("Add", b_ih, b_hh)
        self.x, self.w_ih, self.w_hh, self.w_hr = x, w_ih, w_hh, w_hr
        xg = g.op("Add", _matmul_t(g, x, g.op("Transpose", w_ih, perm=[1, 0])), bias)
        w_hh_t = g.op("Transpose", w_hh, perm=[1, 0])
        w_hr_t = g.op("Transpose", w_hr, perm=[1, 0]) if w_hr else None
        self.h0, self.c0 = _zeros_state(g, x, self.P), _zeros_state(g, x, H)
        n_gates = self.spec.gates

        def body(b, states, slices):
            h, c = states
            gates = b.op("Add", slices[0], b.op("MatMul", h, w_hh_t))
            parts = b.op("Split", gates, axis=1, num_outputs=n_gates, outputs=n_gates)
            if self.cifg:
                f = b.op("Sigmoid", parts[0])
                gg, o = b.op("Tanh", parts[1]), b.op("Sigmoid", parts[2])
                # c' = f c + (1 - f) g = g + f (c - g)
                c_new = b.op("Add", gg, b.op("Mul", f, b.op("Sub", c, gg)))
                acts = [f, gg, o]
            else:
                i, f = b.op("Sigmoid", parts[0]), b.op("Sigmoid", parts[1])
                gg, o = b.op("Tanh", parts[2]), b.op("Sigmoid", parts[3])
                c_new = b.op("Add", b.op("Mul", f, c), b.op("Mul", i, gg))
                acts = [i, f, gg, o]
            h_new = b.op("Mul", o, b.op("Tanh", c_new))
            if w_hr_t:
                h_new = b.op("MatMul", h_new, w_hr_t)
            outs = [h_new]
            if training:
                outs += [c_new, b.op("Concat", *acts, axis=1)]
            return [h_new, c_new], outs

        (h_n, c_n), outs = scan(g, body, [self.h0, self.c0], [xg], 3 if training else 1)
        self.y = outs[0]
        if training:
            self.c_seq, self.acts = outs[1], outs[2]
        return self.y, h_n, c_n

    def backward(self, g, dy, need_dx):
        """dy [T, B, P] -> (dx [T, B, I] or None, [grads of this layer's params])."""
        H, P, n = self.H, self.P, self.spec.gates
        c_prev = _shift_back(g, self.c_seq, self.c0)
        tc = g.op("Tanh", self.c_seq)
        one = g.const(1.0)
        parts = g.op("Split", self.acts, axis=2, num_outputs=n, outputs=n)
        if self.cifg:
            f, gg, o = parts
        else:
            i, f, gg, o = parts
        sig_slope = lambda a: g.op("Mul", a, g.op("Sub", one, a))  # noqa: E731
        tanh_slope = lambda a: g.op("Sub", one, g.op("Mul", a, a))  # noqa: E731
        # per-step coefficients: dgates = [dc, dc, (dc,) dm] * coef (see module docstring)
        coef_o = g.op("Mul", tc, sig_slope(o))
        coef_c = g.op("Mul", o, tanh_slope(tc))
        if self.cifg:
            coef = [g.op("Mul", g.op("Sub", c_prev, gg), sig_slope(f)),
                    g.op("Mul", g.op("Sub", one, f), tanh_slope(gg))]
        else:
            coef = [g.op("Mul", gg, sig_slope(i)), g.op("Mul", c_prev, sig_slope(f)),
                    g.op("Mul", i, tanh_slope(gg))]
        coef_gates = g.op("Concat", *coef, coef_o, axis=2)
        w_hh, w_hr = self.w_hh, self.w_hr
        n_dc = n - 1
        proj = w_hr is not None

        def body(b, states, slices):
            dh, dc = states
            dy_t, coef_t, coef_c_t, f_t = slices
            dh_tot = b.op("Add", dy_t, dh)
            dm = b.op("MatMul", dh_tot, w_hr) if proj else dh_tot
            dc_tot = b.op("Add", dc, b.op("Mul", dm, coef_c_t))
            stacked = b.op("Concat", *([dc_tot] * n_dc), dm, axis=1)
            dgates = b.op("Mul", stacked, coef_t)
            dh_prev = b.op("MatMul", dgates, w_hh)
            dc_prev = b.op("Mul", dc_tot, f_t)
            return [dh_prev, dc_prev], ([dgates, dh_tot] if proj else [dgates])

        zeros_h, zeros_c = _zeros_state(g, self.x, P), _zeros_state(g, self.x, H)
        _, outs = scan(g, body, [zeros_h, zeros_c], [dy, coef_gates, coef_c, f],
                       2 if proj else 1, reverse=True)
        dgates = outs[0]
        h_prev = _shift_back(g, self.y, self.h0)
        d_w_ih = _sum_time_batch(g, dgates, self.x, n * H, self.input_size)
        d_w_hh = _sum_time_batch(g, dgates, h_prev, n * H, P)
        d_bias = g.op("ReduceSum", g.op("Reshape", dgates, g.ints(-1, n * H)), g.ints(0),
                      keepdims=0)
        grads = [d_w_ih, d_w_hh] + ([d_bias] if self.cifg else [d_bias, d_bias])
        if proj:
            m = g.op("Mul", o, tc)
            grads.append(_sum_time_batch(g, outs[1], m, P, H))
        dx = g.op("MatMul", dgates, self.w_ih) if need_dx else None
        return dx, grads


class _GruLayer:
    """One GRU layer over time-major x [T, B, I]."""

    def __init__(self, spec: RecurrentSpec, input_size: int):
        self.spec, self.input_size, self.H = spec, input_size, spec.hidden_size

    def forward(self, g, x, params, training):
        w_ih, w_hh, b_ih, b_hh = params
        self.x, self.w_ih, self.w_hh = x, w_ih, w_hh
        xg = g.op("Add", g.op("MatMul", x, g.op("Transpose", w_ih, perm=[1, 0])), b_ih)
        w_hh_t = g.op("Transpose", w_hh, perm=[1, 0])
        self.h0 = _zeros_state(g, x, self.H)

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

    def backward(self, g, dy, need_dx):
        H = self.H
        one = g.const(1.0)
        r, z, n, hn = g.op("Split", self.saved, axis=2, num_outputs=4, outputs=4)
        h_prev = _shift_back(g, self.y, self.h0)
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

        _, (dxg, dhg) = scan(g, body, [_zeros_state(g, self.x, H)],
                             [dy, coef_n, coef_z, coef_r, r, z], 2, reverse=True)
        grads = [_sum_time_batch(g, dxg, self.x, 3 * H, self.input_size),
                 _sum_time_batch(g, dhg, h_prev, 3 * H, H),
                 g.op("ReduceSum", g.op("Reshape", dxg, g.ints(-1, 3 * H)), g.ints(0), keepdims=0),
                 g.op("ReduceSum", g.op("Reshape", dhg, g.ints(-1, 3 * H)), g.ints(0), keepdims=0)]
        dx = g.op("MatMul", dxg, self.w_ih) if need_dx else None
        return dx, grads


class Recurrent(Op):
    """A (multi-layer) recurrent module: inputs [x, *params]; outputs (y, (h_n, c_n)) for
    LSTM/CIFG and (y, h_n) for GRU, as PyTorch returns them. Only y carries gradients."""

    def __init__(self, spec: RecurrentSpec):
        self.spec = spec
        layer_cls = _GruLayer if spec.kind == "gru" else _LstmLayer
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
            x, h_n, c_n = layer.forward(g, x, params[index * k:(index + 1) * k], training)
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
            raise UnsupportedError("gradients through final recurrent states (h_n, c_n) are "
                                   "not supported; use the output sequence")
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
