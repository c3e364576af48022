"""A simulation config's task settings reach the aggregator and the devices: a BatchNorm
model simulated with `plan.buffers: "local"` keeps each device's running statistics in its
own store, and the global model's buffers stay the bundle's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edge_sdk.bundle import Bundle
from edge_sdk.example_store import ExampleStore
from edge_sdk.local_buffers import LocalBuffers
from fleet.config import SimulationConfig
from fleet.devices import TASK
from fleet.run import run

from .small_fleet import sync_task


class BatchNormMLP(nn.Module):
    """x float32 [B, *input_shape] -> logits [B, num_classes], with a BatchNorm1d."""

    def __init__(self, input_shape: tuple, num_classes: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(int(np.prod(input_shape)), 8),
            nn.BatchNorm1d(8),
            nn.ReLU(),
            nn.Linear(8, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.flatten(x, 1))


def bn_mlp(input_shape: tuple, num_classes: int) -> nn.Module:
    return BatchNormMLP(input_shape, num_classes)


@pytest.mark.slow  # ~20 s on the shared VM: a bundle compile and a simulated day
def test_a_simulated_fleet_keeps_batchnorm_statistics_on_its_devices(tmp_path):
    task = sync_task(goal=4) | {
        "plan": {"epochs": 2, "batch_size": 4, "lr": 0.3, "buffers": "local"}
    }
    config = SimulationConfig.from_dict(
        {
            "model": f"{__name__}:bn_mlp",
            "devices": 8,
            "task": task,
            "transport": "inprocess",
            "data": {
                "kind": "tests.fleet.toy_data:Sensors",
                "options": {"users": 8, "per_user": 16},
            },
            "hours": 24,
            "max_versions": 2,
            "eval_every": 2,
            "eval_examples": 50,
            "seed": 1,
            "device_stores": "disk",
        }
    )
    report = run(config, tmp_path, centralized_epochs=0, show_progress=False)
    assert report["versions"] == 2
    bundle = Bundle.load(tmp_path / "bundle")
    names = bundle.buffer_names
    assert len(names) == 2
    initial = bundle.initial_parameters()
    kept = []
    for path in sorted((tmp_path / "devices").glob("device-*.db")):
        store = ExampleStore(path)
        values = LocalBuffers(store, bundle).load(TASK)
        store.close()
        if values is not None:
            kept.append(values)
    assert len(kept) >= 4  # every device that completed a participation kept its own
    for name in names:
        assert len({kept_values[name].tobytes() for kept_values in kept}) == len(kept)
        assert all(not np.allclose(k[name], initial[name]) for k in kept)
    # the aggregator's final model: trained parameters moved, buffers exactly the bundle's
    from aggregator.app import ServerConfig, make_service
    from edge_sdk.clock import FakeClock
    from edge_sdk.protocol import decode_parameters

    service = make_service(
        ServerConfig(str(tmp_path / "server"), "x" * 20, {}), FakeClock(), np.random.default_rng(0)
    )
    try:
        version, path = service.model_file(TASK, None)
        final = decode_parameters(path.read_bytes(), bundle.parameter_specs)[1]
    finally:
        service.store.close()
    assert version == 2
    for name in names:
        assert np.array_equal(final[name], initial[name]), name
    assert any(not np.allclose(final[k], initial[k]) for k in initial if k not in names)
