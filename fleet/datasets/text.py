"""Text for next-word and next-character prediction: JSON lines {"user": ..., "text": ...}
(one message each, in time order per user, or sorted by an optional "time" field), or a
directory with one UTF-8 file per user (one message per line).

Each user's messages split in time: the first `train_fraction` train, the rest are held
out. The vocabulary is built from the training split only (a word vocabulary of the
`vocabulary_size` most frequent words, or the most frequent characters), so held-out
text meets unknown words the way a device's future typing does.

Words: one example per sentence, <s> w1 .. wn </s>, cut to `max_len` + 1 ids (as the
keyboard logs them). Characters: the user's messages joined by spaces, in windows of
`window` characters with every next character a target (LEAF's Shakespeare form).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model_zoo.data.shakespeare import char_examples, word_examples
from server_eval.heldout_set import read_json_lines

from .base import DatasetError, InputSpec, Task, check_fraction, check_split, split_point

LEVELS = ("word", "char")


class TextDataset:
    """Messages per user, in time order; see the module docstring for the options."""

    def __init__(
        self,
        name: str,
        messages: dict[str, list[str]],
        *,
        level: str = "word",
        vocabulary_size: int | None = None,
        max_len: int = 20,
        window: int = 80,
        train_fraction: float = 0.8,
        vocabulary=None,
    ):
        if level not in LEVELS:
            raise DatasetError(f"level must be one of {LEVELS}, got {level!r}")
        check_fraction(train_fraction)
        if max_len < 2 or window < 2:
            raise DatasetError("max_len and window must be >= 2")
        if not messages:
            raise DatasetError(f"{name}: no users")
        self.name, self.level = name, level
        self.vocabulary_size = vocabulary_size or (10000 if level == "word" else 80)
        self.max_len, self.window = max_len, window
        self._split = {}
        for user, texts in messages.items():
            cut = split_point(len(texts), train_fraction)
            self._split[user] = {"train": list(texts[:cut]), "heldout": list(texts[cut:])}
        self._vocabulary = vocabulary
        self._cache: dict[tuple[str, str], list[dict]] = {}

    def vocabulary(self):
        """The edge_sdk vocabulary, built from the training split of every user."""
        if self._vocabulary is None:
            from model_zoo.vocabulary_builder import build_char_vocabulary, build_word_vocabulary

            lines = (t for s in self._split.values() for t in s["train"])
            self._vocabulary = (
                build_word_vocabulary(lines, self.vocabulary_size)
                if self.level == "word"
                else build_char_vocabulary(lines, self.vocabulary_size)
            )
        return self._vocabulary

    def use_vocabulary(self, vocabulary) -> None:
        """Encode with a given vocabulary (a bundle's) instead of building one."""
        if vocabulary.kind != self.level:
            raise DatasetError(f"a {vocabulary.kind} vocabulary for {self.level}-level text")
        self._vocabulary = vocabulary
        self._cache.clear()

    def oov_rate(self, split: str) -> float:
        """The share of the split's words (or characters) outside the vocabulary."""
        from edge_sdk.vocabulary import tokenize

        vocab = self.vocabulary()
        known = set(vocab.words if self.level == "word" else vocab.symbols)
        units = [
            u
            for s in self._split.values()
            for t in s[split]
            for u in (tokenize(t) if self.level == "word" else t)
        ]
        return sum(u not in known for u in units) / len(units) if units else 0.0

    def task(self) -> Task:
        name = "tokens" if self.level == "word" else "chars"
        vocab = self.vocabulary()
        return Task(
            "next_word" if self.level == "word" else "next_char",
            {name: InputSpec(("seq",), "int64")},
            len(vocab),
            vocabulary=vocab,
        )

    def users(self) -> list[str]:
        return list(self._split)

    def texts(self, user: str, split: str) -> list[str]:
        check_split(split)
        return self._split[user][split]

    def examples(self, user: str, split: str) -> list[dict[str, np.ndarray]]:
        key = (user, split)
        if key not in self._cache:
            texts = self.texts(user, split)
            self._cache[key] = (
                word_examples(self.vocabulary(), texts, self.max_len)
                if self.level == "word"
                else char_examples(self.vocabulary(), texts, self.window)
            )
        return self._cache[key]


def read_jsonl(
    path: Path, user_key: str = "user", text_key: str = "text", time_key: str | None = "time"
) -> dict[str, list[str]]:
    """Messages per user from JSON lines; ordered by `time_key` when every line has it."""
    rows: dict[str, list[tuple]] = {}
    for number, doc in read_json_lines(path, DatasetError):
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get(text_key), str)
            or user_key not in doc
        ):
            raise DatasetError(
                f'{path}:{number}: a line is {{"{user_key}": ..., "{text_key}": "..."}}'
            )
        rows.setdefault(str(doc[user_key]), []).append((doc.get(time_key), number, doc[text_key]))
    if not rows:
        raise DatasetError(f"{path} holds no messages")
    timed = all(t is not None for r in rows.values() for t, _, _ in r)
    return {
        u: [text for *_, text in (sorted(r, key=lambda e: (e[0], e[1])) if timed else r)]
        for u, r in rows.items()
    }


def read_directory(path: Path, pattern: str = "*") -> dict[str, list[str]]:
    """One file per user (its name without suffix is the user), one message a line."""
    files = sorted(p for p in path.glob(pattern) if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DatasetError(f"{path}: no files matching {pattern!r}")
    out = {}
    for p in files:
        lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
        out[p.stem] = [line for line in lines if line]
    return out


class JsonlText(TextDataset):
    """`{"kind": "jsonl", "path": FILE}`: JSON lines {"user": ..., "text": ...}."""

    def __init__(
        self,
        path: str,
        *,
        user_key: str = "user",
        text_key: str = "text",
        time_key: str | None = "time",
        **options,
    ):
        p = Path(path)
        if not p.is_file():
            raise DatasetError(f"{p}: no such file")
        super().__init__(p.stem, read_jsonl(p, user_key, text_key, time_key), **options)


class DirectoryText(TextDataset):
    """`{"kind": "text_dir", "path": DIR}`: one text file per user."""

    def __init__(self, path: str, *, pattern: str = "*", **options):
        p = Path(path)
        if not p.is_dir():
            raise DatasetError(f"{p}: not a directory")
        super().__init__(p.name, read_directory(p, pattern), **options)
