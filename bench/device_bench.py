"""A device process training the full keyboard_cifg on one Shakespeare role's data:
examples/s with 1 thread, and the process's peak RSS (target < 200 MB).

The device process imports edge_sdk only: it tokenizes the role's lines with the bundle's
vocabulary, logs them into an ExampleStore, and trains one epoch streamed from the store.

    python -m bench.device_bench [--role hamlet/HAMLET] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_DEVICE = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from bench.memory import peak_rss_mb
from edge_sdk.bundle import Bundle
from edge_sdk.example_store import ExampleStore
from edge_sdk.schedules import Constant
from edge_sdk.trainer import LocalTrainer, TrainingPlan
from edge_sdk.vocabulary import load_vocabulary, split_sentences
import numpy as np
bundle = Bundle.load({bundle!r})
vocab = load_vocabulary(bundle.vocabulary_path())
store = ExampleStore({store!r})
lines = open({lines!r}).read().splitlines()
for sentence in split_sentences(" ".join(lines)):
    ids = vocab.encode(sentence, bos=True, eos=True)[:21]
    if len(ids) >= 3:
        store.add("keyboard", {{"tokens": ids[:-1], "targets": ids[1:]}})
rss_before = peak_rss_mb()
trainer = LocalTrainer(bundle)
plan = TrainingPlan(epochs={epochs}, batch_size=16, schedule=Constant(0.5))
rng = np.random.default_rng(0)
t = time.perf_counter()
result = trainer.train(lambda e: store.iter_examples("keyboard", shuffle_rng=rng), plan)
seconds = time.perf_counter() - t
print(json.dumps({{"examples": result.examples, "steps": result.steps, "seconds": seconds,
                  "examples_per_s": result.examples / seconds, "peak_rss_mb": peak_rss_mb(),
                  "rss_before_training_mb": rss_before,
                  "torch_loaded": "torch" in sys.modules}}))
"""


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="hamlet/HAMLET")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)
    from model_zoo.data.shakespeare import load_users
    from model_zoo.zoo import build_bundle

    user = {u.user_id: u for u in load_users()}[args.role]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = build_bundle("keyboard_cifg", tmp / "bundle", with_vocabulary=True)
        (tmp / "lines.txt").write_text("\n".join(user.split()[0]))
        code = _DEVICE.format(
            root=str(Path(__file__).resolve().parents[1]),
            bundle=str(bundle),
            store=str(tmp / "store.db"),
            lines=str(tmp / "lines.txt"),
            epochs=args.epochs,
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\n== Device process: full keyboard_cifg on {args.role} (1 thread) ==")
    print(
        f"{r['examples']} examples in {r['steps']} steps, {r['seconds']:.1f} s: "
        f"{r['examples_per_s']:.0f} examples/s; peak RSS {r['peak_rss_mb']:.0f} MB "
        f"(target < 200 MB; {r['rss_before_training_mb']:.0f} MB before training); "
        f"torch loaded: {r['torch_loaded']}"
    )
    return r


if __name__ == "__main__":
    main()
