"""What the web-device tests assert about an update: the delta is the one edge_sdk's
LocalTrainer computes from the same examples, and the update decodes to the default
codec's image of it."""

from __future__ import annotations

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.protocol import DEFAULT_CODEC, decode_update
from edge_sdk.schedules import Constant
from edge_sdk.trainer import LocalTrainer, TrainingPlan

# the task the web-device tests run: one sync round is DEVICES updates of one epoch each
DEVICES, BATCH, LR = 3, 4, 0.5
SETTINGS = {
    "mode": "sync",
    "sync": {"goal": DEVICES, "overselect": 1.0},
    "plan": {"epochs": 1, "batch_size": BATCH, "lr": LR},
}


def python_delta(
    bundle: Bundle, params: dict, examples: list[dict], batch: int, lr: float
) -> dict[str, np.ndarray]:
    trainer = LocalTrainer(bundle, params)
    trainer.train(lambda epoch: examples, TrainingPlan(batch_size=batch, schedule=Constant(lr)))
    return trainer.delta(params)


def f32(doc: dict, bundle: Bundle) -> dict[str, np.ndarray]:
    shapes = {s.name: s.shape for s in bundle.parameter_specs}
    return {k: np.frombuffer(bytes.fromhex(v), "<f4").reshape(shapes[k]) for k, v in doc.items()}


def assert_same_training(
    bundle: Bundle,
    result: dict,
    expected: dict[str, np.ndarray],
    residual: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """result: a web device's posted delta and update (hex); expected: Python's delta;
    residual: the error feedback the device carried into this round. Returns the
    residual it carries out (what the codec dropped from delta + residual)."""
    delta = f32(result["delta"], bundle)
    for name, value in expected.items():
        np.testing.assert_allclose(delta[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
    update = decode_update(bytes.fromhex(result["update"]), bundle.parameter_specs, public_key=None)
    assert update.codec == DEFAULT_CODEC and update.meta.device_id == result["device_id"]
    corrected = {k: v + residual[k] if residual else v for k, v in delta.items()}
    for name, value in corrected.items():
        got, flat = update.tensors[name].reshape(-1), value.reshape(-1)
        k = DEFAULT_CODEC.kept(flat.size)
        top = set(np.argsort(-np.abs(flat), kind="stable")[:k].tolist())
        kept = set(np.flatnonzero(got).tolist())
        assert len(top & kept) >= 0.95 * k, name  # the same largest coordinates
        both = np.array(sorted(top & kept))
        step = 2 / 254 * np.abs(flat[both]).max()  # within one int8 step of what was meant
        assert np.abs(got[both] - flat[both]).max() <= 1.01 * step, name
    return {k: (v - update.tensors[k]).astype(np.float32) for k, v in corrected.items()}
