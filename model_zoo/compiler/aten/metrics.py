"""Summable metric sums per task, emitted from a graph's outputs and targets.

Every metric is a float32 scalar sum, so sums over batches (and devices) add up; the SDK
divides by `count` (edge_sdk.evaluator.summarize). `loss_sum` is the batch's mean loss
times `count`.

- classification / next_word / next_char: count (targets != ignore_index), correct
  (arg-max equals the target; float targets of the outputs' shape compare arg-maxes),
  correct_top3 for language models.
- multilabel: count (labels), correct (labels predicted as the target says: an output
  above the loss's decision threshold, 0 for logits and 0.5 for BCELoss's probabilities,
  against a target above its midpoint, 0.5 for 0/1 labels and 0 for SoftMarginLoss's -1/1).
- regression: count (target elements), squared_error, absolute_error.
"""

from __future__ import annotations

from ..argmax import argmax_rows
from ..graph import GraphBuilder

TASKS = ("classification", "next_word", "next_char", "multilabel", "regression")
TOP_K = 3


def metric_names(task: str, eval_graph: bool) -> list[str]:
    if task == "regression":
        return ["loss_sum", "count", "squared_error", "absolute_error"]
    names = ["loss_sum", "correct", "count"]
    if eval_graph and task in ("next_word", "next_char"):
        names.append(f"correct_top{TOP_K}")
    return names


def emit_metrics(
    g: GraphBuilder,
    task: str,
    outputs: str,
    targets: str,
    target_is_float: bool,
    ignore_index: int,
    num_classes: int,
    loss: str,
    eval_graph: bool,
    label_thresholds: tuple[float, float] = (0.0, 0.5),
) -> dict:
    if task == "multilabel":
        out = _multilabel(g, outputs, targets, *label_thresholds)
    else:
        out = _TASK_METRICS[task](
            g,
            outputs,
            targets,
            target_is_float,
            ignore_index,
            num_classes,
            eval_graph and task in ("next_word", "next_char"),
        )
    out["loss_sum"] = g.op("Mul", loss, out["count"])
    return out


def _classification(g, outputs, targets, target_is_float, ignore_index, num_classes, top_k):
    logits = g.op("Reshape", outputs, g.ints(-1, num_classes))
    if target_is_float:  # class probabilities (KL divergence, soft labels)
        t = g.op("ArgMax", g.op("Reshape", targets, g.ints(-1, num_classes)), axis=1, keepdims=0)
    else:
        t = g.op("Reshape", targets, g.ints(-1))
    valid = g.op("Not", g.op("Equal", t, g.const(ignore_index, "int64")))
    mask = g.op("Cast", valid, to=1)
    best = g.op("Reshape", argmax_rows(g, logits, num_classes), g.ints(-1))  # two stages if wide
    hit = g.op("Cast", g.op("Equal", best, t), to=1)
    out = {
        "count": g.op("ReduceSum", mask, keepdims=0),
        "correct": g.op("ReduceSum", g.op("Mul", hit, mask), keepdims=0),
    }
    if top_k:
        k = min(TOP_K, num_classes)
        _, top = g.op("TopK", logits, g.ints(k), axis=1, outputs=2)
        hits = g.op("Cast", g.op("Equal", top, g.op("Unsqueeze", t, g.ints(1))), to=1)
        in_top = g.op("ReduceMax", hits, g.ints(1), keepdims=0)
        out[f"correct_top{TOP_K}"] = g.op("ReduceSum", g.op("Mul", in_top, mask), keepdims=0)
    return out


def _multilabel(g, outputs, targets, output_threshold: float, target_threshold: float):
    predicted = g.op("Greater", outputs, g.const(float(output_threshold)))
    truth = g.op("Greater", g.op("Cast", targets, to=1), g.const(float(target_threshold)))
    hit = g.op("Cast", g.op("Equal", predicted, truth), to=1)
    count = g.op("Cast", g.op("ReduceProd", g.op("Shape", outputs), keepdims=0), to=1)
    return {"count": count, "correct": g.op("ReduceSum", hit, keepdims=0)}


def _regression(g, outputs, targets, target_is_float, ignore_index, num_classes, top_k):
    t = g.op("Cast", targets, to=1)
    err = g.op("Sub", g.op("Reshape", outputs, g.op("Shape", t)), t)
    count = g.op("Cast", g.op("ReduceProd", g.op("Shape", t), keepdims=0), to=1)
    return {
        "count": count,
        "squared_error": g.op("ReduceSum", g.op("Mul", err, err), keepdims=0),
        "absolute_error": g.op("ReduceSum", g.op("Abs", err), keepdims=0),
    }


_TASK_METRICS = {
    "classification": _classification,
    "next_word": _classification,
    "next_char": _classification,
    "regression": _regression,
}
