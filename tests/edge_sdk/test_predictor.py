from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.predictor import Predictor
from edge_sdk.schedules import Constant
from edge_sdk.trainer import LocalTrainer, TrainingPlan


@pytest.fixture(scope="module")
def trained_keyboard(tmp_path_factory):
    """The tiny keyboard model trained for two epochs on four tragedies' training lines."""
    from model_zoo.compiler import Adam
    from model_zoo.data.shakespeare import load_users, word_examples
    from model_zoo.vocabulary_builder import build_word_vocabulary
    from model_zoo.zoo import build_bundle

    users = [u for u in load_users() if u.play in ("hamlet", "macbeth", "othello", "king-lear")]
    train_lines = [line for u in users for line in u.split()[0]]
    test_lines = [line for u in users for line in u.split()[1]]
    vocab = build_word_vocabulary(train_lines, 500)
    bundle = Bundle.load(
        build_bundle(
            "keyboard_cifg_tiny",
            tmp_path_factory.mktemp("kb") / "b",
            vocabulary=vocab,
            optimizer=Adam(lr=1e-2),
        )
    )
    train = word_examples(vocab, train_lines)
    trainer = LocalTrainer(bundle)
    trainer.train(lambda e: train, TrainingPlan(epochs=2, batch_size=32, schedule=Constant(1e-2)))
    return bundle, trainer.parameters(), train, test_lines


def test_suggestions_beat_the_unigram_baseline_on_held_out_text(trained_keyboard):
    bundle, params, train, test_lines = trained_keyboard
    predictor = Predictor(bundle)
    predictor.update(params, version=1)
    vocab = predictor.vocabulary
    counts = Counter(int(t) for e in train for t in e["targets"] if vocab.is_word(int(t)))
    unigram = {vocab.words[w] for w, _ in counts.most_common(3)}
    model_hits = unigram_hits = total = 0
    for line in test_lines[:150]:
        words = [vocab.words[i] for i in vocab.encode(line)]
        for cut in range(1, len(words)):
            target = words[cut]
            if target == "<unk>":
                continue
            suggestions = [w for w, _ in predictor.suggest_next_words(" ".join(words[:cut]))]
            assert len(suggestions) == 3 and all(vocab.is_word(vocab._ids[w]) for w in suggestions)
            total += 1
            model_hits += target in suggestions
            unigram_hits += target in unigram
    assert total > 300
    assert model_hits / total > unigram_hits / total + 0.02


def test_update_swaps_versions_atomically_and_refuses_older_ones(trained_keyboard):
    bundle, params, _, _ = trained_keyboard
    predictor = Predictor(bundle)
    initial = predictor.predict({"tokens": np.array([[1, 5, 6]])})["logits"]
    assert predictor.update(params, version=3)
    assert not predictor.update(bundle.initial_parameters(), version=2)
    assert predictor.version == 3
    trained = predictor.predict({"tokens": np.array([[1, 5, 6]])})["logits"]
    assert not np.allclose(initial, trained)
    results = []

    def read():
        for _ in range(30):
            results.append(predictor.predict({"tokens": np.array([[1, 5, 6]])})["logits"])

    reader = threading.Thread(target=read)
    reader.start()
    predictor.update(bundle.initial_parameters(), version=4)
    reader.join()
    # every read saw one whole version, never a mix of two
    assert all(np.allclose(r, initial) or np.allclose(r, trained) for r in results)


def test_class_scores_for_a_classifier(mlp_bundle):
    predictor = Predictor(Bundle.load(mlp_bundle))
    out = predictor.predict({"x": np.zeros((4, 30), np.float32)})
    assert out["logits"].shape == (4, 2)
    np.testing.assert_allclose(out["top_scores"].sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(TypeError, match="word vocabulary"):
        predictor.suggest_next_words("hello")
