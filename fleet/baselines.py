"""Baselines on the same split: an n-gram next-word predictor, and the same model trained
centrally on all training data (the upper bound federated training aims for). The
trivial predictor of every other task is in fleet/metrics.py."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np


class NGramPredictor:
    """Majority n-gram predictor with backoff: the k most frequent successors of the last
    `order - 1` tokens (the current input and those before it in the same example), filled
    from ever shorter contexts down to the unigram. order=3 is the keyboard's trigram
    baseline, order=5 the 5-gram character baseline of the LEAF Shakespeare task."""

    def __init__(self, examples: list[dict], order: int = 3, k: int = 3):
        self.order, self.k = order, k
        counts: list[dict] = [defaultdict(Counter) for _ in range(order)]
        for tokens, targets in self._pairs(examples):
            for i, t in enumerate(targets):
                for n in range(order):  # n = context length
                    if n <= i + 1:
                        counts[n][tuple(tokens[i + 1 - n : i + 1])][t] += 1
        # only the top k per context is ever asked for: keep just that
        self._top = [
            {ctx: [w for w, _ in c.most_common(k)] for ctx, c in table.items()} for table in counts
        ]

    @staticmethod
    def _pairs(examples):
        for e in examples:
            tokens = e["tokens"] if "tokens" in e else e["chars"]
            yield [int(t) for t in tokens], [int(t) for t in e["targets"]]

    def top_k(self, context: tuple[int, ...]) -> list[int]:
        """context: the tokens before the prediction, most recent last."""
        out: list[int] = []
        for n in range(min(len(context), self.order - 1), -1, -1):
            table = self._top[n].get(tuple(context[len(context) - n :]) if n else ())
            if table:
                out += [w for w in table if w not in out]
            if len(out) >= self.k:
                break
        return out[: self.k]

    def recall(self, examples: list[dict], ignore: int | None = 0) -> dict:
        """Top-1 / top-3 recall over every target (targets equal to `ignore` are padding
        and skipped)."""
        hits1 = hits3 = total = 0
        for tokens, targets in self._pairs(examples):
            for i, t in enumerate(targets):
                if t == ignore:
                    continue
                top = self.top_k(tuple(tokens[max(0, i + 2 - self.order) : i + 1]))
                total += 1
                hits1 += bool(top) and t == top[0]
                hits3 += t in top
        return {"accuracy": hits1 / total, "top3_accuracy": hits3 / total, "count": total}


def centralized(
    bundle,
    train: list[dict],
    test: list[dict],
    epochs: int,
    plan: dict,
    seed: int = 0,
    progress=None,
    on_epoch=None,
    scorer=None,
) -> dict:
    """Train the bundle's model on all training examples (shuffled each epoch); held-out
    metrics after each epoch (by `scorer`, a fleet.metrics.Scorer; default: the bundle's
    eval graph), also passed to `on_epoch(epoch, metrics)` as they come."""
    from edge_sdk.evaluator import Evaluator
    from edge_sdk.schedules import Constant
    from edge_sdk.trainer import LocalTrainer, TrainingPlan

    trainer, evaluator = LocalTrainer(bundle), scorer or Evaluator(bundle)
    training_plan = TrainingPlan(
        batch_size=int(plan.get("batch_size", 16)), schedule=Constant(float(plan.get("lr", 1.0)))
    )
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        order = rng.permutation(len(train))

        def examples(_):
            for i in order:
                if progress:
                    progress.update(1)
                yield train[i]

        trainer.train(examples, training_plan)
        score = evaluator.score if hasattr(evaluator, "score") else evaluator.evaluate
        history.append(score(trainer.parameters(), test))
        if on_epoch:
            on_epoch(epoch + 1, history[-1])
    return {"final": history[-1], "per_epoch": history}
