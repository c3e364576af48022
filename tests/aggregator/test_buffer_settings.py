"""plan.buffers as a setting: typed and checked where settings are built, one shape on the
wire and in the OpenAPI document, and applied by the coordinator to every aggregate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aggregator.aggregation import build_aggregation
from aggregator.config import PlanSettings, SyncSettings, TaskSettings
from aggregator.coordinator import TaskCoordinator
from aggregator.routes import OPENAPI
from aggregator.server_optimizers import SERVER_OPTIMIZERS, build_server_optimizer
from edge_sdk.protocol import BadField, UpdateMeta
from edge_sdk.protocol import messages as m

BUFFERS = frozenset({"bn.running_mean"})


def test_the_task_settings_plan_and_the_assigned_plan_hold_the_same_fields():
    settings = {f.name: f.default for f in dataclasses.fields(PlanSettings)}
    wire = {f.name: f.default for f in dataclasses.fields(m.AssignedPlan)}
    assert settings == wire
    plan = PlanSettings(epochs=2, lr=0.5, max_steps=9, buffers="local")
    assert m.AssignedPlan.from_json(plan.to_json()).to_json() == plan.to_json()


@pytest.mark.parametrize("value", ["fedbn", "", "Local", 1, None, True])
def test_a_buffers_value_outside_average_and_local_is_refused_with_its_path(value):
    with pytest.raises(BadField) as e:
        TaskSettings.from_json({"plan": {"buffers": value}})
    assert e.value.field == "settings.plan.buffers"


def test_built_directly_a_bad_buffers_value_says_which_ones_are_valid():
    with pytest.raises(BadField, match=r"buffers: must be one of \['average', 'local'\]"):
        PlanSettings(buffers="shared")


def test_stored_settings_from_before_the_setting_average_the_buffers():
    assert TaskSettings.from_json({"plan": {"epochs": 1, "lr": 0.5}}).plan.buffers == "average"
    # and an assignment from an older server reads the same way on the device
    assert m.AssignedPlan.from_json({"epochs": 1, "lr": 0.5}).buffers == "average"


def test_a_device_refuses_an_assignment_with_an_unknown_buffers_value():
    doc = {
        "assignment": {
            "task_id": "t",
            "round_id": 1,
            "model_version": 0,
            "deadline": 1.0,
            "model_id": "m",
            "plan": {"buffers": "sideways"},
        }
    }
    with pytest.raises(BadField, match="checkin_reply.assignment.plan.buffers"):
        m.CheckInReply.from_json(doc)


def test_the_openapi_document_publishes_the_values_in_settings_and_assignments():
    schemas = OPENAPI["components"]["schemas"]
    enum = ["average", "local"]
    assert schemas["PlanSettings"]["properties"]["buffers"]["enum"] == enum
    assert schemas["AssignedPlan"]["properties"]["buffers"]["enum"] == enum
    plan = schemas["TrainingAssignment"]["properties"]["plan"]
    assert plan == {"$ref": "#/components/schemas/AssignedPlan"}


def _coordinator(buffers: str, optimizer: str = "fedavg") -> TaskCoordinator:
    settings = TaskSettings(
        sync=SyncSettings(goal=2, overselect=1.0),
        plan=PlanSettings(buffers=buffers),
        server_optimizer=optimizer,
    )
    return TaskCoordinator(
        "t",
        settings,
        0,
        build_aggregation(settings.aggregation(), np.random.default_rng(0)),
        np.random.default_rng(0),
        0.0,
        buffers=BUFFERS,
    )


def _aggregate(c: TaskCoordinator, deltas: list[dict]) -> dict:
    for i, delta in enumerate(deltas):
        c.check_in(f"d{i}", 1.0)
        meta = UpdateMeta("t", "m", c.version, f"d{i}", f"k{i}", 10)
        c.accept(meta, delta, c.admit(meta, 2.0))  # as the service does, without its store
    mean, _ = c.take_aggregate(3.0)
    return mean


def _deltas(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "w": rng.standard_normal(3).astype(np.float32),
            "bn.running_mean": rng.standard_normal(2).astype(np.float32),
        }
        for _ in range(2)
    ]


def test_a_local_task_aggregates_zeros_for_its_buffers_and_an_average_task_their_mean():
    deltas = _deltas(0)
    local = _aggregate(_coordinator("local"), deltas)
    assert not local["bn.running_mean"].any()
    np.testing.assert_allclose(local["w"], (deltas[0]["w"] + deltas[1]["w"]) / 2, rtol=1e-6)
    average = _aggregate(_coordinator("average"), deltas)
    np.testing.assert_allclose(
        average["bn.running_mean"],
        (deltas[0]["bn.running_mean"] + deltas[1]["bn.running_mean"]) / 2,
        rtol=1e-6,
    )


@pytest.mark.parametrize("name", sorted(SERVER_OPTIMIZERS))
def test_every_server_optimizer_leaves_a_local_tasks_buffers_exactly_as_they_were(name):
    """What makes the coordinator's zeros enough: a zero mean never moves a parameter,
    after any number of steps, whatever the optimizer's state for the other ones."""
    c = _coordinator("local", name)
    optimizer = build_server_optimizer(name, lr=0.5)
    params = {"w": np.ones(3, np.float32), "bn.running_mean": np.array([0.3, -7.1], np.float32)}
    start, state = {k: v.copy() for k, v in params.items()}, {}
    for seed in range(4):
        params, state = optimizer.step(params, _aggregate(c, _deltas(seed)), state)
    assert np.array_equal(params["bn.running_mean"], start["bn.running_mean"])
    assert not np.allclose(params["w"], start["w"])


def test_the_simulator_takes_the_setting_from_its_config_and_refuses_a_bad_one():
    from fleet.config import SimulationConfig

    task = {"mode": "sync", "plan": {"epochs": 1, "lr": 0.5, "buffers": "local"}}
    config = SimulationConfig.from_dict({"model": "mobilenet_cnn_tiny", "task": task})
    assert TaskSettings.from_json(config.task).plan.buffers == "local"
    with pytest.raises(
        ValueError,
        match=r"task.plan.buffers: unknown value 'locl'; "
        r"did you mean 'local'\?",
    ):
        SimulationConfig.from_dict({"task": {"plan": {"buffers": "locl"}}})
