"""Fashion-MNIST (Xiao et al. 2017) from Debian's `dataset-fashion-mnist` package.

It has no natural user split: federated experiments partition it synthetically
(model_zoo.data.partition) and must say so.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path: Path, magic: int, dims: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise ValueError(f"{path}: IDX magic {got:#x}, expected {magic:#x}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {body.size} bytes of data for shape {shape}")
    return body.reshape(shape)


def load(split: str = "train", directory: Path = DEFAULT_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [n, 1, 28, 28] in [0, 1], labels int64 [n])."""
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} is missing: install Debian's `dataset-fashion-mnist` package"
        )
    images_file, labels_file = _FILES[split]
    images = _read_idx(directory / images_file, 0x803, 3)
    labels = _read_idx(directory / labels_file, 0x801, 1)
    return (images.astype(np.float32)[:, None] / 255.0), labels.astype(np.int64)
