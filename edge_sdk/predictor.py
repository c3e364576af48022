"""On-device inference with the current global model: next-word suggestions for the
keyboard, class scores for classifiers. A new model version is swapped in atomically:
each call reads one (version, parameters) snapshot."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .bundle import Bundle, check_parameters
from .runtime import GraphRunner, RuntimeOptions
from .vocabulary import BOS, WordVocabulary, load_vocabulary


@dataclass(frozen=True)
class _Snapshot:
    version: int
    parameters: dict[str, np.ndarray]


class Predictor:
    def __init__(
        self,
        bundle: Bundle,
        parameters: dict[str, np.ndarray] | None = None,
        version: int = 0,
        runtime: RuntimeOptions = RuntimeOptions(),
    ):
        self.bundle = bundle
        self._runner = GraphRunner(bundle.graph_path("infer"), runtime)
        self._lock = threading.Lock()
        self._snapshot = _Snapshot(version, parameters or bundle.initial_parameters())
        vocab_path = bundle.vocabulary_path()
        self.vocabulary = load_vocabulary(vocab_path) if vocab_path else None

    @property
    def version(self) -> int:
        return self._snapshot.version

    def update(self, parameters: dict[str, np.ndarray], version: int) -> bool:
        """Swap in a newer model; returns False (and keeps the current one) for an older
        or equal version. The arrays are copied, so the caller may reuse its own."""
        check_parameters(self.bundle.parameter_specs, parameters)
        snapshot = _Snapshot(version, {k: np.array(v, np.float32) for k, v in parameters.items()})
        with self._lock:
            if version <= self._snapshot.version:
                return False
            self._snapshot = snapshot
            return True

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw outputs of the inference graph: logits, top_ids, top_scores."""
        snapshot = self._snapshot  # one read: a concurrent update never mixes versions
        return self._runner.run(dict(inputs) | snapshot.parameters)

    def suggest_next_words(self, text: str, k: int = 3) -> list[tuple[str, float]]:
        """Up to k (word, probability) suggestions after the typed `text`."""
        vocab = self.vocabulary
        if not isinstance(vocab, WordVocabulary):
            raise TypeError("next-word suggestions need a bundle with a word vocabulary")
        ids = np.concatenate([[BOS], vocab.encode(text)]).astype(np.int64)[None, :]
        out = self.predict({self.bundle.input_names[0]: ids})
        probs = out["logits"][0, -1]
        probs = np.exp(probs - probs.max())
        probs /= probs.sum()
        ranked = [int(i) for i in np.argsort(-probs) if vocab.is_word(int(i))][:k]
        return [(vocab.words[i], float(probs[i])) for i in ranked]
