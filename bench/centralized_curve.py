"""Centralized learning curve on the simulator's Shakespeare split: the ceiling a federated
run is compared with. Trains a zoo model on every training example (reshuffled each epoch)
through the same ONNX train step devices use, and prints held-out recall after each epoch.

    python -m bench.centralized_curve --model shakespeare_char --epochs 8 --batch-size 10

`--config FILE` takes the model, vocabulary, split and pre-trained start of a simulation
config instead: `--config examples/configs/keyboard_demo.json` is the demo's centralized
ceiling from its pre-trained start, on the federated users only (`--out DIR` keeps the
pre-training cache there).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="keyboard_cifg")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--vocabulary-size", type=int, default=10000)
    parser.add_argument(
        "--eval-examples",
        type=int,
        default=3000,
        help="held-out sample (the simulator's eval_examples); 0: all",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="a simulation config: its model, data, vocabulary and pretrain",
    )
    parser.add_argument("--out", default=None, help="keep the bundle (and pre-training) here")
    args = parser.parse_args(argv)
    from fleet.baselines import centralized
    from fleet.config import SimulationConfig
    from fleet.data import prepare
    from fleet.run import ngram_predictor

    if args.config:
        config = SimulationConfig.from_json(args.config)
        config = SimulationConfig.from_dict(
            config.to_json() | {"eval_examples": args.eval_examples or 10**9}, "config"
        )
    else:
        config = SimulationConfig(
            model=args.model,
            vocabulary_size=args.vocabulary_size,
            eval_examples=args.eval_examples or 10**9,
        )
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare(config, Path(args.out or tmp) / "bundle")
        bundle = data.bundle
        test = data.test if args.eval_examples else data.test_all
        ngram = ngram_predictor(data)
        print(
            f"{config.model}: {len(data.train_all)} training {data.unit}, {len(test)} held-out; "
            f"{ngram.order}-gram top-1 {100 * ngram.recall(test)['accuracy']:.2f}%",
            flush=True,
        )
        t0, rows = time.perf_counter(), []

        def report(epoch: int, m: dict) -> None:
            rows.append(
                {
                    "epoch": epoch,
                    "seconds": round(time.perf_counter() - t0),
                    "accuracy": m["accuracy"],
                    "top3_accuracy": m["top3_accuracy"],
                    "mean_loss": m["mean_loss"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)

        if config.pretrain is not None:  # epoch 0: the pre-trained start
            from edge_sdk.evaluator import Evaluator

            report(0, Evaluator(bundle).evaluate(bundle.initial_parameters(), test))
        centralized(
            bundle,
            data.train_all,
            test,
            args.epochs,
            {"batch_size": args.batch_size, "lr": args.lr},
            seed=0,
            on_epoch=report,
        )
    return rows


if __name__ == "__main__":
    main()
