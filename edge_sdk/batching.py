"""Examples -> batches, streaming: at most one batch of examples is held at a time.

An example is a dict holding the bundle's inputs and its target, one sample each (for a
language model: tokens int64 [T] and targets int64 [T]). Variable-length sequences are
right-padded to the longest in the batch, rounded up to a multiple of PAD_MULTIPLE:
inputs with 0, targets with the ignore index, so padding never counts in the loss or the
metrics. Few distinct shapes let onnxruntime's allocator reuse its buffers; with every
length its own shape the heap fragments and peak RSS grows (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from .bundle import Bundle
from .errors import BundleError

PAD_MULTIPLE = 8


def iter_batches(
    bundle: Bundle, examples: Iterable[dict[str, np.ndarray]], batch_size: int
) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """Yields (batch, number of examples in it); the last batch may be smaller."""
    pending: list[dict[str, np.ndarray]] = []
    for example in examples:
        pending.append(example)
        if len(pending) == batch_size:
            yield collate(bundle, pending), len(pending)
            pending = []
    if pending:
        yield collate(bundle, pending), len(pending)


def collate(bundle: Bundle, examples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    specs = bundle.manifest["inputs"] | bundle.manifest["targets"]
    batch = {}
    for name, spec in specs.items():
        try:
            items = [np.asarray(e[name]) for e in examples]
        except KeyError:
            raise BundleError(f"example lacks {name!r}; the bundle needs {list(specs)}") from None
        if "seq" in spec["shape"]:
            fill = bundle.ignore_index if name == bundle.target_name else 0
            stacked = _pad_sequences(items, fill)
        else:
            try:
                stacked = np.stack(items)
            except ValueError:
                raise BundleError(
                    f"examples' {name!r} differ in shape; only sequence inputs may vary in length"
                ) from None
        batch[name] = stacked.astype(spec["dtype"], copy=False)
    return batch


def _pad_sequences(items: list[np.ndarray], fill) -> np.ndarray:
    length = -(-max(len(i) for i in items) // PAD_MULTIPLE) * PAD_MULTIPLE
    out = np.full((len(items), length) + items[0].shape[1:], fill, dtype=items[0].dtype)
    for row, item in enumerate(items):
        out[row, : len(item)] = item
    return out
