"""Build vocabularies from training text on the build side.

Words are counted with the device's own tokenizer (edge_sdk.vocabulary.tokenize), so the
build side and the device split text identically. Only training text should be passed:
building from test text leaks it into the model.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from edge_sdk.vocabulary import (CHAR_SPECIALS, WORD_SPECIALS, CharVocabulary, WordVocabulary,
                                 tokenize)

__all__ = ["build_word_vocabulary", "build_char_vocabulary"]


def build_word_vocabulary(texts: Iterable[str], size: int = 10000) -> WordVocabulary:
    """The specials, then the `size - 4` most frequent words of `texts` (ties broken
    alphabetically, so the result depends only on the counts). Fewer if the text has
    fewer distinct words."""
    _check_texts(texts)
    if size <= len(WORD_SPECIALS):
        raise ValueError(f"size must exceed the {len(WORD_SPECIALS)} special tokens, got {size}")
    counts = Counter(w for text in texts for w in tokenize(text))
    if not counts:
        raise ValueError("the texts hold no words")
    return WordVocabulary(list(WORD_SPECIALS) + _ranked(counts, size - len(WORD_SPECIALS)))


def build_char_vocabulary(texts: Iterable[str], size: int = 80) -> CharVocabulary:
    """The specials, then the `size - 2` most frequent characters of `texts` (ties broken
    by code point). LEAF's Shakespeare model uses 80 symbols; rarer characters encode as
    <unk>."""
    _check_texts(texts)
    if size <= len(CHAR_SPECIALS):
        raise ValueError(f"size must exceed the {len(CHAR_SPECIALS)} special tokens, got {size}")
    counts = Counter(c for text in texts for c in text)
    if not counts:
        raise ValueError("the texts hold no characters")
    return CharVocabulary(list(CHAR_SPECIALS) + _ranked(counts, size - len(CHAR_SPECIALS)))


def _ranked(counts: Counter, n: int) -> list[str]:
    return sorted(counts, key=lambda t: (-counts[t], t))[:n]


def _check_texts(texts) -> None:
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts is an iterable of strings, not one string")
