"""Baselines on the same split: an n-gram next-word predictor, and the same model trained
centrally on all training data (the upper bound federated training aims for)."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np


class NGramPredictor:
    """Trigram counts with backoff to bigram and unigram: the k most frequent successors
    of the last two tokens, filled from shorter contexts."""

    def __init__(self, examples: list[dict]):
        self.tri: dict = defaultdict(Counter)
        self.bi: dict = defaultdict(Counter)
        self.uni: Counter = Counter()
        for e in examples:
            tokens, targets = e["tokens"], e["targets"]
            for i, t in enumerate(targets):
                t = int(t)
                self.uni[t] += 1
                self.bi[int(tokens[i])][t] += 1
                if i > 0:
                    self.tri[(int(tokens[i - 1]), int(tokens[i]))][t] += 1
        self._top_uni = [w for w, _ in self.uni.most_common(10)]

    def top_k(self, prev2: int | None, prev1: int, k: int) -> list[int]:
        out: list[int] = []
        for table in ((self.tri.get((prev2, prev1)) if prev2 is not None else None),
                      self.bi.get(prev1)):
            if table:
                out += [w for w, _ in table.most_common(k) if w not in out]
            if len(out) >= k:
                return out[:k]
        out += [w for w in self._top_uni if w not in out]
        return out[:k]

    def recall(self, examples: list[dict]) -> dict:
        hits1 = hits3 = total = 0
        for e in examples:
            tokens, targets = e["tokens"], e["targets"]
            for i, t in enumerate(targets):
                top = self.top_k(int(tokens[i - 1]) if i else None, int(tokens[i]), 3)
                total += 1
                hits1 += int(t) == top[0]
                hits3 += int(t) in top
        return {"accuracy": hits1 / total, "top3_accuracy": hits3 / total, "count": total}


def centralized(bundle, train: list[dict], test: list[dict], epochs: int, plan: dict,
                seed: int = 0, progress=None) -> dict:
    """Train the bundle's model on all training examples (shuffled each epoch)."""
    from edge_sdk.evaluator import Evaluator
    from edge_sdk.schedules import Constant
    from edge_sdk.trainer import LocalTrainer, TrainingPlan
    trainer = LocalTrainer(bundle)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        order = rng.permutation(len(train))

        def examples(_):
            for i in order:
                if progress:
                    progress.update(1)
                yield train[i]
        trainer.train(examples, TrainingPlan(batch_size=int(plan.get("batch_size", 16)),
                                             schedule=Constant(float(plan.get("lr", 1.0)))))
        history.append(Evaluator(bundle).evaluate(trainer.parameters(), test))
    return {"final": history[-1], "per_epoch": history}
