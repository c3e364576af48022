"""Tokenizers the device runs with numpy only: word-level (keyboard) and character-level.

Both sides tokenize with this module: the build side counts words with `tokenize` to make
the vocabulary, the device encodes typed text with the vocabulary stored in the bundle.

Words are lower-cased runs of letters with inner apostrophes kept ("'tis", "don't");
punctuation and digits are dropped, because a keyboard suggests words, not symbols.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .errors import BundleError

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*|'[a-z]+")
_SENTENCE_END = re.compile(r"[.!?;:]+")

PAD, BOS, EOS, OOV = 0, 1, 2, 3
WORD_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
CHAR_SPECIALS = ("<pad>", "<unk>")


class VocabularyError(BundleError):
    """A vocabulary document that cannot be used; the message says what is wrong."""


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def split_sentences(text: str) -> list[str]:
    """Sentences (as a keyboard commits them) of a text, without empty ones."""
    return [s.strip() for s in _SENTENCE_END.split(text) if tokenize(s)]


class WordVocabulary:
    """ids: 0 pad, 1 <s>, 2 </s>, 3 <unk>, then words by descending training frequency."""

    kind = "word"

    def __init__(self, words: list[str]):
        if list(words[:4]) != list(WORD_SPECIALS):
            raise VocabularyError(f"a word vocabulary starts with {WORD_SPECIALS}")
        if len(set(words)) != len(words):
            raise VocabularyError("a word vocabulary lists each word once")
        self.words = list(words)
        self._ids = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> np.ndarray:
        """int64 [n] ids of the words of `text` (unknown words -> <unk>)."""
        ids = [self._ids.get(w, OOV) for w in tokenize(text)]
        return np.array(([BOS] if bos else []) + ids + ([EOS] if eos else []), dtype=np.int64)

    def decode(self, ids) -> list[str]:
        return [self.words[int(i)] for i in ids]

    def is_word(self, token_id: int) -> bool:
        return token_id >= len(WORD_SPECIALS)

    def to_json(self) -> dict:
        return {"kind": self.kind, "tokens": self.words}


class CharVocabulary:
    """ids: 0 pad, 1 <unk>, then characters."""

    kind = "char"

    def __init__(self, symbols: list[str]):
        if list(symbols[:2]) != list(CHAR_SPECIALS):
            raise VocabularyError(f"a character vocabulary starts with {CHAR_SPECIALS}")
        if any(len(s) != 1 for s in symbols[2:]) or len(set(symbols)) != len(symbols):
            raise VocabularyError("a character vocabulary lists distinct single characters")
        self.symbols = list(symbols)
        self._ids = {c: i for i, c in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> np.ndarray:
        return np.array([self._ids.get(c, 1) for c in text], dtype=np.int64)

    def decode(self, ids) -> str:
        return "".join(self.symbols[int(i)] if int(i) >= 2 else "" for i in ids)

    def to_json(self) -> dict:
        return {"kind": self.kind, "tokens": self.symbols}


Vocabulary = WordVocabulary | CharVocabulary


def vocabulary_from_json(doc) -> Vocabulary:
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("tokens"), list)
        or not all(isinstance(t, str) for t in doc["tokens"])
    ):
        raise VocabularyError(
            "a vocabulary is a JSON object with a 'kind' and a list of string 'tokens'"
        )
    kinds = {"word": WordVocabulary, "char": CharVocabulary}
    if doc.get("kind") not in kinds:
        raise VocabularyError(
            f"unknown vocabulary kind {doc.get('kind')!r}; expected {sorted(kinds)}"
        )
    return kinds[doc["kind"]](doc["tokens"])


def load_vocabulary(path: str | Path) -> Vocabulary:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise VocabularyError(f"cannot read the vocabulary {path}: {e}") from None
    return vocabulary_from_json(doc)
