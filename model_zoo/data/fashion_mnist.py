"""Fashion-MNIST (Xiao et al. 2017) from Debian's `dataset-fashion-mnist` package: 60,000
training and 10,000 test images of 28x28 grey pixels, 10 classes.

It has no natural users. Federated experiments on it use a *synthetic* split
(`partition_iid` or `partition_dirichlet`, re-exported here from model_zoo.data.partition)
and must say which.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .errors import DatasetFormatError, DatasetMissingError
from .partition import partition_dirichlet, partition_iid

__all__ = ["DEFAULT_DIR", "load", "partition_iid", "partition_dirichlet"]

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801  # IDX: unsigned bytes, 3 or 1 dims


def load(split: str = "train", directory: str | Path = DEFAULT_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [n, 1, 28, 28] scaled to [0, 1], labels int64 [n] in 0..9);
    n = 60,000 for "train", 10,000 for "test"."""
    if split not in _FILES:
        raise ValueError(f"split is one of {sorted(_FILES)}, got {split!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetMissingError(f"{directory} is missing: install Debian's "
                                  "`dataset-fashion-mnist` package (apt-get install "
                                  "dataset-fashion-mnist)")
    images_file, labels_file = _FILES[split]
    images = _read_idx(directory / images_file, _IMAGES_MAGIC)
    labels = _read_idx(directory / labels_file, _LABELS_MAGIC)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DatasetFormatError(f"{directory}: {images.shape} images for {labels.shape} "
                                 "labels; expected [n, 28, 28] and [n]")
    if labels.max(initial=0) > 9:
        raise DatasetFormatError(f"{directory / labels_file}: labels beyond 9")
    return (images.astype(np.float32) / np.float32(255.0))[:, None], labels.astype(np.int64)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes (LeCun's MNIST format): big-endian magic, then one
    big-endian uint32 per dimension, then the data."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DatasetMissingError(f"{path} is missing: reinstall Debian's "
                                  "`dataset-fashion-mnist` package") from None
    except (OSError, EOFError) as e:
        raise DatasetFormatError(f"{path}: not a readable gzip file ({e})") from None
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise DatasetFormatError(f"{path}: IDX magic {got:#010x}, expected {magic:#010x}")
    dims = magic & 0xFF
    header = 4 + 4 * dims
    if len(data) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, np.uint8, offset=header)
    if body.size != int(np.prod(shape)):
        raise DatasetFormatError(f"{path}: {body.size} bytes of data for shape {shape}")
    return body.reshape(shape)
