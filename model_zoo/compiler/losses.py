"""Cross-entropy with an ignore index: value, gradient w.r.t. the logits, and metric sums."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .argmax import argmax_rows
from .gradients import RowScaled
from .graph import GraphBuilder
from .ops.base import UnsupportedError


@dataclass(frozen=True)
class CrossEntropy:
    """Mean negative log-likelihood over targets != ignore_index (PyTorch's reduction='mean').

    logits [N, C] or [B, T, C] (flattened to [B*T, C]); targets int64 [N] or [B, T].
    A batch whose targets are all ignored gives loss 0 and zero gradients (PyTorch: NaN).
    """

    ignore_index: int = -100

    @classmethod
    def from_torch(cls, loss: nn.Module) -> CrossEntropy:
        if not isinstance(loss, nn.CrossEntropyLoss):
            raise UnsupportedError(f"loss {type(loss).__name__}; supported: CrossEntropyLoss")
        if loss.reduction != "mean" or loss.label_smoothing or loss.weight is not None:
            raise UnsupportedError(
                "CrossEntropyLoss with reduction other than 'mean', "
                "label smoothing or class weights"
            )
        return cls(loss.ignore_index)

    def to_torch(self) -> nn.CrossEntropyLoss:
        return nn.CrossEntropyLoss(ignore_index=self.ignore_index)

    def emit(
        self,
        g: GraphBuilder,
        logits: str,
        targets: str,
        num_classes: int,
        want_grad: bool,
        top_k: int = 0,
        grad_scale: str | None = None,
        sequence: bool = True,
    ) -> dict[str, str]:
        """`sequence`: targets [B, T] (logits [B, T, C]); else targets [N], logits [N, C].

        Returns names for loss, loss_sum, correct, count (and correct_top{k}, and
        dlogits, the gradient of grad_scale * loss as a RowScaled, when asked)."""
        flat = not sequence  # logits [N, C] and targets [N] already
        flat_logits = logits if flat else g.op("Reshape", logits, g.ints(-1, num_classes))
        flat_t = targets if flat else g.op("Reshape", targets, g.ints(-1))
        valid = g.op("Not", g.op("Equal", flat_t, g.const(self.ignore_index, "int64")))
        mask = g.op("Cast", valid, to=1)
        safe_t = g.op("Where", valid, flat_t, g.const(0, "int64"))
        target_col = g.op("Unsqueeze", safe_t, g.ints(1))
        # one Softmax serves the loss and the gradient: at the arg-max column, probs is
        # 1 / sum_j exp(x_j - max), so log-sum-exp = x_best - log(probs_best) needs no
        # second pass over [N, C] (LogSoftmax, then Exp for the gradient, made two)
        probs = g.op("Softmax", flat_logits, axis=1)
        if not flat:  # the rows' count is unknown after the Reshape: name it (hint_shape)
            g.hint_shape(probs, "float32", [g.fresh("logit_rows"), num_classes])
        best = argmax_rows(g, flat_logits, num_classes)
        p_best = g.op("GatherElements", probs, best, axis=1)
        lse = g.op("Sub", g.op("GatherElements", flat_logits, best, axis=1), g.op("Log", p_best))
        picked = g.op("GatherElements", flat_logits, target_col, axis=1)
        nll = g.op("Mul", g.op("Squeeze", g.op("Sub", lse, picked), g.ints(1)), mask)
        out = {
            "loss_sum": g.op("ReduceSum", nll, keepdims=0),
            "count": g.op("ReduceSum", mask, keepdims=0),
        }
        denom = g.op("Max", out["count"], g.const(1.0))
        out["loss"] = g.op("Div", out["loss_sum"], denom)
        hit = g.op("Equal", g.op("Squeeze", best, g.ints(1)), safe_t)
        out["correct"] = g.op("ReduceSum", g.op("Mul", g.op("Cast", hit, to=1), mask), keepdims=0)
        if top_k:
            _, top_ids = g.op("TopK", flat_logits, g.ints(top_k), axis=1, outputs=2)
            hits = g.op("Cast", g.op("Equal", top_ids, target_col), to=1)
            in_top = g.op("ReduceMax", hits, g.ints(1), keepdims=0)
            out[f"correct_top{top_k}"] = g.op("ReduceSum", g.op("Mul", in_top, mask), keepdims=0)
        if want_grad:
            # d loss / d logits = (softmax - onehot(target)) * mask / count, the row scale
            # kept apart (gradients.RowScaled)
            # the -1s are computed from p_best so the scatter comes after the last other
            # read of probs: ONNX Runtime then updates probs in place instead of copying
            # [N, C] (docs/benchmarks.md)
            minus_one = g.op("Sub", g.op("Mul", p_best, g.const(0.0)), g.const(1.0))
            errors = g.op("ScatterElements", probs, target_col, minus_one, axis=1, reduction="add")
            scale = g.op("Mul", g.op("Div", mask, denom), grad_scale or g.const(1.0))
            out["dlogits"] = RowScaled(
                errors, g.op("Unsqueeze", scale, g.ints(1)), None if flat else g.op("Shape", logits)
            )
        return out
