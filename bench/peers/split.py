"""The one data split both sides of the Flower comparison train on, as plain .npy files.

Written once by the driver (main venv) from the simulator's own split of the data; read
by our side and by Flower's clients (the peers venv, which has numpy and torch but none
of this project's packages), so this module imports numpy and the standard library only.

Layout of the directory:

    x.npy          float32 [n, ...]  every client's training examples, client by client
    y.npy          int64   [n]       their labels
    offsets.npy    int64   [clients + 1]: client i holds rows offsets[i]:offsets[i+1]
    test_x.npy, test_y.npy           the held-out sample scored after every round
    heldout_x.npy, heldout_y.npy     every held-out example (the final accuracy)
    initial.npz    the model's initial parameters by name (the bundle's)
    meta.json      {"clients", "examples", "input", "fingerprint", ...}

Arrays are opened memory-mapped: processes that read the same client share the pages
(Flower's Ray workers would otherwise each hold a private copy).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ARRAYS = ("x", "y", "offsets", "test_x", "test_y", "heldout_x", "heldout_y")


@dataclass(frozen=True)
class Split:
    """A split opened for reading (arrays memory-mapped, not copied)."""

    path: Path
    x: np.ndarray
    y: np.ndarray
    offsets: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    heldout_x: np.ndarray
    heldout_y: np.ndarray
    meta: dict

    @property
    def clients(self) -> int:
        return len(self.offsets) - 1

    def client(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Client i's training examples: x float32 [m, ...], y int64 [m] (views)."""
        if not 0 <= i < self.clients:
            raise IndexError(f"client {i} of {self.clients}")
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.x[lo:hi], self.y[lo:hi]

    def initial_parameters(self) -> dict[str, np.ndarray]:
        with np.load(self.path / "initial.npz") as f:
            return {k: f[k] for k in f.files}


def write_split(
    path: Path,
    clients: list[tuple[np.ndarray, np.ndarray]],
    test: tuple[np.ndarray, np.ndarray],
    heldout: tuple[np.ndarray, np.ndarray],
    initial: dict[str, np.ndarray],
    meta: dict | None = None,
) -> dict:
    """Write a split into directory `path` (created; files replaced). clients: per client
    (x [m, ...], y [m]); test and heldout: (x, y). Returns meta.json's document, whose
    fingerprint is a SHA-256 over every array."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sizes = [len(y) for _, y in clients]
    arrays = {
        "x": np.concatenate([x for x, _ in clients]).astype(np.float32),
        "y": np.concatenate([y for _, y in clients]).astype(np.int64),
        "offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "test_x": np.asarray(test[0], np.float32),
        "test_y": np.asarray(test[1], np.int64),
        "heldout_x": np.asarray(heldout[0], np.float32),
        "heldout_y": np.asarray(heldout[1], np.int64),
    }
    for name, array in arrays.items():
        np.save(path / f"{name}.npy", np.ascontiguousarray(array))
    np.savez(path / "initial.npz", **{k: np.asarray(v, np.float32) for k, v in initial.items()})
    doc = dict(meta or {}) | {
        "clients": len(clients),
        "examples": int(sum(sizes)),
        "input": list(arrays["x"].shape[1:]),
        "fingerprint": fingerprint(arrays),
    }
    (path / "meta.json").write_text(json.dumps(doc, indent=1))
    return doc


def read_split(path: Path) -> Split:
    path = Path(path)
    if not (path / "meta.json").is_file():
        raise FileNotFoundError(f"{path} holds no split (no meta.json): the driver writes it")
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
    return Split(path, meta=json.loads((path / "meta.json").read_text()), **arrays)


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


__all__ = ["Split", "fingerprint", "read_split", "write_split"]


def add_task_arguments(parser) -> None:
    """The FedAvg task both sides run, as command-line options (the driver passes them
    to each side unchanged)."""
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients-per-round", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
