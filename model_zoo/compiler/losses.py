"""Cross-entropy with an ignore index: value, gradient w.r.t. the logits, and metric sums."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

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
            raise UnsupportedError("CrossEntropyLoss with reduction other than 'mean', "
                                   "label smoothing or class weights")
        return cls(loss.ignore_index)

    def emit(self, g: GraphBuilder, logits: str, targets: str, num_classes: int,
             want_grad: bool, top_k: int = 0, grad_scale: str | None = None) -> dict[str, str]:
        """Returns names for loss, loss_sum, correct, count (and correct_top{k}, and
        dlogits, the gradient of grad_scale * loss, when asked)."""
        flat_logits = g.op("Reshape", logits, g.ints(-1, num_classes))
        flat_t = g.op("Reshape", targets, g.ints(-1))
        valid = g.op("Not", g.op("Equal", flat_t, g.const(self.ignore_index, "int64")))
        mask = g.op("Cast", valid, to=1)
        safe_t = g.op("Where", valid, flat_t, g.const(0, "int64"))
        logp = g.op("LogSoftmax", flat_logits, axis=-1)
        picked = g.op("GatherElements", logp, g.op("Unsqueeze", safe_t, g.ints(1)), axis=1)
        nll = g.op("Mul", g.op("Neg", g.op("Squeeze", picked, g.ints(1))), mask)
        out = {"loss_sum": g.op("ReduceSum", nll, keepdims=0),
               "count": g.op("ReduceSum", mask, keepdims=0)}
        denom = g.op("Max", out["count"], g.const(1.0))
        out["loss"] = g.op("Div", out["loss_sum"], denom)
        # metrics read logp, not the logits, so the logits die right after LogSoftmax
        hit = g.op("Equal", g.op("ArgMax", logp, axis=1, keepdims=0), safe_t)
        out["correct"] = g.op("ReduceSum", g.op("Mul", g.op("Cast", hit, to=1), mask), keepdims=0)
        if top_k:
            _, top_ids = g.op("TopK", logp, g.ints(top_k), axis=1, outputs=2)
            hits = g.op("Cast", g.op("Equal", top_ids, g.op("Unsqueeze", safe_t, g.ints(1))), to=1)
            in_top = g.op("ReduceMax", hits, g.ints(1), keepdims=0)
            out[f"correct_top{top_k}"] = g.op("ReduceSum", g.op("Mul", in_top, mask), keepdims=0)
        if want_grad:
            # d loss / d logits = (softmax - onehot(target)) * mask / count; the one-hot part
            # is scattered into the target column instead of materialising [N, C] one-hots
            scale = g.op("Unsqueeze", g.op("Mul", g.op("Div", mask, denom), grad_scale or g.const(1.0)),
                         g.ints(1))
            dflat = g.op("Mul", g.op("Exp", logp), scale)
            dflat = g.op("ScatterElements", dflat, g.op("Unsqueeze", safe_t, g.ints(1)),
                         g.op("Neg", scale), axis=1, reduction="add")
            out["dlogits"] = g.op("Reshape", dflat, g.op("Shape", logits))
        return out
