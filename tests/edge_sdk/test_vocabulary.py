from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_sdk.vocabulary import (
    BOS,
    EOS,
    OOV,
    CharVocabulary,
    VocabularyError,
    WordVocabulary,
    load_vocabulary,
    split_sentences,
    tokenize,
)

WORDS = ["<pad>", "<s>", "</s>", "<unk>", "the", "lord", "'tis", "don't"]


def test_tokenize_keeps_inner_apostrophes_and_drops_punctuation():
    assert tokenize("'Tis my LORD, don't go!  3 times") == [
        "'tis",
        "my",
        "lord",
        "don't",
        "go",
        "times",
    ]


def test_split_sentences_at_sentence_punctuation():
    assert split_sentences("Who's there? Nay, answer me: stand. ...") == [
        "Who's there",
        "Nay, answer me",
        "stand",
    ]


def test_encode_maps_unknown_words_to_oov_and_adds_markers():
    vocab = WordVocabulary(WORDS)
    ids = vocab.encode("The lord of 'tis", bos=True, eos=True)
    assert ids.dtype == np.int64
    assert ids.tolist() == [BOS, 4, 5, OOV, 6, EOS]
    assert vocab.decode(ids[1:3]) == ["the", "lord"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(WORDS[4:]), max_size=20))
def test_decode_inverts_encode_for_known_words(words):
    vocab = WordVocabulary(WORDS)
    assert vocab.decode(vocab.encode(" ".join(words))) == words


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet="abcde \n", max_size=50))
def test_char_vocabulary_round_trips_its_alphabet(text):
    vocab = CharVocabulary(["<pad>", "<unk>"] + list("abcde \n"))
    assert vocab.decode(vocab.encode(text)) == text


def test_save_and_load_round_trip(tmp_path):
    for vocab in (WordVocabulary(WORDS), CharVocabulary(["<pad>", "<unk>", "a", "b"])):
        path = tmp_path / f"{vocab.kind}.json"
        path.write_text(json.dumps(vocab.to_json()))
        loaded = load_vocabulary(path)
        assert type(loaded) is type(vocab) and loaded.to_json() == vocab.to_json()


@pytest.mark.parametrize(
    "doc, message",
    [
        ([], "JSON object"),
        ({"kind": "bpe", "tokens": ["a"]}, "unknown vocabulary kind"),
        ({"kind": "word", "tokens": ["a", "b"]}, "starts with"),
        ({"kind": "word", "tokens": WORDS + ["the"]}, "once"),
        ({"kind": "char", "tokens": ["<pad>", "<unk>", "ab"]}, "single characters"),
    ],
)
def test_load_rejects_bad_documents_with_a_clear_error(tmp_path, doc, message):
    path = tmp_path / "v.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(VocabularyError, match=message):
        load_vocabulary(path)
