"""Zoo models build and train for any vocabulary size and sequence length they are given:
through the zoo API (build_bundle) and through a simulation config's vocabulary_size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model_zoo.zoo import ZOO, build_bundle

from ..fleet.small_fleet import small_fleet, sync_task
from .bundle_runner import OrtTrainer, assert_steps_match, torch_step

# (model, vocabulary size, sequence length): vocabularies far under the sample batch's old
# fixed 10,000 ids (which crashed the build) and lengths on both sides of the defaults
SIZES = [
    ("keyboard_cifg", 50, 20),
    ("keyboard_cifg_tiny", 300, 7),
    ("keyboard_cifg_tiny", 2, 33),
    ("shakespeare_char", 30, 12),
    ("shakespeare_char_tiny", 50, 80),
    ("shakespeare_char_tiny", 3, 1),
]


@pytest.mark.parametrize("name, vocab, seq", SIZES)
def test_build_bundle_sizes_the_model_and_trains_as_pytorch_does(name, vocab, seq, tmp_path):
    entry = ZOO[name]
    bundle = build_bundle(name, tmp_path / "b", vocabulary_size=vocab, sequence_length=seq, seed=4)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["num_classes"] == vocab
    torch.manual_seed(4)
    model = entry.model(vocab, seq)  # the same initial parameters as the bundle's
    trainer = OrtTrainer(bundle)
    for pname, p in model.named_parameters():
        np.testing.assert_array_equal(trainer.params[pname], p.detach().numpy())
    optimizer = entry.optimizer(model.parameters())
    gen = torch.Generator().manual_seed(5)
    for size in (4, 1, 3):
        batch = entry.batch(size, gen, vocab, seq)
        assert batch["targets"].shape == (size, seq)
        assert int(batch["targets"].max()) < vocab
        outs = trainer.step({k: v.numpy() for k, v in batch.items()}, lr=1.0)
        expected = torch_step(model, optimizer, entry.loss(), batch, entry.clip_grad_norm)
        np.testing.assert_allclose(outs["loss"], expected, rtol=1e-4)
    for pname, p in model.named_parameters():
        np.testing.assert_allclose(trainer.params[pname], p.detach().numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "name, vocab, seq", [("keyboard_cifg_tiny", 50, 9), ("shakespeare_char_tiny", 20, 30)]
)
def test_small_vocabularies_equal_pytorch_over_20_adam_steps(name, vocab, seq, tmp_path):
    entry = ZOO[name]
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(2)
    batches = [entry.batch(size, gen, vocab, seq) for size in (5, 1, 2)]
    assert_steps_match(
        entry.model(vocab, seq),
        lambda p: torch.optim.Adam(p, lr=1e-2),
        entry.loss(),
        batches,
        tmp_path / "b",
    )


def test_a_given_vocabulary_sizes_the_model(tmp_path):
    from model_zoo.vocabulary_builder import build_word_vocabulary

    vocab = build_word_vocabulary(["the cat sat on the mat", "a dog ran"], 9)
    bundle = build_bundle("keyboard_cifg", tmp_path / "b", vocabulary=vocab)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["num_classes"] == len(vocab) == 9
    assert (bundle / "vocabulary.json").exists()
    with pytest.raises(ValueError, match="differs from the given vocabulary"):
        build_bundle("keyboard_cifg", tmp_path / "c", vocabulary=vocab, vocabulary_size=50)


@pytest.mark.parametrize(
    "sizes, message",
    [
        ({"vocabulary_size": 1}, "vocabulary_size must be an int >= 2"),
        ({"vocabulary_size": 30.0}, "vocabulary_size must be an int"),
        ({"sequence_length": 0}, "sequence_length must be an int >= 1"),
    ],
)
def test_sizes_out_of_range_are_refused_with_the_rule(sizes, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        build_bundle("keyboard_cifg_tiny", tmp_path / "b", **sizes)


def test_models_without_tokens_refuse_token_sizes(tmp_path):
    with pytest.raises(ValueError, match="reads no tokens"):
        build_bundle("mlp", tmp_path / "b", vocabulary_size=50)
    with pytest.raises(ValueError, match="reads no tokens"):
        ZOO["femnist_cnn_tiny"].batch(2, torch.Generator(), sequence_length=5)
    assert ZOO["femnist_cnn_tiny"].batch(2, torch.Generator())["x"].shape == (2, 1, 28, 28)


def test_defaults_are_the_entries_sizes():
    gen = torch.Generator().manual_seed(0)
    batch = ZOO["keyboard_cifg"].batch(3, gen)
    assert batch["tokens"].shape == (3, 20)
    model = ZOO["keyboard_cifg"].model()
    assert model.embedding.num_embeddings == 10000
    assert ZOO["shakespeare_char_tiny"].model(33).embedding.num_embeddings == 33


@pytest.mark.parametrize(
    "model, vocab, seq",
    [
        ("keyboard_cifg_tiny", 50, None),
        ("keyboard_cifg", 300, 8),
        ("keyboard_transformer_tiny", 80, 16),
    ],
)
def test_a_simulation_trains_a_model_sized_by_its_config(model, vocab, seq, tmp_path):
    """keyboard_transformer_tiny needs the compiler's general path (issue 19): skipped
    while the compiler refuses it."""
    from edge_sdk.vocabulary import load_vocabulary
    from fleet.run import run
    from model_zoo.compiler import UnsupportedError

    plan = {"epochs": 1, "batch_size": 8, "lr": 1.0, "max_steps": 20}
    config = small_fleet(
        12,
        goal=4,
        versions=2,
        model=model,
        vocabulary_size=vocab,
        sequence_length=seq,
        task=sync_task(goal=4) | {"plan": plan},
        eval_examples=40,
    )
    try:
        report = run(config, tmp_path, centralized_epochs=0, show_progress=False)
    except UnsupportedError as refused:
        pytest.skip(f"the compiler does not take {model} yet: {refused}")
    assert report["versions"] == 2
    assert np.isfinite(report["final"]["mean_loss"])
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert (
        manifest["num_classes"]
        == len(load_vocabulary(tmp_path / "bundle" / "vocabulary.json"))
        == vocab
    )


def test_the_fleets_char_task_takes_a_vocabulary_size_and_window(tmp_path):
    """The simulator's path for characters without its final figures (the 5-gram over the
    whole split alone takes half a minute): bundle and examples sized by the config's
    settings, a device's training on them."""
    from edge_sdk.schedules import Constant
    from edge_sdk.trainer import LocalTrainer, TrainingPlan
    from fleet.config import SimulationConfig
    from fleet.data import prepare

    data = prepare(
        SimulationConfig(
            model="shakespeare_char_tiny",
            vocabulary_size=30,
            sequence_length=24,
            seed=1,
            eval_examples=40,
        ),
        tmp_path / "b",
    )
    bundle = data.bundle
    assert bundle.manifest["num_classes"] == 30
    assert max(len(e["chars"]) for e in data.train_all) == 24
    assert max(int(max(e["targets"])) for e in data.train_all) < 30
    trainer = LocalTrainer(bundle)
    examples = data.train_all[:64]
    first = trainer.train(
        lambda epoch: examples, TrainingPlan(batch_size=8, max_steps=8, schedule=Constant(1.0))
    )
    later = trainer.train(
        lambda epoch: examples, TrainingPlan(epochs=3, batch_size=8, schedule=Constant(1.0))
    )
    assert first.steps == 8 and later.metrics["mean_loss"] < first.metrics["mean_loss"]


def test_a_simulation_config_refuses_sizes_out_of_range():
    from fleet.config import SimulationConfig

    with pytest.raises(ValueError, match="above the vocabulary's special tokens"):
        SimulationConfig(model="keyboard_cifg_tiny", vocabulary_size=2)
    with pytest.raises(ValueError, match="sequence_length: must be an int >= 2"):
        SimulationConfig(model="keyboard_cifg_tiny", sequence_length=0)
    assert SimulationConfig(model="shakespeare_char_tiny", vocabulary_size=3).vocabulary_size == 3
