"""The keyboard task's data: Shakespeare users' sentences, tokenized with the bundle's
vocabulary; per-user 80/20 split in time; a fixed sample of held-out sentences."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.vocabulary import load_vocabulary


def build_keyboard_bundle(model: str, out: Path, vocabulary_size: int, seed: int = 0) -> Bundle:
    from model_zoo.data.shakespeare import load_users
    from model_zoo.vocabulary_builder import build_word_vocabulary
    from model_zoo.zoo import build_bundle
    lines = [line for u in load_users() for line in u.split()[0]]
    vocab = build_word_vocabulary(lines, vocabulary_size)
    return Bundle.load(build_bundle(model, out, vocabulary=vocab, seed=seed))


def keyboard_data(bundle: Bundle, eval_sentences: int, seed: int = 0):
    """(per-user training examples, held-out sample, all held-out, all training)."""
    from model_zoo.data.shakespeare import load_users, word_examples
    vocab = load_vocabulary(bundle.vocabulary_path())
    users, test_all = [], []
    for user in load_users():
        train_lines, test_lines = user.split()
        users.append(word_examples(vocab, train_lines))
        test_all += word_examples(vocab, test_lines)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(test_all))[:eval_sentences]
    test = [test_all[i] for i in sorted(pick)]
    train_all = [e for u in users for e in u]
    return users, test, test_all, train_all
