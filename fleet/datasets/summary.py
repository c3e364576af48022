"""What a federated dataset holds, for `edge-fl data inspect` and `prepare`: users,
examples per user, the label (or token) histogram, and how far users' label
distributions are from the pooled one.

The non-IID measure is the mean total variation distance between a user's label
distribution and the pooled one, weighted by the user's examples: 0 when every user
draws from the same distribution, 1 when no two users share a label. (Text: the
distribution of target tokens; regression: of the targets' deciles.)
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .base import FederatedDataset


def labels_of(example: dict, text: bool) -> list:
    """The target values of one example (text: its target tokens, padding skipped)."""
    values = np.asarray(example["targets"]).reshape(-1).tolist()
    return [v for v in values if v != 0] if text else values


def summarize(dataset: FederatedDataset, top: int = 10) -> dict:
    task = dataset.task()
    per_user, counts, held_counts = {}, {}, Counter()
    for user in dataset.users():
        train, held = dataset.examples(user, "train"), dataset.examples(user, "heldout")
        per_user[user] = (len(train), len(held))
        counts[user] = Counter(v for e in train for v in labels_of(e, task.is_text))
        if task.kind == "classification":
            held_counts.update(v for e in held for v in labels_of(e, False))
    if task.kind == "regression":  # deciles of the pooled targets as the "labels"
        values = np.array([v for c in counts.values() for v, n in c.items() for _ in range(n)])
        edges = np.quantile(values, np.linspace(0, 1, 11)[1:-1]) if len(values) else []
        counts = {
            u: Counter({int(np.searchsorted(edges, v)): n for v, n in c.items()})
            for u, c in counts.items()
        }
    pooled = sum(counts.values(), Counter())
    train_sizes = np.array([t for t, _ in per_user.values()])
    total = int(sum(pooled.values()))
    return {
        "name": dataset.name,
        "task": task.kind,
        "num_classes": task.num_classes,
        "inputs": {k: list(v.shape) for k, v in task.inputs.items()},
        "users": len(per_user),
        "train_examples": int(train_sizes.sum()),
        "heldout_examples": int(sum(h for _, h in per_user.values())),
        "users_without_heldout": sum(1 for _, h in per_user.values() if h == 0),
        "examples_per_user": _spread(train_sizes + np.array([h for _, h in per_user.values()])),
        "label_histogram": _histogram(pooled, total, task, top),
        "non_iid": non_iid(counts, pooled),
        # classification: how far the held-out labels are from the training ones (a file
        # sorted by label rather than time holds out other classes than it trains on)
        "heldout_shift": total_variation(held_counts, pooled) if held_counts else None,
    }


def non_iid(per_user: dict[str, Counter], pooled: Counter) -> float:
    """Example-weighted mean total variation distance to the pooled distribution."""
    total = sum(sum(c.values()) for c in per_user.values())
    if not total:
        return 0.0
    return sum(sum(c.values()) * total_variation(c, pooled) for c in per_user.values()) / total


def total_variation(a: Counter, b: Counter) -> float:
    """Half the L1 distance between two count tables' distributions (0 if either is empty)."""
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return 0.0
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))


def _spread(sizes: np.ndarray) -> dict:
    if not len(sizes):
        return {}
    return {
        "min": int(sizes.min()),
        "median": float(np.median(sizes)),
        "mean": float(sizes.mean()),
        "max": int(sizes.max()),
    }


def _histogram(pooled: Counter, total: int, task, top: int) -> list[tuple]:
    """(label, share) of the `top` most frequent labels (or tokens, decoded)."""
    rows = pooled.most_common(top)
    vocab = task.vocabulary
    names = {}
    if vocab is not None:
        names = {
            k: vocab.decode([k])[0] if task.kind == "next_word" else repr(vocab.decode([k]))
            for k, _ in rows
        }
    elif task.classes:
        names = {
            k: task.classes[k] for k, _ in rows if isinstance(k, int) and k < len(task.classes)
        }
    return [(str(names.get(k, k)), n / total) for k, n in rows]


def print_summary(s: dict) -> None:
    per = s["examples_per_user"]
    print(
        f"{s['name']}: {s['task']} ({s['num_classes']} "
        f"{'tokens' if s['task'].startswith('next') else 'classes'}), inputs {s['inputs']}"
    )
    print(
        f"{s['users']} users; {s['train_examples']} training and {s['heldout_examples']} "
        f"held-out examples; per user min {per.get('min')}, median {per.get('median')}, "
        f"mean {per.get('mean', 0):.1f}, max {per.get('max')}"
        + (
            f"; {s['users_without_heldout']} users hold nothing out (a single message or row)"
            if s["users_without_heldout"]
            else ""
        )
    )
    what = {"regression": "target decile", "classification": "label"}.get(s["task"], "target token")
    print(
        f"most frequent {what}s (training split): "
        + ", ".join(f"{k} {100 * v:.1f}%" for k, v in s["label_histogram"])
    )
    print(
        f"non-IID: users' {what} distributions are {s['non_iid']:.3f} (total variation, "
        "example-weighted) from the pooled one: 0 = IID, 1 = no two users share one"
    )
    shift = s.get("heldout_shift")
    if shift is not None:
        print(
            f"held-out labels are {shift:.3f} (total variation) from the training labels"
            + (
                ": is each user's data in time order? Rows sorted otherwise (e.g. by label) "
                'hold out other classes than they train on; "shuffle": true splits each '
                "user's rows at random"
                if shift > 0.2
                else ""
            )
        )


def write_heldout(dataset: FederatedDataset, path: Path) -> int:
    """Every user's held-out examples as `edge-fl heldout` reads them (server_eval)."""
    from server_eval.heldout_set import write_heldout_set

    return write_heldout_set(
        path, (e for u in dataset.users() for e in dataset.examples(u, "heldout"))
    )
