"""A dataset written out as a file its reader takes back (`edge-fl data export`): text as
JSON lines {"user", "time", "text"}, arrays as `.npz` (x, y, users), flat features as
CSV (user, feature columns, label). Each user's training examples come first, then the
held-out ones, so the reader's in-time split finds the same examples held out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .base import DatasetError, FederatedDataset


def export_dataset(dataset: FederatedDataset, path: Path) -> int:
    """Write `dataset` to `path` in the format its suffix names; returns the rows."""
    task = dataset.task()
    if task.is_text:
        if path.suffix != ".jsonl" or not hasattr(dataset, "texts"):
            raise DatasetError("text exports as .jsonl, from a reader with texts()")
        rows = 0
        with path.open("w", encoding="utf-8") as f:
            for user in dataset.users():
                texts = dataset.texts(user, "train") + dataset.texts(user, "heldout")
                for t, text in enumerate(texts):
                    f.write(json.dumps({"user": user, "time": t, "text": text}) + "\n")
                    rows += 1
        return rows
    ((name, _),) = task.inputs.items()
    users, xs, ys = [], [], []
    for user in dataset.users():
        for split in ("train", "heldout"):
            for e in dataset.examples(user, split):
                users.append(user)
                xs.append(np.asarray(e[name]))
                ys.append(np.asarray(e["targets"]).item())
    x, y = np.stack(xs), np.array(ys)
    if task.kind == "classification" and task.classes:
        y = np.array([task.classes[int(v)] for v in y])
    if path.suffix == ".npz":
        np.savez_compressed(path, x=x, y=y, users=np.array(users))
    elif path.suffix == ".csv":
        if x.ndim != 2:
            raise DatasetError(
                f"inputs of shape {list(x.shape[1:])} do not fit CSV columns: export to .npz"
            )
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["user"] + [f"f{i}" for i in range(x.shape[1])] + ["label"])
            for u, row, label in zip(users, x, y):
                writer.writerow([u] + [f"{v:.6g}" for v in row] + [label])
    else:
        raise DatasetError(f"{path}: export to .csv, .npz (or .jsonl for text)")
    return len(users)
