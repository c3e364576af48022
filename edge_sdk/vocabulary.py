"""Tokenizers the device runs with numpy only: word-level (keyboard) and character-level.

Both sides tokenize with this module: the build side counts words with `tokenize` to make
the vocabulary (model_zoo.vocabulary_builder), the device encodes typed text with the
vocabulary stored in the bundle as `vocabulary.json`.

Word tokenization (`tokenize`, tag "word-v1") is what a next-word keyboard wants:

- lower-cased; typographic apostrophes (’ ‘) count as "'";
- a word is a run of letters with inner apostrophes kept ("don't", "is't", "ne'er");
- a leading apostrophe is kept only for the elisions in LEADING_ELISIONS ("'tis", "'twas",
  "'gainst", "'em"); anywhere else it is an opening quote and is dropped;
- a trailing apostrophe is kept on words of one or two letters, which in this text are
  elisions ("o'" of, "i'" in, "th'" the, "wi'" with) and must not merge with "o" or "i";
  on longer words it is a closing quote or a plural possessive and is dropped;
- digits, hyphens and punctuation are dropped ("to-night" -> "to", "night"): a keyboard
  suggests words, punctuation has its own keys, and `split_sentences` has already used
  the sentence punctuation to cut the text into the units a keyboard commits.

The vocabulary document records the tokenizer tag; a device refuses a word vocabulary made
with another tokenizer, since its ids would not mean what the model learnt.

Vocabulary documents (JSON, validated strictly on load):

    {"kind": "word", "tokenizer": "word-v1", "tokens": ["<pad>", "<s>", "</s>", "<unk>", ...]}
    {"kind": "char", "tokens": ["<pad>", "<unk>", " ", "e", ...]}
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import BundleError

__all__ = ["PAD", "BOS", "EOS", "OOV", "CHAR_OOV", "WORD_SPECIALS", "CHAR_SPECIALS",
           "WORD_TOKENIZER", "LEADING_ELISIONS", "VocabularyError", "tokenize",
           "split_sentences", "WordVocabulary", "CharVocabulary", "Vocabulary",
           "vocabulary_from_json", "load_vocabulary"]

PAD, BOS, EOS, OOV = 0, 1, 2, 3
CHAR_OOV = 1
WORD_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
CHAR_SPECIALS = ("<pad>", "<unk>")
WORD_TOKENIZER = "word-v1"
LEADING_ELISIONS = frozenset({
    "tis", "twas", "twere", "twill", "twould", "twixt", "tween", "t", "gainst", "em",
    "scape", "scaped", "mongst", "fore", "faith", "zounds", "sblood", "cause", "til", "bout"})

_RAW_WORD = re.compile(r"'?[^\W\d_]+(?:'[^\W\d_]+)*'?")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_SENTENCE_END = re.compile(r"[.!?;:]+")


class VocabularyError(BundleError):
    """A vocabulary (document) that cannot be used; the message says what is wrong.
    A BundleError, hence also a ValueError."""


def tokenize(text: str) -> list[str]:
    """The words of `text` as the keyboard model sees them (rules in the module doc)."""
    words = []
    for raw in _RAW_WORD.findall(text.lower().translate(_APOSTROPHES)):
        word = raw.strip("'")
        if raw.startswith("'") and word.split("'", 1)[0] in LEADING_ELISIONS:
            word = "'" + word
        if raw.endswith("'") and len(word) <= 2 and "'" not in word:
            word += "'"
        words.append(word)
    return words


def split_sentences(text: str) -> list[str]:
    """Sentences (as a keyboard commits them) of a text, cut at . ! ? ; : and without
    the ones that hold no word."""
    return [s.strip() for s in _SENTENCE_END.split(text) if tokenize(s)]


class _Vocabulary:
    kind = ""
    specials: tuple[str, ...] = ()

    def __init__(self, tokens: Iterable[str]):
        tokens = list(tokens)
        if not all(isinstance(t, str) for t in tokens):
            raise VocabularyError("vocabulary tokens are strings")
        if tuple(tokens[:len(self.specials)]) != self.specials:
            raise VocabularyError(f"a {self.kind} vocabulary starts with {self.specials}, "
                                  f"got {tokens[:len(self.specials)]}")
        if len(tokens) == len(self.specials):
            raise VocabularyError(f"a {self.kind} vocabulary holds at least one token "
                                  "besides the specials")
        repeated = [t for t, n in Counter(tokens).items() if n > 1]
        if repeated:
            raise VocabularyError(f"a {self.kind} vocabulary lists each token once; "
                                  f"repeated: {repeated[:3]}")
        self._tokens = tokens
        self._ids = {t: i for i, t in enumerate(tokens)}

    def __len__(self) -> int:
        return len(self._tokens)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other._tokens == self._tokens

    def _check_ids(self, ids) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.size and (not np.issubdtype(arr.dtype, np.integer)
                         or arr.min() < 0 or arr.max() >= len(self)):
            raise VocabularyError(f"ids must be integers in [0, {len(self)})")
        return arr.astype(np.int64).reshape(-1)

    def to_json(self) -> dict:
        return {"kind": self.kind, "tokens": list(self._tokens)}

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary document (UTF-8 JSON) to `path`; returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path):
        """Read a vocabulary of this kind; VocabularyError if it is malformed or another
        kind."""
        vocab = load_vocabulary(path)
        if not isinstance(vocab, cls):
            raise VocabularyError(f"{path} holds a {vocab.kind!r} vocabulary, not a "
                                  f"{cls.kind!r} one")
        return vocab


class WordVocabulary(_Vocabulary):
    """ids: 0 <pad>, 1 <s>, 2 </s>, 3 <unk>, then the words (by descending training
    frequency when built by model_zoo.vocabulary_builder)."""

    kind = "word"
    specials = WORD_SPECIALS

    def __init__(self, tokens: Iterable[str]):
        super().__init__(tokens)
        bad = [w for w in self._tokens[len(WORD_SPECIALS):] if tokenize(w) != [w]]
        if bad:
            raise VocabularyError(f"{len(bad)} vocabulary words are not single {WORD_TOKENIZER} "
                                  f"tokens, e.g. {bad[:3]}: was it built with another tokenizer?")

    @property
    def words(self) -> list[str]:
        """All tokens, specials first; index = id. Do not mutate."""
        return self._tokens

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> np.ndarray:
        """int64 [n] ids of the words of `text` (unknown words -> OOV), optionally with
        <s> before and </s> after."""
        ids = [self._ids.get(w, OOV) for w in tokenize(text)]
        return np.array(([BOS] if bos else []) + ids + ([EOS] if eos else []), dtype=np.int64)

    def decode(self, ids) -> list[str]:
        """The tokens of int ids [n] (specials included, as "<s>", "<unk>", ...)."""
        return [self._tokens[i] for i in self._check_ids(ids).tolist()]

    def is_word(self, token_id: int) -> bool:
        return len(WORD_SPECIALS) <= token_id < len(self._tokens)

    def to_json(self) -> dict:
        return {"kind": self.kind, "tokenizer": WORD_TOKENIZER, "tokens": list(self._tokens)}


class CharVocabulary(_Vocabulary):
    """ids: 0 <pad>, 1 <unk>, then single characters."""

    kind = "char"
    specials = CHAR_SPECIALS

    def __init__(self, tokens: Iterable[str]):
        super().__init__(tokens)
        bad = [c for c in self._tokens[len(CHAR_SPECIALS):] if len(c) != 1]
        if bad:
            raise VocabularyError(f"a char vocabulary lists single characters, got {bad[:3]}")

    @property
    def symbols(self) -> list[str]:
        """All tokens, specials first; index = id. Do not mutate."""
        return self._tokens

    def encode(self, text: str) -> np.ndarray:
        """int64 [len(text)] ids (unknown characters -> CHAR_OOV)."""
        get = self._ids.get
        return np.array([get(c, CHAR_OOV) for c in text], dtype=np.int64)

    def decode(self, ids) -> str:
        """The text of int ids [n]: <pad> decodes to nothing, <unk> to U+FFFD."""
        ids = self._check_ids(ids).tolist()
        return "".join("" if i == PAD else "\ufffd" if i == CHAR_OOV else self._tokens[i]
                       for i in ids)


Vocabulary = WordVocabulary | CharVocabulary
_KINDS = {"word": (WordVocabulary, {"kind", "tokenizer", "tokens"}),
          "char": (CharVocabulary, {"kind", "tokens"})}


def vocabulary_from_json(doc) -> Vocabulary:
    """A vocabulary from its parsed JSON document; VocabularyError names the problem."""
    if not isinstance(doc, dict):
        raise VocabularyError(f"a vocabulary is a JSON object, got {type(doc).__name__}")
    kind = doc.get("kind")
    if kind not in _KINDS:
        raise VocabularyError(f"unknown vocabulary kind {kind!r}; expected one of "
                              f"{sorted(_KINDS)}")
    cls, keys = _KINDS[kind]
    if set(doc) != keys:
        raise VocabularyError(f"a {kind} vocabulary has exactly the keys {sorted(keys)}; "
                              f"got {sorted(doc)}")
    if kind == "word" and doc["tokenizer"] != WORD_TOKENIZER:
        raise VocabularyError(f"the vocabulary was made with tokenizer {doc['tokenizer']!r}; "
                              f"this SDK tokenizes with {WORD_TOKENIZER!r}: rebuild the bundle")
    if not isinstance(doc["tokens"], list):
        raise VocabularyError("'tokens' is a list of strings")
    return cls(doc["tokens"])


def load_vocabulary(path: str | Path) -> Vocabulary:
    """The word or character vocabulary in a bundle's `vocabulary.json` (by its "kind")."""
    try:
        doc = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VocabularyError(f"cannot read the vocabulary {path}: {e}") from None
    return vocabulary_from_json(doc)
