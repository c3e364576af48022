"""Error feedback (Seide et al. 2014; Stich et al. 2018, "Sparsified SGD with memory";
Karimireddy et al. 2019, "Error feedback fixes SignSGD"): what compression dropped this
round is added to the next round's delta, so nothing is lost for good.

The residual lives on the device across rounds; `to_bytes`/`from_bytes` let the SDK keep
it in the example store's state table.
"""

from __future__ import annotations

import numpy as np

from .arrays import decode_arrays, encode_arrays
from .errors import BadPayload


class ErrorFeedback:
    def __init__(self, residual: dict[str, np.ndarray] | None = None):
        self.residual: dict[str, np.ndarray] = dict(residual or {})

    def corrected(self, delta: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """delta + residual (new arrays; delta is not mutated)."""
        return {
            k: v + self.residual[k] if k in self.residual else np.array(v, np.float32)
            for k, v in delta.items()
        }

    def remember(self, sent: dict[str, np.ndarray], reconstructed: dict[str, np.ndarray]) -> None:
        """residual = what we meant to send - what the server will reconstruct."""
        self.residual = {k: (sent[k] - reconstructed[k]).astype(np.float32) for k in sent}

    def to_bytes(self) -> bytes:
        return encode_arrays(self.residual)

    @classmethod
    def from_bytes(cls, blob: bytes | None) -> ErrorFeedback:
        if not blob:
            return cls()
        try:
            return cls({k: v.astype(np.float32) for k, v in decode_arrays(blob).items()})
        except BadPayload as e:
            raise BadPayload(f"stored error-feedback residual is unreadable: {e}") from None
