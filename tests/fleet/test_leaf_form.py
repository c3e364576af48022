"""LEAF's next-character metric: one prediction per position, with the full window before it."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.vocabulary import load_vocabulary
from fleet.data import build_task_bundle, leaf_form_sample, task_data
from fleet.run import leaf_form, ngram_predictor
from model_zoo.data.shakespeare import load_users, role_text


@pytest.fixture(scope="module")
def char_bundle(tmp_path_factory):
    return build_task_bundle(
        "shakespeare_char_tiny", tmp_path_factory.mktemp("b") / "b", 10_000
    )  # every character


def test_each_sampled_position_scores_only_the_character_after_a_full_window(char_bundle):
    sample = leaf_form_sample(char_bundle, 300, seed=3)
    assert len(sample) == 300
    vocab = load_vocabulary(char_bundle.vocabulary_path())
    assert len(vocab) < 256  # ids fit a byte: compare id sequences as byte strings
    held_out = [
        vocab.encode(role_text(u.split()[1])).astype(np.uint8).tobytes() for u in load_users()
    ]
    for ex in sample[:25]:
        assert ex["chars"].shape == (80,) and np.count_nonzero(ex["targets"]) == 1
        ids = np.append(ex["chars"], ex["targets"][-1]).astype(np.uint8).tobytes()
        assert any(ids in role for role in held_out)  # 81 consecutive held-out characters
    assert (
        leaf_form_sample(char_bundle, 300, seed=3)[7]["chars"].tolist()
        == sample[7]["chars"].tolist()
    )  # a fixed sample per seed


def test_the_metric_counts_one_target_per_position(char_bundle):
    data = task_data(char_bundle, 10)
    params = char_bundle.initial_parameters()
    result = leaf_form(char_bundle, params, ngram_predictor(data), seed=0, count=200)
    assert result["positions"] == 200
    assert result["federated"]["count"] == 200 and result["5-gram"]["count"] == 200
    assert result["5-gram"]["accuracy"] > 0.3  # a trained 5-gram predicts most characters
    assert result["federated"]["accuracy"] < result["5-gram"]["accuracy"]  # untrained model
