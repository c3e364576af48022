"""`make demo`: build the keyboard bundle from Shakespeare, then train it the way a phone
would — through onnxruntime, on one user's own examples — and report next-word accuracy
on that user's held-out lines against a unigram baseline.

    python -m examples.keyboard_demo --out out/demo [--user hamlet/HAMLET] [--epochs 4]
"""
from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_sdk.bundle import Bundle
from edge_sdk.evaluator import Evaluator
from edge_sdk.predictor import Predictor
from edge_sdk.schedules import Constant
from edge_sdk.trainer import LocalTrainer, TrainingPlan
from edge_sdk.vocabulary import load_vocabulary
from model_zoo.data.shakespeare import load_users, word_examples
from model_zoo.zoo import build_bundle


def unigram_accuracy(train: list[dict], test: list[dict], k: int) -> float:
    """Always suggest the k most frequent training words (the floor any model must beat)."""
    counts = Counter(int(t) for e in train for t in e["targets"])
    top = {w for w, _ in counts.most_common(k)}
    targets = np.concatenate([e["targets"] for e in test])
    return float(np.isin(targets, list(top)).mean())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo")
    parser.add_argument("--user", default="hamlet/HAMLET", help="play/ROLE whose device we are")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1.0)
    args = parser.parse_args(argv)
    out = Path(args.out)

    t0 = time.perf_counter()
    bundle_dir = build_bundle("keyboard_cifg", out / "keyboard_cifg", with_vocabulary=True)
    bundle = Bundle.load(bundle_dir)
    n_params = sum(int(np.prod(s.shape)) for s in bundle.parameter_specs)
    print(f"built keyboard_cifg ({n_params / 1e6:.2f}M parameters, model id "
          f"{bundle.model_id[:12]}) in {time.perf_counter() - t0:.1f}s -> {bundle_dir}")

    users = {u.user_id: u for u in load_users()}
    if args.user not in users:
        raise SystemExit(f"unknown user {args.user!r}; e.g. {', '.join(list(users)[:5])}")
    vocab = load_vocabulary(bundle.vocabulary_path())
    train_lines, test_lines = users[args.user].split()
    train, test = word_examples(vocab, train_lines), word_examples(vocab, test_lines)
    print(f"device of {args.user}: {len(train)} training sentences, {len(test)} held out "
          f"({len(users)} Shakespeare users in all)")

    trainer, evaluator = LocalTrainer(bundle), Evaluator(bundle)
    rng = np.random.default_rng(0)
    plan = TrainingPlan(epochs=1, batch_size=args.batch_size, schedule=Constant(args.lr))
    for epoch in range(args.epochs):
        order = rng.permutation(len(train))
        bar = tqdm(total=len(train), desc=f"epoch {epoch + 1}/{args.epochs}", unit="ex",
                   leave=False)

        def examples(_epoch):
            for i in order:
                bar.update(1)
                yield train[i]

        result = trainer.train(examples, plan)
        bar.close()
        held = evaluator.evaluate(trainer.parameters(), test)
        print(f"  epoch {epoch + 1}: train loss {result.metrics['mean_loss']:.3f} | held-out loss "
              f"{held['mean_loss']:.3f}, top-1 {held['accuracy']:.1%}, top-3 "
              f"{held['top3_accuracy']:.1%}")
    print(f"unigram baseline on the same held-out lines: top-1 {unigram_accuracy(train, test, 1):.1%}, "
          f"top-3 {unigram_accuracy(train, test, 3):.1%}")

    print("(one device's data alone barely reaches the unigram floor: that is why a fleet "
          "trains one model together)")
    predictor = Predictor(bundle)
    predictor.update(trainer.parameters(), version=1)
    for prompt in ["to be or not to", "my lord i", "what is the"]:
        words = ", ".join(f"{w} ({p:.0%})" for w, p in predictor.suggest_next_words(prompt))
        print(f"  suggestions after {prompt!r}: {words}")


if __name__ == "__main__":
    main()
