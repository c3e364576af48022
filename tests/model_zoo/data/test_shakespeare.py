from __future__ import annotations

import numpy as np

from model_zoo.data.shakespeare import (
    ShakespeareUser,
    char_examples,
    char_windows_leaf,
    load_users,
    parse_play,
    word_examples,
)
from model_zoo.vocabulary_builder import build_char_vocabulary, build_word_vocabulary

PLAY = """# A Play

## ACT I

### SCENE I. A room.

_Enter ANNA and BEN_

**ANNA**  
Good morrow, Ben.  
How dost thou?

**BEN**  
_Aside_ Well enough.

_Exit ANNA_

**ANNA**  
Farewell.
"""


def test_parse_play_assigns_lines_to_speakers_and_drops_stage_directions():
    assert parse_play(PLAY) == [
        ("ANNA", "Good morrow, Ben."),
        ("ANNA", "How dost thou?"),
        ("BEN", "Well enough."),
        ("ANNA", "Farewell."),
    ]


def test_the_real_plays_give_the_leaf_population_of_users():
    users = load_users()
    assert 1300 <= len(users) <= 1500  # LEAF Shakespeare: ~1,400 (play, role) users
    assert len({u.user_id for u in users}) == len(users)
    hamlet = next(u for u in users if u.user_id == "hamlet/HAMLET")
    assert len(hamlet.lines) > 1000


def test_split_is_in_time_first_80_percent_train():
    user = ShakespeareUser("p", "R", tuple(f"line {i}" for i in range(10)))
    train, test = user.split()
    assert train == [f"line {i}" for i in range(8)] and test == ["line 8", "line 9"]


def test_word_and_char_examples_shift_targets_by_one():
    lines = ["Good morrow, Ben. How dost thou?"]
    vocab = build_word_vocabulary(lines, size=20)
    examples = word_examples(vocab, lines)
    assert len(examples) == 2
    for e in examples:
        np.testing.assert_array_equal(e["tokens"][1:], e["targets"][:-1])
    chars = build_char_vocabulary(lines)
    cex = char_examples(chars, lines * 5, window=16)
    assert all(len(e["chars"]) <= 16 for e in cex)
    np.testing.assert_array_equal(cex[0]["chars"][1:], cex[0]["targets"][:-1])
    x, y = char_windows_leaf(chars, lines, window=8)
    ids = chars.encode(lines[0])
    assert x.shape == (len(ids) - 8, 8) and y[0] == ids[8]


def test_a_roles_lines_join_with_spaces_as_in_leaf():
    lines = ["To be, or not to be,", "that is the question"]
    chars = build_char_vocabulary(lines)
    x, y = char_windows_leaf(chars, lines, window=20)
    assert chars.decode(x[0]) == "To be, or not to be,"
    assert chars.decode([y[0]]) == " "  # the line break, a space: in the vocabulary
    assert 1 not in chars.encode(" ".join(lines))  # nothing unknown
