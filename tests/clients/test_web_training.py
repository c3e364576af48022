"""Bundles trained in onnxruntime-web (clients/web, under Node) equal edge_sdk's
LocalTrainer: the same losses within 1e-5 step by step, and the same parameters after.
The SDK's run is written into a fixture the Node test reads."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.schedules import Constant
from edge_sdk.trainer import LocalTrainer, TrainingPlan

from .node import run_node_tests

STEPS, BATCH, LR = 5, 8, 0.05


def _examples(bundle: Bundle, n: int, rng: np.random.Generator) -> list[dict]:
    m = bundle.manifest
    out = []
    for _ in range(n):
        if bundle.is_language_model:
            ids = rng.integers(1, m["num_classes"], size=int(rng.integers(4, 14)))
            out.append({"tokens": ids[:-1], "targets": ids[1:]})
        else:
            ((name, spec),) = m["inputs"].items()
            x = rng.normal(size=spec["shape"][1:]).astype(np.float32)
            out.append({name: x, "targets": np.int64(rng.integers(m["num_classes"]))})
    return out


def _as_json(example: dict) -> dict:
    return {
        k: (v.astype("<f4").tobytes().hex() if v.dtype == np.float32 else v.tolist())
        for k, v in example.items()
    }


def _sdk_run(bundle_dir) -> dict:
    """LocalTrainer, one step per call so each step's loss is seen."""
    bundle = Bundle.load(bundle_dir)
    examples = _examples(bundle, STEPS * BATCH, np.random.default_rng(3))
    initial = bundle.initial_parameters()
    trainer = LocalTrainer(bundle, initial)
    plan = TrainingPlan(epochs=1, batch_size=BATCH, max_steps=1, schedule=Constant(LR), seed=11)
    losses = []
    for i in range(STEPS):
        batch = examples[i * BATCH : (i + 1) * BATCH]
        result = trainer.train(lambda epoch: batch, plan)
        assert result.status == "completed" and result.steps == 1
        losses.append(result.metrics["mean_loss"])
    seed = int(np.random.default_rng(plan.seed).integers(0, 2**31 - 1))  # the trainer's draw
    hexed = lambda d: {k: np.asarray(v, "<f4").tobytes().hex() for k, v in d.items()}  # noqa: E731
    return {
        "model": bundle.model_name,
        "bundle_dir": str(bundle_dir),
        "batch_size": BATCH,
        "lr": LR,
        "seed": seed,
        "losses": losses,
        "examples": [_as_json(e) for e in examples],
        "initial_parameters": hexed(initial),
        "final_parameters": hexed(trainer.parameters()),
    }


# general-path bundles whose graphs hold what the zoo's do not: Resize, GatherND and
# ScatterND after a Transpose, per-window average pool divisors, edge/circular padding,
# the recurrent layers' Scan loops with initial states and projections, a cumprod Scan
GENERAL_CASES = (
    "encoder_decoder",
    "resampling",
    "average_pools",
    "recurrent_variants",
    "functions",
)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    import torch

    from model_zoo.compiler import compile_bundle
    from model_zoo.zoo import build_bundle
    from tests.model_zoo.coverage_models import CASES

    root = tmp_path_factory.mktemp("web-bundles")
    zoo = [
        build_bundle(name, root / name, seed=0) for name in ("logreg", "mlp", "keyboard_cifg_tiny")
    ]
    general = []
    for name in GENERAL_CASES:
        torch.manual_seed(0)
        case, model = CASES[name], CASES[name].build()
        general.append(
            compile_bundle(
                model,
                case.batch(4, 6, torch.Generator().manual_seed(0)),
                loss=case.loss(),
                optimizer=torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9),
                out=root / name,
                model_name=name,
                path="general",
            )
        )
    return zoo + general


@pytest.mark.slow  # ~60 s on the shared 2-core VM: torch compiles the bundles, Node starts ORT
def test_onnxruntime_web_trains_like_the_sdk(bundles, tmp_path):
    cases = {"cases": [_sdk_run(b) for b in bundles]}
    out = run_node_tests("test/training.test.js", "EDGE_FL_TRAINING_FIXTURE", cases, tmp_path)
    passed = f"# pass {len(bundles) + 1}"  # a case per bundle, and the suite's own check
    assert passed in out and "# skipped 0" in out, out[-3000:]
