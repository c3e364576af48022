from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.clock import FakeClock
from edge_sdk.errors import BundleError
from edge_sdk.evaluator import Evaluator
from edge_sdk.schedules import Constant, Cosine, InverseSqrt
from edge_sdk.trainer import LocalTrainer, TrainingPlan

from ..model_zoo.bundle_runner import OrtTrainer


def _lm_examples(n, seed=0, vocab=500):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(1, vocab, size=rng.integers(3, 15))
        out.append({"tokens": ids[:-1], "targets": ids[1:]})
    return out


class MemoryState:
    def __init__(self):
        self.data = {}

    def put_state(self, key, value):
        self.data[key] = value

    def get_state(self, key):
        return self.data.get(key)

    def delete_state(self, key):
        self.data.pop(key, None)


def test_trainer_equals_the_bundle_train_step_on_the_same_batches(mlp_bundle):
    bundle = Bundle.load(mlp_bundle)
    rng = np.random.default_rng(0)
    examples = [
        {"x": rng.normal(size=30).astype(np.float32), "targets": np.int64(rng.integers(2))}
        for _ in range(50)
    ]
    trainer = LocalTrainer(bundle)
    result = trainer.train(
        lambda epoch: examples, TrainingPlan(epochs=2, batch_size=8, schedule=Constant(0.01))
    )
    assert result.status == "completed" and result.steps == 14 and result.examples == 100
    reference = OrtTrainer(mlp_bundle)
    for _ in range(2):
        for i in range(0, 50, 8):
            chunk = examples[i : i + 8]
            reference.step(
                {
                    "x": np.stack([e["x"] for e in chunk]),
                    "targets": np.array([e["targets"] for e in chunk]),
                },
                lr=0.01,
            )
    for name, value in trainer.parameters().items():
        np.testing.assert_array_equal(value, reference.params[name])


def test_delta_is_local_minus_global(tiny_keyboard_bundle):
    bundle = Bundle.load(tiny_keyboard_bundle)
    start = bundle.initial_parameters()
    trainer = LocalTrainer(bundle, start)
    trainer.train(lambda e: _lm_examples(20), TrainingPlan(batch_size=4, schedule=Constant(0.5)))
    delta = trainer.delta(start)
    local = trainer.parameters()
    for name in start:
        np.testing.assert_array_equal(delta[name], local[name] - start[name])
    assert sum(float(np.abs(d).sum()) for d in delta.values()) > 0


def test_training_improves_held_out_metrics_on_a_learnable_pattern(tiny_keyboard_bundle):
    bundle = Bundle.load(tiny_keyboard_bundle)
    # a cyclic language: every word has one successor
    cycle = np.array([10, 20, 30, 40, 50, 60])

    def sentence(start, length):
        ids = cycle[(start + np.arange(length + 1)) % len(cycle)]
        return {"tokens": ids[:-1], "targets": ids[1:]}

    examples = [sentence(s, 6 + s % 5) for s in range(40)]
    held_out = [sentence(s, 9) for s in range(6)]
    trainer = LocalTrainer(bundle)
    evaluator = Evaluator(bundle)
    before = evaluator.evaluate(trainer.parameters(), held_out)
    trainer.train(
        lambda e: examples, TrainingPlan(epochs=60, batch_size=8, seed=1, schedule=Constant(1.0))
    )
    after = evaluator.evaluate(trainer.parameters(), held_out)
    assert after["mean_loss"] < before["mean_loss"] * 0.5
    assert before["accuracy"] < 0.2 and after["accuracy"] > 0.9


def test_stop_check_aborts_between_batches_with_its_reason(tiny_keyboard_bundle):
    bundle = Bundle.load(tiny_keyboard_bundle)
    trainer = LocalTrainer(bundle)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return "charging_lost" if calls["n"] > 3 else None

    result = trainer.train(lambda e: _lm_examples(64), TrainingPlan(batch_size=4), stop_check=stop)
    assert result.status == "stopped" and result.stop_reason == "charging_lost"
    assert result.steps == 3 and not result.uploadable


def test_wall_clock_budget_ends_training_with_a_usable_model(tiny_keyboard_bundle):
    bundle = Bundle.load(tiny_keyboard_bundle)
    clock = FakeClock()
    trainer = LocalTrainer(bundle, clock=clock)

    def examples(epoch):
        for e in _lm_examples(64):
            clock.advance(1.0)
            yield e

    result = trainer.train(examples, TrainingPlan(batch_size=4, time_budget_s=10))
    assert result.status == "budget" and result.uploadable and result.examples <= 12


def test_max_steps_caps_training(tiny_keyboard_bundle):
    trainer = LocalTrainer(Bundle.load(tiny_keyboard_bundle))
    result = trainer.train(
        lambda e: _lm_examples(100), TrainingPlan(epochs=3, batch_size=4, max_steps=5)
    )
    assert result.status == "completed" and result.steps == 5


def test_interrupted_training_resumes_from_its_checkpoint(tiny_keyboard_bundle):
    bundle = Bundle.load(tiny_keyboard_bundle)
    examples = _lm_examples(40, seed=3)
    plan = TrainingPlan(epochs=2, batch_size=4, checkpoint_every=2, schedule=Constant(0.3))
    uninterrupted = LocalTrainer(bundle)
    whole = uninterrupted.train(lambda e: examples, plan)

    state = MemoryState()
    calls = {"n": 0}

    def app_killed():
        calls["n"] += 1
        return "app_killed" if calls["n"] == 13 else None

    first = LocalTrainer(bundle)
    stopped = first.train(lambda e: examples, plan, stop_check=app_killed, checkpoints=state)
    assert stopped.status == "stopped" and state.get_state("trainer.checkpoint") is not None
    # a new process: a fresh trainer from the same global parameters resumes
    second = LocalTrainer(bundle)
    resumed = second.train(lambda e: examples, plan, checkpoints=state)
    assert resumed.status == "completed" and resumed.steps == whole.steps
    assert resumed.examples == whole.examples
    for name, value in second.parameters().items():
        np.testing.assert_allclose(value, uninterrupted.parameters()[name], rtol=1e-6, atol=1e-7)
    assert state.get_state("trainer.checkpoint") is None  # consumed when complete


def test_a_checkpoint_of_another_plan_is_discarded(tiny_keyboard_bundle):
    bundle = Bundle.load(tiny_keyboard_bundle)
    state = MemoryState()
    plan = TrainingPlan(batch_size=4, checkpoint_every=1)
    LocalTrainer(bundle).train(
        lambda e: _lm_examples(20),
        plan,
        stop_check=iter([None, None, "x"]).__next__,
        checkpoints=state,
    )
    assert state.get_state("trainer.checkpoint") is not None
    other = TrainingPlan(batch_size=8, checkpoint_every=1)
    result = LocalTrainer(bundle).train(lambda e: _lm_examples(20), other, checkpoints=state)
    assert result.steps == 3  # started over: 20 examples / 8


def test_a_corrupt_checkpoint_is_discarded_with_a_clear_error(tiny_keyboard_bundle):
    state = MemoryState()
    state.put_state("trainer.checkpoint", b"not a checkpoint")
    trainer = LocalTrainer(Bundle.load(tiny_keyboard_bundle))
    with pytest.raises(BundleError, match="unreadable"):
        trainer.train(
            lambda e: _lm_examples(8), TrainingPlan(checkpoint_every=1), checkpoints=state
        )
    assert state.get_state("trainer.checkpoint") is None


def test_plans_validate_when_built():
    with pytest.raises(ValueError, match="batch_size"):
        TrainingPlan(batch_size=0)
    with pytest.raises(ValueError, match="learning rate"):
        Constant(0.0)


def test_bundle_load_rejects_a_bad_directory(tmp_path):
    with pytest.raises(BundleError, match="manifest.json is missing"):
        Bundle.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.load(tmp_path)


def test_schedules_follow_their_formulas():
    assert Constant(0.5)(1000) == 0.5
    cos = Cosine(1.0, 100, floor=0.1)
    assert cos(0) == 1.0 and abs(cos(100) - 0.1) < 1e-12 and abs(cos(50) - 0.55) < 1e-12
    inv = InverseSqrt(1.0, warmup=4)
    assert inv(0) == 1.0 and inv(3) == 1.0 and abs(inv(15) - 0.5) < 1e-12
