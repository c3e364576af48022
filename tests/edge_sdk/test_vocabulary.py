from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_sdk.errors import BundleError
from edge_sdk.vocabulary import (BOS, EOS, OOV, CharVocabulary, VocabularyError, WordVocabulary,
                                 load_vocabulary, split_sentences, tokenize)

WORDS = ["<pad>", "<s>", "</s>", "<unk>", "the", "lord", "'tis", "don't", "o'", "i"]
CHARS = ["<pad>", "<unk>", "a", "b", " "]


def test_tokenize_keeps_inner_apostrophes_and_drops_punctuation_and_digits():
    assert tokenize("'Tis my LORD, don't go!  3 times; to-night") == [
        "'tis", "my", "lord", "don't", "go", "times", "to", "night"]


def test_tokenize_tells_elisions_from_quotation_marks():
    # 'tis and o' are words; 'Signior' is a quoted word; i' (in) must not merge with i
    assert tokenize("'Signior Martino,' quoth he; o' the moon, i' faith, ’twas so") == [
        "signior", "martino", "quoth", "he", "o'", "the", "moon", "i'", "faith", "'twas", "so"]
    assert tokenize("the soldiers' swords") == ["the", "soldiers", "swords"]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_tokenize_is_stable_on_its_own_output(text):
    words = tokenize(text)
    assert tokenize(" ".join(words)) == words


def test_split_sentences_at_sentence_punctuation():
    assert split_sentences("Who's there? Nay, answer me: stand. ...") == [
        "Who's there", "Nay, answer me", "stand"]


def test_encode_maps_unknown_words_to_oov_and_adds_markers():
    vocab = WordVocabulary(WORDS)
    ids = vocab.encode("The lord of 'tis", bos=True, eos=True)
    assert ids.dtype == np.int64
    assert ids.tolist() == [BOS, 4, 5, OOV, 6, EOS]
    assert vocab.decode(ids) == ["<s>", "the", "lord", "<unk>", "'tis", "</s>"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(WORDS[4:]), max_size=20))
def test_decode_inverts_encode_for_known_words(words):
    vocab = WordVocabulary(WORDS)
    assert vocab.decode(vocab.encode(" ".join(words))) == words


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet="ab \n", max_size=50))
def test_char_vocabulary_round_trips_its_alphabet_and_marks_unknowns(text):
    vocab = CharVocabulary(CHARS)
    assert vocab.decode(vocab.encode(text)) == text.replace("\n", "\ufffd")


def test_decode_rejects_ids_outside_the_vocabulary():
    for vocab in (WordVocabulary(WORDS), CharVocabulary(CHARS)):
        with pytest.raises(VocabularyError, match="ids"):
            vocab.decode([len(vocab)])
        with pytest.raises(VocabularyError, match="ids"):
            vocab.decode([-1])


def test_save_and_load_round_trip(tmp_path):
    for vocab in (WordVocabulary(WORDS), CharVocabulary(CHARS)):
        path = vocab.save(tmp_path / f"{vocab.kind}.json")
        loaded = load_vocabulary(path)
        assert type(loaded) is type(vocab) and loaded == vocab
        assert type(vocab).load(path) == vocab


def test_loading_one_kind_as_the_other_fails(tmp_path):
    path = CharVocabulary(CHARS).save(tmp_path / "v.json")
    with pytest.raises(VocabularyError, match="'char' vocabulary, not a 'word'"):
        WordVocabulary.load(path)


WORD_DOC = {"kind": "word", "tokenizer": "word-v1", "tokens": WORDS}


@pytest.mark.parametrize("doc, message", [
    ([], "JSON object"),
    ({"kind": "bpe", "tokens": ["a"]}, "unknown vocabulary kind"),
    ({"tokens": WORDS}, "unknown vocabulary kind None"),
    ({"kind": "word", "tokens": WORDS}, "exactly the keys"),
    (WORD_DOC | {"extra": 1}, "exactly the keys"),
    (WORD_DOC | {"tokenizer": "word-v0"}, "rebuild the bundle"),
    (WORD_DOC | {"tokens": "abc"}, "list of strings"),
    (WORD_DOC | {"tokens": WORDS + [7]}, "strings"),
    (WORD_DOC | {"tokens": ["a", "b"]}, "starts with"),
    (WORD_DOC | {"tokens": WORDS[:4]}, "at least one token"),
    (WORD_DOC | {"tokens": WORDS + ["the"]}, "repeated: \\['the'\\]"),
    (WORD_DOC | {"tokens": WORDS + ["Two words"]}, "not single word-v1 tokens"),
    ({"kind": "char", "tokens": ["<pad>", "<unk>", "ab"]}, "single characters"),
])
def test_load_rejects_bad_documents_with_a_clear_error(tmp_path, doc, message):
    path = tmp_path / "v.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(VocabularyError, match=message):
        load_vocabulary(path)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe{}", None])
def test_load_rejects_unreadable_files(tmp_path, content):
    path = tmp_path / "v.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VocabularyError, match="cannot read the vocabulary"):
        load_vocabulary(path)


def test_vocabulary_error_is_a_bundle_error_and_a_value_error():
    assert issubclass(VocabularyError, BundleError) and issubclass(VocabularyError, ValueError)
