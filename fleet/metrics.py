"""Held-out metrics for each kind of task, and the trivial predictor each is measured
against:

- next word / next character: top-1 and top-3 recall over every non-padding target;
  baseline: the n-gram of the task's order (trigram for words, 5-gram for characters);
- classification: accuracy, mean cross-entropy, and for two classes the ROC AUC;
  baseline: the training split's majority class (AUC 0.5);
- regression: mean squared and mean absolute error; baseline: the training mean.
"""

from __future__ import annotations

import numpy as np

from edge_sdk.batching import iter_batches
from edge_sdk.bundle import Bundle
from edge_sdk.evaluator import Evaluator
from edge_sdk.runtime import GraphRunner

from .baselines import NGramPredictor
from .datasets.base import Task

NGRAM_ORDER = {"next_word": 3, "next_char": 5}
LABELS = {
    "accuracy": "accuracy",
    "top3_accuracy": "top-3 accuracy",
    "auc": "ROC AUC",
    "mse": "mean squared error",
    "mae": "mean absolute error",
}
TEXT_LABELS = {"accuracy": "top-1 recall", "top3_accuracy": "top-3 recall"}


def headline(task: Task) -> tuple[str, ...]:
    """The metrics a report shows for the task, most important first."""
    if task.is_text:
        return ("accuracy", "top3_accuracy")
    if task.kind == "regression":
        return ("mse", "mae")
    return ("accuracy", "auc") if task.num_classes == 2 else ("accuracy",)


def label(task_kind: str, metric: str) -> str:
    if task_kind in NGRAM_ORDER and metric in TEXT_LABELS:
        return TEXT_LABELS[metric]
    return LABELS.get(metric, metric)


def higher_is_better(metric: str) -> bool:
    return metric not in ("mse", "mae", "mean_loss")


class Scorer:
    """Metrics of a model's parameters on examples, for the bundle's task: the sums of
    the bundle's eval graph (loss, accuracy, top-3; a regression bundle's squared and
    absolute errors), and from its inference graph's outputs what the sums cannot give
    (a binary classifier's AUC; regression errors for a bundle whose eval graph lacks
    them)."""

    def __init__(self, bundle: Bundle, task: Task):
        self.bundle, self.task = bundle, task
        self._evaluator = Evaluator(bundle)
        self._binary = task.kind == "classification" and task.num_classes == 2
        sums = bundle.manifest.get("metrics", {}).get("eval", [])
        needs_outputs = self._binary or (task.kind == "regression" and "squared_error" not in sums)
        self._infer = GraphRunner(bundle.graph_path("infer")) if needs_outputs else None

    def score(self, parameters: dict[str, np.ndarray], examples: list[dict]) -> dict:
        out = self._evaluator.evaluate(parameters, examples)
        if self._infer is not None:
            outputs, targets = self._outputs(parameters, examples)
            if self._binary:
                out["auc"] = roc_auc(softmax(outputs)[:, 1], targets)
            else:
                out |= regression_errors(outputs.reshape(len(targets), -1)[:, 0], targets)
        return out

    def _outputs(self, parameters, examples) -> tuple[np.ndarray, np.ndarray]:
        names = set(self.bundle.input_names)
        outputs, targets = [], []
        for batch, _ in iter_batches(self.bundle, examples, 256):
            feeds = {k: v for k, v in batch.items() if k in names} | parameters
            outputs.append(self._infer.run(feeds)["logits"])
            targets.append(batch[self.bundle.target_name])
        if not outputs:
            return np.zeros((0, 1), np.float32), np.zeros(0)
        return np.concatenate(outputs), np.concatenate(targets)


def softmax(logits: np.ndarray) -> np.ndarray:
    """float [n, c] -> probabilities [n, c]."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of scores [n] for binary labels [n] (0/1): the chance that
    a random positive outscores a random negative, ties counting half (Mann-Whitney U)."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = np.asarray(scores)[order]
    # average ranks over runs of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def regression_errors(predictions: np.ndarray, targets: np.ndarray) -> dict:
    err = np.asarray(predictions, np.float64) - np.asarray(targets, np.float64)
    return {
        "mse": float(np.mean(err**2)) if len(err) else float("nan"),
        "mae": float(np.mean(np.abs(err))) if len(err) else float("nan"),
        "count": float(len(err)),
    }


def trivial_baseline(task: Task, train: list[dict], held_out: list[dict]) -> tuple[str, dict]:
    """(name, metrics) of the task's trivial predictor, fit on `train`, scored on
    `held_out`."""
    if task.is_text:
        ngram = NGramPredictor(train, order=NGRAM_ORDER[task.kind])
        return f"{ngram.order}-gram", ngram.recall(held_out)
    y_train = np.array([np.asarray(e["targets"]).item() for e in train])
    y = np.array([np.asarray(e["targets"]).item() for e in held_out])
    if task.kind == "regression":
        return "mean predictor", regression_errors(np.full(len(y), y_train.mean()), y)
    majority = int(np.bincount(y_train.astype(np.int64), minlength=task.num_classes).argmax())
    metrics = {
        "accuracy": float(np.mean(y == majority)) if len(y) else float("nan"),
        "count": float(len(y)),
        "class": majority,
    }
    if task.num_classes == 2:
        metrics["auc"] = 0.5  # a constant score ranks no positive above a negative
    return "majority class", metrics


def short_label(task_kind: str, metric: str) -> str:
    if metric == "accuracy":
        return "top-1" if task_kind in NGRAM_ORDER else "accuracy"
    return {"top3_accuracy": "top-3", "auc": "AUC", "mse": "MSE", "mae": "MAE"}.get(metric, metric)


def format_value(metric: str, value: float) -> str:
    if metric in ("accuracy", "top3_accuracy"):
        return f"{100 * value:.2f}%"
    if metric == "auc":
        return f"{value:.3f}"
    return f"{value:.4g}"


def describe(task_kind: str, metrics: dict, names) -> str:
    """'top-1 56.20%, top-3 71.04%' / 'accuracy 95.61%, AUC 0.991' / 'MSE 0.31, MAE 0.42'."""
    return ", ".join(
        f"{short_label(task_kind, m)} {format_value(m, metrics[m])}" for m in names if m in metrics
    )
