"""The fleet's task data: a bundle built from the Shakespeare training split and that
split's examples per natural user (a (play, role) pair), per-user 80/20 split in time;
a fixed sample of held-out examples for periodic evaluation.

Two tasks share the split: next-word (keyboard_cifg*: sentences tokenized with the bundle's
word vocabulary) and next-character (shakespeare_char*: the role's text in 80-character
windows, every position a target, as in LEAF and TFF's Shakespeare)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.vocabulary import load_vocabulary

WORDS_PER_SENTENCE = 20   # a sentence's ids after <s>, cut there
CHAR_WINDOW = 80          # LEAF's window


@dataclass
class TaskData:
    bundle: Bundle
    users: list[list[dict]]   # training examples per natural user
    test: list[dict]          # the held-out sample evaluated during the run
    test_all: list[dict]      # every held-out example (final figures)
    train_all: list[dict]
    kind: str                 # "word" or "char"
    length: int = CHAR_WINDOW  # positions per example (at most, for sentences)

    @property
    def unit(self) -> str:
        return "sentences" if self.kind == "word" else f"{self.length}-character windows"


def is_char_model(model: str) -> bool:
    return model.startswith("shakespeare_char")


def example_length(model: str, sequence_length: int | None = None) -> int:
    """Positions per example: `sequence_length`, else the task's own (sentences cut to 20
    words; LEAF's 80-character windows)."""
    if sequence_length is not None:
        return sequence_length
    return CHAR_WINDOW if is_char_model(model) else WORDS_PER_SENTENCE


def build_task_bundle(model: str, out: Path, vocabulary_size: int, seed: int = 0,
                      sequence_length: int | None = None) -> Bundle:
    """The bundle for `model`, sized to a vocabulary built from the training split with at
    most `vocabulary_size` entries (the text has 74 distinct characters: a character
    vocabulary holds 76 at most) and for examples of `sequence_length` positions (None:
    the task's own, see example_length)."""
    from model_zoo.data.shakespeare import load_users
    from model_zoo.vocabulary_builder import build_char_vocabulary, build_word_vocabulary
    from model_zoo.zoo import build_bundle
    lines = [line for u in load_users() for line in u.split()[0]]
    build = build_char_vocabulary if is_char_model(model) else build_word_vocabulary
    vocab = build(lines, vocabulary_size)
    return Bundle.load(build_bundle(model, out, vocabulary=vocab, seed=seed,
                                    sequence_length=example_length(model, sequence_length)))


def task_data(bundle: Bundle, eval_examples: int, seed: int = 0,
              sequence_length: int | None = None) -> TaskData:
    """sequence_length: positions per example (None: the task's own, see example_length)."""
    from model_zoo.data.shakespeare import char_examples, load_users, word_examples
    vocab = load_vocabulary(bundle.vocabulary_path())
    kind = vocab.kind
    length = sequence_length or (CHAR_WINDOW if kind == "char" else WORDS_PER_SENTENCE)
    if kind == "char":
        def make(v, lines):
            return char_examples(v, lines, window=length)
    else:
        def make(v, lines):
            return word_examples(v, lines, max_len=length)
    users, test_all = [], []
    for user in load_users():
        train_lines, test_lines = user.split()
        users.append(make(vocab, train_lines))
        test_all += make(vocab, test_lines)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(test_all))[:eval_examples]
    test = [test_all[i] for i in sorted(pick)]
    train_all = [e for u in users for e in u]
    return TaskData(bundle, users, test, test_all, train_all, kind, length)


def leaf_form_sample(bundle: Bundle, count: int, seed: int = 0) -> list[dict]:
    """LEAF's next-character metric on the same held-out text: a character counts only with
    the full 80 characters before it as input. `count` positions drawn at random (the
    full set is ~740k windows, 80x the cost of the every-position evaluation); each is an
    example whose targets are padding except the last, so the ordinary eval graph (and the
    n-gram) score exactly that one prediction."""
    from model_zoo.data.shakespeare import char_windows_leaf, load_users
    vocab = load_vocabulary(bundle.vocabulary_path())
    pairs = [char_windows_leaf(vocab, u.split()[1]) for u in load_users()]
    x = np.concatenate([p[0] for p in pairs])
    y = np.concatenate([p[1] for p in pairs])
    pick = np.sort(np.random.default_rng([seed, 0x1EAF]).permutation(len(y))[:count])
    out = []
    for i in pick:
        targets = np.zeros(x.shape[1], np.int64)  # 0 is the char vocabulary's padding
        targets[-1] = y[i]
        out.append({"chars": x[i].astype(np.int64), "targets": targets})
    return out
