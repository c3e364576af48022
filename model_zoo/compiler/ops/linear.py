"""Affine maps: nn.Linear and F.linear (the latter also serves tied output embeddings)."""

from __future__ import annotations

from ..gradients import Product, RowScaled
from .base import Op, flatten_last

# Outputs at least this wide take cross-entropy's gradient factored (gradients.RowScaled):
# it saves a pass over [N, out], which pays for its extra small nodes only when wide
FACTORED_SOFTMAX_MIN_OUTPUTS = 1024


class Linear(Op):
    """y = x W^T + b for x [..., in] of rank `input_rank`, W [out, in], b [out] (optional)."""

    structured_gradients = (RowScaled,)

    def __init__(self, in_features: int, out_features: int, has_bias: bool, input_rank: int = 2):
        self.in_features, self.out_features, self.has_bias = in_features, out_features, has_bias
        self.input_rank = input_rank

    def forward(self, g, inputs, training):
        x, w = inputs[0], inputs[1]
        self.x, self.w = x, w
        b = inputs[2] if self.has_bias else None
        # Gemm(x, W^T) for every size: (W x^T)^T is faster for a few rows and a large W
        # (docs/benchmarks.md) but ONNX Runtime then sums
        # in longer float32 chains, twice the rounding error of this form and of PyTorch
        y = g.op("Gemm", self._rows(g, x, self.in_features), w, *([b] if b else []), transB=1)
        if self.input_rank == 2:
            return y
        lead = g.op("Slice", g.op("Shape", x), g.ints(0), g.ints(-1))
        return g.op("Reshape", y, g.op("Concat", lead, g.ints(self.out_features), axis=0))

    def _rows(self, g, t, width):
        """t [..., width] as [N, width] (already so for 2-D inputs)."""
        return t if self.input_rank == 2 else flatten_last(g, t, width)

    def backward(self, g, grad_outputs, needs_grad):
        (dy,) = grad_outputs
        if isinstance(dy, RowScaled):
            if self.out_features >= FACTORED_SOFTMAX_MIN_OUTPUTS:
                return self._backward_from_softmax(g, dy, needs_grad)
            dy = dy.dense(g)
        grads = [None] * (3 if self.has_bias else 2)
        if needs_grad[0]:
            grads[0] = g.op("MatMul", dy, self.w)
        if needs_grad[1] or (self.has_bias and needs_grad[2]):
            dy2 = self._rows(g, dy, self.out_features)
            if needs_grad[1]:
                grads[1] = Product(dy2, self._rows(g, self.x, self.in_features), trans_a=True)
            if self.has_bias and needs_grad[2]:
                grads[2] = g.op("ReduceSum", dy2, g.ints(0), keepdims=0)
        return grads

    def _backward_from_softmax(self, g, dy: RowScaled, needs_grad):
        """dy = s * E per row (E = dy.base [N, out], s = dy.scale [N, 1]), never formed:
        with x2 [N, in], dx = s * (E W), dW = E^T (s x2), db = s^T E."""
        grads = [None] * (3 if self.has_bias else 2)
        if needs_grad[0]:
            dx = g.op("Mul", g.op("MatMul", dy.base, self.w), dy.scale)
            grads[0] = dx if self.input_rank == 2 else g.op("Reshape", dx, g.op("Shape", self.x))
        if needs_grad[1]:
            sx = g.op("Mul", self._rows(g, self.x, self.in_features), dy.scale)
            grads[1] = Product(dy.base, sx, trans_a=True)
        if self.has_bias and needs_grad[2]:
            # s^T E as MatMul [1, N] x [N, C], a row-vector product (Gemm(transA) copies E)
            s_row = g.op("Reshape", dy.scale, g.ints(1, -1))
            grads[2] = g.op("Reshape", g.op("MatMul", s_row, dy.base), g.ints(-1))
        return grads
