"""Build vocabularies from training text on the build side, with the device's tokenizer."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from edge_sdk.vocabulary import (
    CHAR_SPECIALS,
    WORD_SPECIALS,
    CharVocabulary,
    WordVocabulary,
    tokenize,
)


def build_word_vocabulary(texts: Iterable[str], size: int = 10000) -> WordVocabulary:
    """The `size - 4` most frequent words (ties broken alphabetically) after the specials."""
    if size <= len(WORD_SPECIALS):
        raise ValueError(f"size must exceed the {len(WORD_SPECIALS)} special tokens")
    counts = Counter(w for text in texts for w in tokenize(text))
    ranked = sorted(counts, key=lambda w: (-counts[w], w))[: size - len(WORD_SPECIALS)]
    return WordVocabulary(list(WORD_SPECIALS) + ranked)


def build_char_vocabulary(texts: Iterable[str], size: int = 80) -> CharVocabulary:
    """The `size - 2` most frequent characters after the specials (LEAF uses 80 symbols)."""
    counts = Counter(c for text in texts for c in text)
    ranked = sorted(counts, key=lambda c: (-counts[c], c))[: size - len(CHAR_SPECIALS)]
    return CharVocabulary(list(CHAR_SPECIALS) + ranked)
