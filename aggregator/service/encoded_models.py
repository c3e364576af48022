"""Model versions in the smaller download encodings (edge_sdk.protocol.model_encoding),
each derived once from the stored float32 model and kept beside it as a file, so that
downloads are files: ETag, If-None-Match and Range work as for the float32 model.

A committed version never changes and its encoding is a deterministic function of it, so
the derived file is a cache: written whole or not at all (temp file, fsync, rename), made
again if it is missing. The first request for an encoding of a version pays the encoding
(~0.03 s for keyboard_cifg's 454k parameters) on the service thread, never on the event
loop; the SQLite store keeps such files beside a model it references (store/sqlite.py).
Differences from an older version (edge_sdk.protocol.model_encoding) are files too, one
per (version, base version) pair that devices asked for."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from edge_sdk.protocol import decode_parameters
from edge_sdk.protocol.model_encoding import (
    DIFFERENCE_ENCODINGS,
    ENCODINGS,
    decode_model,
    encode_model,
)

from ..errors import BadRequest

_lock = threading.Lock()  # one encoder at a time: a burst of first requests encodes once


def encoded_model_file(path: Path, specs: list, encoding: str) -> Path:
    """The file of the float32 model at `path` in `encoding` (a key of ENCODINGS), made
    from it when missing."""
    if encoding not in ENCODINGS:
        raise BadRequest(f"encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}")
    target = path.with_name(f"{path.name}.{encoding}")
    if target.exists():
        return target
    with _lock:
        if not target.exists():
            header, params = decode_parameters(path.read_bytes(), specs)
            _write_whole(
                target,
                encode_model(params, specs, header["model_id"], header["model_version"], encoding),
            )
    return target


def encoded_difference_file(
    path: Path, base_path: Path, base_version: int, specs: list, encoding: str
) -> Path:
    """The file of the float32 model at `path` as a difference (in
    DIFFERENCE_ENCODINGS[encoding]) from what a device reconstructs out of the whole
    `encoding` download of the version at `base_path`, made when missing."""
    # named by both stored files (SQLite "v7.eflm.q8-v3"; PostgreSQL's cache is by content)
    target = path.with_name(f"{path.name}.{encoding}-{base_path.name.split('.')[0]}")
    if target.exists():
        return target
    base_file = encoded_model_file(base_path, specs, encoding)
    with _lock:
        if not target.exists():
            header, params = decode_parameters(path.read_bytes(), specs)
            _, base = decode_model(base_file.read_bytes(), specs)
            _write_whole(
                target,
                encode_model(
                    params,
                    specs,
                    header["model_id"],
                    header["model_version"],
                    DIFFERENCE_ENCODINGS[encoding],
                    base=(base_version, base),
                ),
            )
    return target


def _write_whole(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
