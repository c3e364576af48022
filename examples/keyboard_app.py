"""Embedding the SDK the way a keyboard app would: log what the user commits, train in
the background only while the phone is eligible (charging, idle, on Wi-Fi), and show
next-word suggestions from the current model. Only names of `edge_sdk.__all__` are used.

With a server, the phone joins federated training (docs/app-developer.md); in a second
terminal beside `python -m examples.run_aggregator`:

    python -m examples.keyboard_app --server http://127.0.0.1:8750 --secret SECRET \\
        [--bundle out/aggregator/bundles/keyboard_cifg] [--nights 3]

Without one, it trains on its own examples only (personalization):

    python -m examples.keyboard_app --out out/keyboard_app [--user hamlet/HAMLET]
    python -m examples.keyboard_app --data my_messages.jsonl [--user ID] [--vocabulary-size N]

--data is the text the user types: JSON lines {"user": ..., "text": ...} or a directory
with one file per user (docs/own-data.md); the user (by default the one with the most
messages) types the first 80% of their messages. Offline, the vocabulary comes from the
text's training split; with a server, from the task's bundle.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime
from pathlib import Path

import numpy as np

from edge_sdk import (
    Bundle,
    ClientConfig,
    Connection,
    Constant,
    Context,
    DeviceState,
    Evaluator,
    ExampleStore,
    FakeClock,
    LocalTrainer,
    MinLocalExamples,
    Participation,
    ParticipationResult,
    Policy,
    Predictor,
    RequireCharging,
    RequireIdle,
    RequireUnmetered,
    SystemClock,
    TrainingPlan,
    connect,
    load_vocabulary,
    split_sentences,
    stop_check,
)


class KeyboardApp:
    COLLECTION = "typed"
    MAX_TOKENS = 21

    def __init__(self, bundle: Bundle, data_dir: Path, clock, min_examples: int = 50):
        self.bundle, self.clock = bundle, clock
        self.vocab = load_vocabulary(bundle.vocabulary_path())
        self.store = ExampleStore(data_dir / "examples.db", clock=clock)
        self.policy = Policy(
            (RequireCharging(), RequireIdle(), RequireUnmetered(), MinLocalExamples(min_examples))
        )
        self.parameters = bundle.initial_parameters()  # the model in use
        self.predictor = Predictor(bundle, self.parameters)
        self.trainer: LocalTrainer | None = None  # personalization only
        self.version = 0

    def on_text_committed(self, text: str) -> None:
        """Called when the user sends a message: tokenized on the device, kept on it."""
        for sentence in split_sentences(text):
            ids = self.vocab.encode(sentence, bos=True, eos=True)[: self.MAX_TOKENS]
            if len(ids) >= 3:
                self.store.add(self.COLLECTION, {"tokens": ids[:-1], "targets": ids[1:]})

    def suggestions(self, typed: str) -> list[str]:
        return [w for w, _ in self.predictor.suggest_next_words(typed)]

    # -- with a server: federated training ---------------------------------------------------
    async def on_background_slot_federated(
        self, server: Connection, device_state, task_id: str | None = None
    ) -> str:
        """The OS gave us background time: take part if eligible (the client re-checks
        between batches), then show the newest global model's suggestions."""
        client = server.client(
            self.bundle,
            ClientConfig(collection=self.COLLECTION, policy=self.policy, clock=self.clock),
        )
        result = await client.participate(device_state, task_id)
        if result.outcome in (Participation.ACCEPTED, Participation.DUPLICATE):
            version, params = await server.current_model(self.bundle, result.task_id)
            if self.predictor.update(params, version):  # atomic swap; never to an older one
                self.parameters = params
        return describe(result)

    # -- without one: personalization --------------------------------------------------------
    def on_background_slot(self, device_state) -> str:
        """The OS gave us background time: train if eligible; re-check between batches."""

        def context():
            return Context(self.clock.now(), self.store.count(self.COLLECTION))

        decision = self.policy.decide(device_state(), context())
        if not decision.allowed:
            return "skipped: " + ", ".join(decision.reasons)
        if self.trainer is None:
            self.trainer = LocalTrainer(self.bundle, clock=self.clock)
        rng = np.random.default_rng(self.version)
        result = self.trainer.train(
            lambda epoch: self.store.iter_examples(self.COLLECTION, shuffle_rng=rng),
            TrainingPlan(epochs=2, batch_size=16, schedule=Constant(1.0)),
            stop_check=stop_check(self.policy, device_state, context),
        )
        if result.status != "completed":
            return f"stopped early ({result.stop_reason}); the model in use is unchanged"
        self.version += 1
        self.parameters = self.trainer.parameters()
        self.predictor.update(self.parameters, self.version)  # atomic swap
        return (
            f"trained {result.steps} steps on {result.examples} examples -> model v{self.version}"
        )


def describe(result: ParticipationResult) -> str:
    """One line for a participation's outcome."""
    outcome = result.outcome
    if outcome in (Participation.ACCEPTED, Participation.DUPLICATE):
        return (
            f"{outcome.name}: trained v{result.model_version} of {result.task_id} on "
            f"{result.examples} examples, sent {result.bytes_up} bytes"
        )
    if outcome is Participation.COME_BACK_LATER:
        return f"{outcome.name}: no work for this phone now"
    if outcome is Participation.EVALUATED:
        return f"{outcome.name}: scored v{result.model_version} on {result.examples} examples"
    return f"{outcome.name}: {result.reason}"


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


async def _join(app: KeyboardApp, args) -> None:
    async with connect(args.server, args.population, args.secret, app.store) as server:
        print(
            f"device {server.device_id} "
            f"({'enrolled now' if server.enrolled_now else 'enrolled before'})"
        )
        print(
            "afternoon, in use:",
            await app.on_background_slot_federated(server, lambda: _state(False), args.task),
        )
        for night in range(args.nights):
            print(
                f"night {night + 1}, charging:",
                await app.on_background_slot_federated(server, lambda: _state(True), args.task),
            )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/keyboard_app", help="the phone's storage")
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
    parser.add_argument(
        "--min-examples", type=int, default=50, help="sentences the phone needs before it trains"
    )
    joining = parser.add_argument_group("joining a server")
    joining.add_argument("--server", help="the aggregator's URL: join federated training")
    joining.add_argument("--population", default="keyboard")
    joining.add_argument("--secret", help="the population's enrollment secret")
    joining.add_argument(
        "--bundle",
        default="out/aggregator/bundles/keyboard_cifg",
        help="the task's bundle (shipped with the app)",
    )
    joining.add_argument("--task", help="join only this task (default: any)")
    joining.add_argument("--nights", type=int, default=3)
    args = parser.parse_args(argv)
    if args.server and not args.secret:
        parser.error("--server needs --secret (run_aggregator prints it)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset, bundle = _typing_data(args, parser, out)
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
    app = KeyboardApp(bundle, out, SystemClock() if args.server else FakeClock(), args.min_examples)
    app.store.wipe_collection(app.COLLECTION)  # a new day of typing (the identity stays)
    for line in train_lines:  # the user types through the day
        app.on_text_committed(line)
    print(f"{app.store.count(app.COLLECTION)} sentences logged on the device")
    if args.server:
        asyncio.run(_join(app, args))
    else:
        print("afternoon, in use:", app.on_background_slot(lambda: _state(False)))
        for night in range(args.nights):
            print(f"night {night + 1}, charging:", app.on_background_slot(lambda: _state(True)))
    held = [
        {"tokens": ids[:-1], "targets": ids[1:]}
        for s in split_sentences(" ".join(test_lines))
        if len(ids := app.vocab.encode(s, bos=True, eos=True)[: app.MAX_TOKENS]) >= 3
    ]
    if held:
        metrics = Evaluator(bundle).evaluate(app.parameters, held)
        print(
            f"held-out next-word recall of model v{app.predictor.version}: "
            f"top-1 {metrics['accuracy']:.1%}, top-3 {metrics['top3_accuracy']:.1%}"
        )
    prompts = args.prompt or (
        ["my lord", "what is the"]
        if shakespeare
        else [" ".join(t.split()[:2]) for t in test_lines[:2]]
    )
    for typed in prompts:
        print(f"after {typed!r} the keyboard suggests {app.suggestions(typed)}")
    app.store.close()


def _typing_data(args, parser, out: Path):
    """The text the user types (the simulator's readers stand in for a real user) and
    the bundle: the task's with a server, else one built with the text's vocabulary."""
    from fleet.config import SimulationConfig
    from fleet.data import open_dataset
    from fleet.datasets import spec_from_argument

    config = SimulationConfig(
        model="keyboard_cifg",
        data=spec_from_argument(args.data),
        vocabulary_size=args.vocabulary_size,
    )
    dataset = open_dataset(config)
    if dataset.task().kind != "next_word":
        parser.error(f"--data {args.data}: the keyboard needs text (JSON lines or a directory)")
    if args.server:
        return dataset, Bundle.load(args.bundle)
    from fleet.models import build_model_bundle

    return dataset, build_model_bundle(config, dataset.task(), out / "bundle")


if __name__ == "__main__":
    main()
