"""Tabular data: a CSV (or, with pyarrow installed, Parquet) file with a user column,
feature columns and a label column, one row per example, rows of a user in time order
(or sorted by a `time` column)."""

from __future__ import annotations

import csv
import difflib
from pathlib import Path

import numpy as np

from .arrays import ArrayDataset
from .base import DatasetError


class TabularDataset(ArrayDataset):
    """user: the user-id column (None: no users; give `partition`). label: the target
    column. features: the feature columns (default: every other column except `time`).
    time: a column to order each user's rows by before the split (numbers, or ISO 8601
    times). delimiter:
    the CSV's field separator. kind: "classification"
    (labels may be any strings or numbers) or "regression" (numeric labels). Features
    are standardized with the training split's statistics unless standardize=False.
    Other options as ArrayDataset (train_fraction, shuffle, partition, seed)."""

    def __init__(
        self,
        path: str,
        *,
        user: str | None = "user",
        label: str = "label",
        features: list[str] | None = None,
        time: str | None = None,
        kind: str = "classification",
        standardize: bool = True,
        delimiter: str = ",",
        **options,
    ):
        p = Path(path)
        if not p.is_file():
            raise DatasetError(f"{p}: no such file")
        columns = _read_parquet(p) if p.suffix == ".parquet" else _read_csv(p, delimiter)
        names = list(columns)
        for role, column in (("user", user), ("label", label), ("time", time)):
            if column is not None and column not in columns:
                near = difflib.get_close_matches(column, names, 1)
                hint = (
                    '; data without users takes "user": null and a partition ({"users": N})'
                    if role == "user"
                    else ""
                )
                raise DatasetError(
                    f"{p}: no {role} column {column!r}"
                    + (f" (did you mean {near[0]!r}?)" if near else "")
                    + f"; columns: {names}{hint}"
                )
        features = features or [c for c in names if c not in (user, label, time)]
        missing = [c for c in features if c not in columns]
        if missing:
            raise DatasetError(f"{p}: no feature column {missing[0]!r}; columns: {names}")
        x = np.stack([_numeric(columns[c], p, c) for c in features], axis=1)
        y = columns[label]
        if kind == "regression":
            y = _numeric(y, p, label)
        else:
            y = np.asarray(y, dtype=object)
            y = _numeric(y, p, label).astype(np.int64) if _all_integers(y) else y.astype(str)
        users = None if user is None else np.asarray(columns[user], dtype=str)
        if time is not None:
            stamps = columns[time]  # numbers, or strings that sort in time (ISO 8601)
            keys = (
                np.asarray(stamps, np.float64)
                if all(_is_number(v) for v in stamps)
                else np.asarray(stamps, dtype=str)
            )
            order = np.argsort(keys, kind="stable")
            x, y = x[order], y[order]
            users = None if users is None else users[order]
        self.feature_names = tuple(features)
        super().__init__(p.stem, x, y, users, kind=kind, standardize=standardize, **options)


def _read_csv(path: Path, delimiter: str = ",") -> dict[str, list]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise DatasetError(f"{path} is empty") from None
        if len(set(header)) != len(header):
            raise DatasetError(f"{path}: repeated column names in the header")
        columns: dict[str, list] = {name: [] for name in header}
        for number, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) != len(header):
                raise DatasetError(
                    f"{path}:{number}: {len(row)} fields, the header has {len(header)}"
                )
            for name, value in zip(header, row):
                columns[name].append(value)
    return columns


def _read_parquet(path: Path) -> dict[str, list]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(
            f"{path}: reading Parquet needs pyarrow (pip install pyarrow), or save the table as CSV"
        ) from None
    return pq.read_table(path).to_pydict()


def _numeric(values, path: Path, column: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        bad = next(v for v in values if not _is_number(v))
        raise DatasetError(
            f"{path}: column {column!r} holds {bad!r}, not a number (fill or "
            "drop missing values, encode categories as numbers, or list the "
            "numeric columns as features)"
        ) from None


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _all_integers(values) -> bool:
    try:
        return all(float(v) == int(float(v)) for v in values)
    except (TypeError, ValueError, OverflowError):
        return False
