"""Embedding the SDK the way a keyboard app would: log what the user commits, train in
the background only while the phone is eligible (charging, idle, on Wi-Fi), and show
next-word suggestions from the current model.

    python -m examples.keyboard_app --out out/keyboard_app [--user hamlet/HAMLET]
    python -m examples.keyboard_app --data my_messages.jsonl [--user ID] [--vocabulary-size N]

--data is one's own text: JSON lines {"user": ..., "text": ...} or a directory with one
file per user (docs/own-data.md); the vocabulary comes from its training split, and the
user (by default the one with the most messages) types the first 80% of their messages.

The app here trains on its own examples (personalization); to join a federated task it
would hand the same store, bundle and policy to edge_sdk.client.FederatedClient.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.clock import FakeClock
from edge_sdk.eligibility import (
    Context,
    DeviceState,
    MinLocalExamples,
    Policy,
    RequireCharging,
    RequireIdle,
    RequireUnmetered,
    stop_check,
)
from edge_sdk.evaluator import Evaluator
from edge_sdk.example_store import ExampleStore
from edge_sdk.predictor import Predictor
from edge_sdk.schedules import Constant
from edge_sdk.trainer import LocalTrainer, TrainingPlan
from edge_sdk.vocabulary import load_vocabulary, split_sentences


class KeyboardApp:
    COLLECTION = "typed"

    def __init__(self, bundle: Bundle, data_dir: Path, clock):
        self.bundle, self.clock = bundle, clock
        self.vocab = load_vocabulary(bundle.vocabulary_path())
        self.store = ExampleStore(data_dir / "examples.db", clock=clock)
        self.policy = Policy(
            (RequireCharging(), RequireIdle(), RequireUnmetered(), MinLocalExamples(50))
        )
        self.trainer = LocalTrainer(bundle, clock=clock)
        self.predictor = Predictor(bundle)
        self.version = 0

    def on_text_committed(self, text: str) -> None:
        """Called when the user sends a message: tokenized on the device, kept on it."""
        for sentence in split_sentences(text):
            ids = self.vocab.encode(sentence, bos=True, eos=True)[:21]
            if len(ids) >= 3:
                self.store.add(self.COLLECTION, {"tokens": ids[:-1], "targets": ids[1:]})

    def on_background_slot(self, device_state) -> str:
        """The OS gave us background time: train if eligible; re-check between batches."""
        context = lambda: Context(self.clock.now(), self.store.count(self.COLLECTION))  # noqa: E731
        decision = self.policy.decide(device_state(), context())
        if not decision.allowed:
            return "skipped: " + ", ".join(decision.reasons)
        rng = np.random.default_rng(self.version)
        result = self.trainer.train(
            lambda epoch: self.store.iter_examples(self.COLLECTION, shuffle_rng=rng),
            TrainingPlan(epochs=2, batch_size=16, schedule=Constant(1.0)),
            stop_check=stop_check(self.policy, device_state, context),
        )
        if result.status != "completed":
            return f"stopped early ({result.stop_reason}); the model in use is unchanged"
        self.version += 1
        self.predictor.update(self.trainer.parameters(), self.version)  # atomic swap
        return (
            f"trained {result.steps} steps on {result.examples} examples -> model v{self.version}"
        )

    def suggestions(self, typed: str) -> list[str]:
        return [w for w, _ in self.predictor.suggest_next_words(typed)]


def _state(charging: bool) -> DeviceState:
    return DeviceState(
        charging=charging,
        battery_level=0.8,
        network="unmetered",
        idle=charging,
        thermal="nominal",
        free_storage_bytes=2**32,
        local_time=datetime(2026, 1, 5, 2 if charging else 14),
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/keyboard_app")
    parser.add_argument(
        "--data", default="shakespeare", help="text: FILE.jsonl or a directory of one file per user"
    )
    parser.add_argument(
        "--user",
        help="whose messages to type (default: hamlet/HAMLET for "
        "Shakespeare, else the user with the most messages)",
    )
    parser.add_argument("--vocabulary-size", type=int, default=10000)
    parser.add_argument(
        "--prompt", action="append", help="text to ask suggestions after (repeatable)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from fleet.config import SimulationConfig
    from fleet.data import open_dataset
    from fleet.datasets import spec_from_argument
    from fleet.models import build_model_bundle

    config = SimulationConfig(
        model="keyboard_cifg",
        data=spec_from_argument(args.data),
        vocabulary_size=args.vocabulary_size,
    )
    dataset = open_dataset(config)
    if dataset.task().kind != "next_word":
        parser.error(f"--data {args.data}: the keyboard needs text (JSON lines or a directory)")
    bundle = build_model_bundle(config, dataset.task(), out / "bundle")
    (out / "examples.db").unlink(missing_ok=True)
    app = KeyboardApp(bundle, out, FakeClock())
    shakespeare = args.data == "shakespeare"
    user = args.user or (
        "hamlet/HAMLET"
        if shakespeare
        else max(dataset.users(), key=lambda u: len(dataset.texts(u, "train")))
    )
    if user not in dataset.users():
        parser.error(f"no user {user!r} in {args.data}")
    train_lines, test_lines = dataset.texts(user, "train"), dataset.texts(user, "heldout")
    print(
        f"{dataset.name}: user {user} types {len(train_lines)} messages; "
        f"{len(test_lines)} later ones are held out"
    )
    for line in train_lines:  # the user types through the day
        app.on_text_committed(line)
    print(f"{app.store.count(app.COLLECTION)} sentences logged on the device")
    print("afternoon, in use:", app.on_background_slot(lambda: _state(False)))
    for night in range(3):
        print(f"night {night + 1}, charging:", app.on_background_slot(lambda: _state(True)))
    held = [
        {"tokens": ids[:-1], "targets": ids[1:]}
        for s in split_sentences(" ".join(test_lines))
        if len(ids := app.vocab.encode(s, bos=True, eos=True)[:21]) >= 3
    ]
    metrics = Evaluator(bundle).evaluate(app.trainer.parameters(), held)
    print(
        f"held-out next-word recall: top-1 {metrics['accuracy']:.1%}, top-3 {metrics['top3_accuracy']:.1%}"
    )
    prompts = args.prompt or (
        ["my lord", "what is the"]
        if shakespeare
        else [" ".join(t.split()[:2]) for t in test_lines[:2]]
    )
    for typed in prompts:
        print(f"after {typed!r} the keyboard suggests {app.suggestions(typed)}")


if __name__ == "__main__":
    main()
