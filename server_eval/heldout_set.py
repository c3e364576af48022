"""A held-out set on disk: JSON lines, one example per line, holding the bundle's inputs
and its target by name, e.g. {"tokens": [1, 57, 9], "targets": [57, 9, 2]} for the
keyboard or {"x": [0.1, ...], "targets": 1} for a classifier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from edge_sdk.bundle import Bundle


class HeldoutSetError(ValueError):
    """The file does not hold examples this bundle can evaluate; says which line and why."""


def write_heldout_set(path: str | Path, examples: Iterable[dict[str, np.ndarray]]) -> int:
    """Write examples (dicts of arrays) as JSON lines; returns how many."""
    count = 0
    with Path(path).open("w") as f:
        for example in examples:
            f.write(json.dumps({k: np.asarray(v).tolist() for k, v in example.items()}) + "\n")
            count += 1
    return count


def read_json_lines(
    path: str | Path, error: type[Exception] = ValueError
) -> Iterator[tuple[int, Any]]:
    """(line number from 1, parsed value) of each non-blank line of a UTF-8 JSON-lines
    file; a line that is not JSON raises `error` naming the file and line."""
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{number}: not JSON ({e.msg})") from None


def read_heldout_set(path: str | Path, bundle: Bundle) -> list[dict[str, np.ndarray]]:
    """Every example of the file as arrays of the bundle's dtypes, checked against the
    bundle's input and target specs (names, rank, static sizes)."""
    specs = bundle.manifest["inputs"] | bundle.manifest["targets"]
    examples = []
    for number, doc in read_json_lines(path, HeldoutSetError):
        if not isinstance(doc, dict) or set(doc) != set(specs):
            raise HeldoutSetError(f"{path}:{number}: an example holds exactly {sorted(specs)}")
        examples.append(
            {name: _array(doc[name], specs[name], f"{path}:{number}: {name}") for name in specs}
        )
    if not examples:
        raise HeldoutSetError(f"{path} holds no examples")
    return examples


def _array(value, spec: dict, where: str) -> np.ndarray:
    """One example's value: the spec's shape without its batch dimension."""
    try:
        array = np.asarray(value, dtype=spec["dtype"])
    except (TypeError, ValueError):
        raise HeldoutSetError(f"{where} is not an array of {spec['dtype']}") from None
    dims = spec["shape"][1:]
    if array.ndim != len(dims) or any(
        isinstance(d, int) and d != n for d, n in zip(dims, array.shape)
    ):
        raise HeldoutSetError(f"{where} has shape {list(array.shape)}, the bundle takes {dims}")
    return array
