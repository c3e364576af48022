"""A bundle with BatchNorm trains in onnxruntime-web (clients/web, under Node) as in
edge_sdk: from the same start and data, the losses and the running statistics (the
bundle's buffers, fed to the train step and taken back from it) agree within 1e-5 step
by step, evaluation uses the trained statistics, and the web client's FedBN helpers
(LocalBuffers: plan.buffers "local") keep and apply them as edge_sdk/local_buffers.py
does. The SDK's run is written into a fixture that clients/web/test/buffers.test.js reads."""

from __future__ import annotations

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.evaluator import Evaluator
from edge_sdk.local_buffers import LocalBuffers
from edge_sdk.schedules import Constant
from edge_sdk.trainer import LocalTrainer, TrainingPlan

from .node import node_or_skip, run_node_tests

STEPS, BATCH, LR, FEATURES, CLASSES = 4, 8, 0.1, 6, 3


def _bundle(out) -> Bundle:
    """Linear -> BatchNorm1d -> ReLU -> Linear, through the compiler's general path."""
    import torch
    from torch import nn

    from model_zoo.compiler import compile_bundle

    class BatchNormMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(FEATURES, 8, bias=False)  # BatchNorm follows
            self.bn = nn.BatchNorm1d(8)
            self.head = nn.Linear(8, CLASSES)

        def forward(self, x):
            return self.head(torch.relu(self.bn(self.a(x))))

    torch.manual_seed(0)
    model = BatchNormMLP()
    gen = torch.Generator().manual_seed(0)
    sample = {"x": torch.randn(4, FEATURES, generator=gen), "targets": torch.tensor([0, 1, 2, 0])}
    compile_bundle(
        model,
        sample,
        loss=nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9),
        out=out,
        model_name="bn_mlp",
        path="general",
    )
    return Bundle.load(out)


def _hexed(arrays: dict) -> dict:
    return {k: np.asarray(v, "<f4").tobytes().hex() for k, v in arrays.items()}


def _sdk_run(bundle: Bundle) -> dict:
    rng = np.random.default_rng(5)
    examples = [
        {
            "x": (rng.normal(size=FEATURES) * 2 + 1).astype(np.float32),
            "targets": np.int64(rng.integers(CLASSES)),
        }
        for _ in range(STEPS * BATCH)
    ]
    initial = bundle.initial_parameters()
    trainer = LocalTrainer(bundle, initial)
    plan = TrainingPlan(epochs=1, batch_size=BATCH, max_steps=1, schedule=Constant(LR))
    losses, buffers = [], []
    for i in range(STEPS):
        batch = examples[i * BATCH : (i + 1) * BATCH]
        result = trainer.train(lambda epoch: batch, plan)
        assert result.status == "completed" and result.steps == 1
        losses.append(result.metrics["mean_loss"])
        buffers.append(_hexed({n: trainer.parameters()[n] for n in bundle.buffer_names}))
    trained = trainer.parameters()
    # FedBN as the SDK does it: what a "local" participation keeps and what it sends
    kept, sent = LocalBuffers(None, bundle).split(initial, trainer.delta(initial))
    return {
        "bundle_dir": str(bundle.path),
        "buffer_names": list(bundle.buffer_names),
        "batch_size": BATCH,
        "lr": LR,
        "losses": losses,
        "buffers": buffers,
        "examples": [
            {"x": e["x"].astype("<f4").tobytes().hex(), "targets": int(e["targets"])}
            for e in examples
        ],
        "initial_parameters": _hexed(initial),
        "final_parameters": _hexed(trained),
        # eval.onnx uses the buffers: the trained statistics, then the initial ones
        "eval_trained": Evaluator(bundle).evaluate(trained, examples),
        "eval_initial_buffers": Evaluator(bundle).evaluate(
            trained | {n: initial[n] for n in bundle.buffer_names}, examples
        ),
        "kept": _hexed(kept),
        "sent": _hexed(sent),
    }


def test_onnxruntime_web_carries_batchnorm_statistics_like_the_sdk(tmp_path):
    node_or_skip()  # skip before compiling a bundle when Node cannot run
    bundle = _bundle(tmp_path / "bn")
    assert len(bundle.buffer_names) == 2  # running_mean, running_var
    run = _sdk_run(bundle)
    first, last = run["buffers"][0], run["buffers"][-1]
    assert first != last != run["initial_parameters"]  # the statistics move in Python too
    out = run_node_tests("test/buffers.test.js", "EDGE_FL_BUFFERS_FIXTURE", run, tmp_path, 300)
    assert "# fail 0" in out and "# skipped 0" in out, out[-3000:]
