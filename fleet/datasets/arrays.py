"""Datasets held as arrays: x [n, ...], y [n] and a user id per row. The `.npz` reader,
and the shared body of the tabular reader and the built-in image and tabular sets.

Rows keep their order within a user, so a file sorted by time splits in time: the first
`train_fraction` of each user's rows train, the rest are held out. With `shuffle` the
rows of each user are split at random instead (for data with no order). Data without
users is dealt to synthetic ones by `partition` ({"users": N} for an IID split or
{"users": N, "alpha": a} for a label-skewed Dirichlet(a) split, Hsu et al. 2019), and
reports say so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model_zoo.data.partition import partition_dirichlet, partition_iid

from .base import DatasetError, InputSpec, Task, check_fraction, check_split, split_point


class ArrayDataset:
    """x: float [n, ...] (features, image pixels, sensor windows); y: int class labels or
    float targets [n]; users: an id per row [n], or None with `partition`.

    kind: "classification" or "regression" (default: by y's dtype). standardize: scale
    each feature to zero mean and unit variance with the training split's statistics.
    input_name: the model input the rows feed ("x")."""

    def __init__(
        self,
        name: str,
        x: np.ndarray,
        y: np.ndarray,
        users: np.ndarray | None = None,
        *,
        kind: str | None = None,
        train_fraction: float = 0.8,
        shuffle: bool = False,
        standardize: bool = False,
        partition: dict | None = None,
        seed: int = 0,
        input_name: str = "x",
        classes: tuple = (),
    ):
        check_fraction(train_fraction)
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim < 2 or len(x) != len(y) or y.ndim != 1:
            raise DatasetError(f"{name}: x must be [n, ...] and y [n], got {x.shape} and {y.shape}")
        if not len(y):
            raise DatasetError(f"{name}: no rows")
        if not np.isfinite(x.astype(np.float64)).all():
            raise DatasetError(f"{name}: x holds NaN or infinite values; fill or drop them first")
        kind = kind or ("classification" if np.issubdtype(y.dtype, np.integer) else "regression")
        if kind not in ("classification", "regression"):
            raise DatasetError(f"{name}: kind must be 'classification' or 'regression'")
        self.name, self.kind, self.input_name = name, kind, input_name
        rng = np.random.default_rng([seed, 0xDA7A])
        if partition is not None:
            if users is not None:
                raise DatasetError(
                    f"{name}: partition deals rows to synthetic users; the data has users already"
                )
            users, self.partition_note = _partition(y, kind, partition, rng)
        elif users is None:
            raise DatasetError(
                f"{name}: no user ids: give a user column, or partition "
                "({'users': N} or {'users': N, 'alpha': 0.3})"
            )
        else:
            self.partition_note = None
        users = np.asarray(users)
        if len(users) != len(y):
            raise DatasetError(f"{name}: {len(users)} user ids for {len(y)} rows")
        if kind == "classification":
            if classes:
                self.classes = tuple(classes)
                y = y.astype(np.int64)
            else:
                values, y = np.unique(y, return_inverse=True)
                self.classes = tuple(v.item() if hasattr(v, "item") else v for v in values)
            if y.min() < 0 or y.max() >= max(len(self.classes), 2):
                raise DatasetError(f"{name}: class ids must be in 0..{len(self.classes) - 1}")
            self.y = y.astype(np.int64)
        else:
            self.classes = ()
            self.y = y.astype(np.float32)
        self._rows: dict[str, dict[str, np.ndarray]] = {}
        keys = [str(u) for u in users]
        by_user: dict[str, list[int]] = {}
        for i, u in enumerate(keys):
            by_user.setdefault(u, []).append(i)
        for u, rows in by_user.items():  # first-seen order of users, file order within
            rows = np.array(rows, np.int64)
            if shuffle:
                rows = rng.permutation(rows)
            cut = split_point(len(rows), train_fraction)
            self._rows[u] = {"train": rows[:cut], "heldout": rows[cut:]}
        x = x.astype(np.float32)
        if standardize:
            train = np.concatenate([r["train"] for r in self._rows.values()])
            mean, std = x[train].mean(0), x[train].std(0)
            x = (x - mean) / np.where(std > 0, std, 1.0).astype(np.float32)
        self.x = np.ascontiguousarray(x, np.float32)

    def task(self) -> Task:
        classes = max(len(self.classes), 2) if self.kind == "classification" else 1
        return Task(
            self.kind,
            {self.input_name: InputSpec(tuple(self.x.shape[1:]))},
            classes,
            classes=self.classes,
        )

    def users(self) -> list[str]:
        return list(self._rows)

    def examples(self, user: str, split: str) -> list[dict[str, np.ndarray]]:
        check_split(split)
        rows = self._rows[user][split]
        return [{self.input_name: self.x[i], "targets": self.y[i]} for i in rows]

    def describe(self) -> str:
        return self.partition_note or "the data's own users"


def _partition(y: np.ndarray, kind: str, spec: dict, rng) -> tuple[np.ndarray, str]:
    unknown = set(spec) - {"users", "alpha"}
    if unknown or not isinstance(spec.get("users"), int) or spec["users"] < 1:
        raise DatasetError(
            "partition is {'users': N} (IID) or {'users': N, 'alpha': a} "
            f"(Dirichlet label skew), got {spec}"
        )
    n, alpha = spec["users"], spec.get("alpha")
    if alpha is None:
        parts, note = partition_iid(len(y), n, rng), f"IID split over {n} synthetic users"
    else:
        if kind != "classification":
            raise DatasetError("a Dirichlet partition skews labels: it needs classification")
        labels = np.unique(y, return_inverse=True)[1]
        parts = partition_dirichlet(labels, n, float(alpha), rng)
        note = f"Dirichlet({alpha}) label-skewed split over {n} synthetic users"
    users = np.empty(len(y), dtype=object)
    width = len(str(n - 1))
    for client, rows in enumerate(parts):
        users[rows] = f"user-{client:0{width}d}"
    return users, note


class NpzDataset(ArrayDataset):
    """An `.npz` file with arrays x [n, ...], y [n] and user ids [n] (keys renamed with
    `x_key`, `y_key`, `user_key`; without a user array, give `partition`)."""

    def __init__(
        self, path: str, *, x_key: str = "x", y_key: str = "y", user_key: str = "users", **options
    ):
        p = Path(path)
        if not p.is_file():
            raise DatasetError(f"{p}: no such file")
        with np.load(p, allow_pickle=False) as f:
            missing = [k for k in (x_key, y_key) if k not in f.files]
            if missing:
                raise DatasetError(f"{p}: no array {missing[0]!r}; it holds {f.files}")
            x, y = f[x_key], f[y_key]
            users = f[user_key] if user_key in f.files else None
        super().__init__(p.stem, x, y, users, **options)
