from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.batching import PAD_MULTIPLE, collate, iter_batches
from edge_sdk.bundle import Bundle
from edge_sdk.errors import BundleError


def test_sequences_are_right_padded_to_a_multiple_with_ignored_targets(tiny_keyboard_bundle):
    bundle = Bundle.load(tiny_keyboard_bundle)
    batch = collate(
        bundle,
        [
            {"tokens": np.array([5, 6, 7]), "targets": np.array([6, 7, 8])},
            {"tokens": np.array([9]), "targets": np.array([10])},
        ],
    )
    assert batch["tokens"].shape == (2, PAD_MULTIPLE) and batch["tokens"].dtype == np.int64
    assert batch["tokens"][0, :3].tolist() == [5, 6, 7] and batch["tokens"][1, 1:].sum() == 0
    assert (batch["targets"][1, 1:] == bundle.ignore_index).all()


def test_fixed_shape_inputs_are_stacked_and_cast(mlp_bundle):
    bundle = Bundle.load(mlp_bundle)
    examples = [{"x": np.ones(30), "targets": np.int64(1)} for _ in range(5)]
    batches = list(iter_batches(bundle, iter(examples), 2))
    assert [n for _, n in batches] == [2, 2, 1]
    assert batches[0][0]["x"].shape == (2, 30) and batches[0][0]["x"].dtype == np.float32
    with pytest.raises(BundleError, match="differ in shape"):
        collate(bundle, [{"x": np.ones(30), "targets": 0}, {"x": np.ones(29), "targets": 0}])
    with pytest.raises(BundleError, match="lacks 'x'"):
        collate(bundle, [{"targets": 0}])
