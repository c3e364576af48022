"""A device's own buffer values (BatchNorm running statistics), kept between
participations when a task's plan says `buffers: "local"` (FedBN, Li et al. 2021).

The values live in the example store's state table (one SQLite file the app owns), so
they survive an app restart, and `ExampleStore.wipe()` erases them with everything
else. They are kept per task and bundle: values written for another model are ignored
and dropped, never fed to a graph they do not fit.
"""

from __future__ import annotations

import json
from typing import Protocol

import numpy as np

from .bundle import Bundle
from .protocol.arrays import decode_arrays, encode_arrays
from .protocol.errors import ProtocolError

KEY = "client.buffers.{task}"
_META = "__meta__"


class StateStore(Protocol):
    """Where the values live: the example store's state table fits."""

    def put_state(self, key: str, value: bytes) -> None: ...
    def get_state(self, key: str) -> bytes | None: ...
    def delete_state(self, key: str) -> None: ...


class LocalBuffers:
    """Load, save and apply one device's buffer values for `bundle`'s tasks."""

    def __init__(self, store: StateStore, bundle: Bundle):
        self.store, self.bundle = store, bundle
        self._shapes = {
            s.name: s.shape for s in bundle.parameter_specs if s.name in bundle.buffer_names
        }

    def load(self, task_id: str) -> dict[str, np.ndarray] | None:
        """The kept values (float32 arrays of the buffers' shapes), or None: nothing kept,
        or what is kept belongs to another bundle or cannot be read (then it is dropped)."""
        key = KEY.format(task=task_id)
        blob = self.store.get_state(key)
        if blob is None:
            return None
        try:
            arrays = decode_arrays(blob)
            meta = json.loads(arrays.pop(_META).tobytes())
        except (ProtocolError, KeyError, ValueError):
            arrays, meta = {}, {}
        fits = (
            meta.get("model_id") == self.bundle.model_id
            and set(arrays) == set(self._shapes)
            and all(
                a.shape == self._shapes[n] and a.dtype == np.float32 and np.all(np.isfinite(a))
                for n, a in arrays.items()
            )
        )
        if not fits:
            self.store.delete_state(key)
            return None
        return arrays

    def save(self, task_id: str, parameters: dict[str, np.ndarray]) -> None:
        """Keep the buffers of `parameters` (not mutated; other names are ignored)."""
        if not self._shapes:
            return
        meta = json.dumps({"model_id": self.bundle.model_id}).encode()
        arrays = {n: np.asarray(parameters[n], np.float32) for n in self._shapes}
        self.store.put_state(
            KEY.format(task=task_id), encode_arrays({_META: np.frombuffer(meta, np.uint8)} | arrays)
        )

    def forget(self, task_id: str) -> None:
        if self._shapes:  # a bundle without buffers never kept any
            self.store.delete_state(KEY.format(task=task_id))

    def apply(self, task_id: str, parameters: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`parameters` (e.g. a downloaded model; not mutated) with this device's kept
        buffer values in place of the server's, when it keeps any for the task. For
        training, federated evaluation and on-device inference alike."""
        kept = self.load(task_id)
        return parameters if kept is None else parameters | kept

    def split(
        self, parameters: dict[str, np.ndarray], delta: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(the buffer values a training run reached, `delta` with zeros for the buffers:
        what leaves the device) for a run from `parameters` (neither is mutated). The
        values are parameters + delta, float32, so equal to the trained ones to rounding."""
        reached = {n: parameters[n] + delta[n] for n in self._shapes}
        sent = {n: np.zeros_like(v) if n in self._shapes else v for n, v in delta.items()}
        return reached, sent
