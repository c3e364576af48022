"""Evaluate parameters on local examples with the bundle's eval graph (no training)."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .batching import iter_batches
from .bundle import Bundle
from .runtime import GraphRunner, RuntimeOptions


class Evaluator:
    """Metric sums over a stream of examples; one session, reused across calls."""

    def __init__(self, bundle: Bundle, runtime: RuntimeOptions = RuntimeOptions()):
        self.bundle = bundle
        self._runner = GraphRunner(bundle.graph_path("eval"), runtime)

    def evaluate(
        self,
        parameters: dict[str, np.ndarray],
        examples: Iterable[dict[str, np.ndarray]],
        batch_size: int = 64,
    ) -> dict[str, float]:
        """Returns the metric sums plus mean_loss and accuracy (and top-3 recall for
        language models) over every non-padding target."""
        sums: dict[str, float] = {}
        for batch, _ in iter_batches(self.bundle, examples, batch_size):
            for k, v in self._runner.run(batch | parameters).items():
                sums[k] = sums.get(k, 0.0) + float(v)
        return summarize(sums)


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Means from the metric sums the bundle's graphs emit (docs/bundle-format.md):
    mean_loss, accuracy (per label for multi-label tasks), top3_accuracy, and for
    regression mse and mae (per target element)."""
    out = dict(sums)
    count = sums.get("count", 0.0)
    if count:
        out["mean_loss"] = sums["loss_sum"] / count
        for key, mean in (
            ("correct", "accuracy"),
            ("correct_top3", "top3_accuracy"),
            ("squared_error", "mse"),
            ("absolute_error", "mae"),
        ):
            if key in sums:
                out[mean] = sums[key] / count
    return out
