from __future__ import annotations

import random

import pytest

from edge_sdk.vocabulary import CHAR_SPECIALS, WORD_SPECIALS, load_vocabulary, tokenize
from model_zoo.vocabulary_builder import build_char_vocabulary, build_word_vocabulary

TEXTS = ["'Tis the lord, the LORD!", "o' the king; 'tis so", "a b c", "c b"]


def test_word_vocabulary_ranks_by_count_then_alphabetically():
    vocab = build_word_vocabulary(TEXTS, size=9)
    # counts: the 3, 'tis 2, lord 2, b 2, c 2, then a/king/o'/so 1
    assert vocab.words == list(WORD_SPECIALS) + ["the", "'tis", "b", "c", "lord"]


def test_word_vocabulary_does_not_depend_on_text_order():
    shuffled = TEXTS[:]
    random.Random(0).shuffle(shuffled)
    assert build_word_vocabulary(shuffled, 8) == build_word_vocabulary(TEXTS, 8)


def test_word_vocabulary_counts_with_the_device_tokenizer():
    vocab = build_word_vocabulary(TEXTS, size=100)
    device_words = {w for text in TEXTS for w in tokenize(text)}
    assert set(vocab.words[len(WORD_SPECIALS):]) == device_words


def test_built_vocabularies_survive_save_and_load(tmp_path):
    for vocab in (build_word_vocabulary(TEXTS, 8), build_char_vocabulary(TEXTS)):
        assert load_vocabulary(vocab.save(tmp_path / f"{vocab.kind}.json")) == vocab


def test_char_vocabulary_keeps_the_most_frequent_characters():
    vocab = build_char_vocabulary(["aaab", "bc"], size=4)
    assert vocab.symbols == list(CHAR_SPECIALS) + ["a", "b"]
    assert vocab.encode("c").tolist() == [1]


@pytest.mark.parametrize("build", [build_word_vocabulary, build_char_vocabulary])
def test_builders_refuse_bad_arguments(build):
    with pytest.raises(TypeError, match="not one string"):
        build("a single text")
    with pytest.raises(ValueError, match="special tokens"):
        build(TEXTS, 2)
    with pytest.raises(ValueError, match="hold no"):
        build(["", "..."] if build is build_word_vocabulary else [""])
