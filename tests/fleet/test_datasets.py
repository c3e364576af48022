"""Bring your own data and model: a simulation end to end from each reader (text JSON
lines, CSV, npz, a researcher's own class), the model given as `module:factory`."""

from __future__ import annotations

import csv
import json

import numpy as np

from fleet.config import SimulationConfig
from fleet.run import run

from . import toy_data
from .small_fleet import small_fleet, sync_task

# these runs bring their own data: the config's default vocabulary, not small_fleet's
OWN_DATA = {"vocabulary_size": SimulationConfig.vocabulary_size}


def small_run(
    tmp_path,
    data: dict,
    model: str,
    *,
    devices: int = 12,
    lr: float = 0.5,
    epochs: int = 5,
    **overrides,
) -> dict:
    task = sync_task(goal=5) | {"plan": {"epochs": epochs, "batch_size": 8, "lr": lr}}
    settings = dict(model=model, data=data, task=task, eval_every=3, eval_examples=500)
    config = small_fleet(devices, 5, 6, **(settings | OWN_DATA | overrides))
    return run(config, tmp_path, centralized_epochs=2, show_progress=False)


def write_csv(path, header, rows):
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def test_a_csv_with_users_trains_a_factory_model_against_the_majority_class(tmp_path):
    x, y, users = toy_data.separable_rows(users=12, per_user=30, features=4)
    labels = np.where(y == 1, "yes", "no")
    write_csv(
        tmp_path / "visits.csv",
        ["patient", "a", "b", "c", "d", "outcome"],
        [[u, *row, lab] for u, row, lab in zip(users, x.round(4), labels)],
    )
    data = {
        "kind": "csv",
        "path": str(tmp_path / "visits.csv"),
        "options": {"user": "patient", "label": "outcome"},
    }
    report = small_run(tmp_path / "out", data, "tests.fleet.toy_data:linear")
    assert report["data"]["name"] == "visits" and report["data"]["classes"] == ["no", "yes"]
    assert report["data"]["metrics"] == ["accuracy", "auc"]
    assert report["data"]["heldout_examples"] == 12 * 6  # the last 20% of each user's rows
    majority = report["baselines"]["majority class"]
    assert majority["auc"] == 0.5 and 0.55 < majority["accuracy"] < 0.8
    final = report["final"]
    assert final["accuracy"] > majority["accuracy"] + 0.1  # learned, not the prior
    assert final["auc"] > 0.85
    assert report["baselines"]["centralized"]["accuracy"] > majority["accuracy"]
    assert (tmp_path / "out" / "accuracy.png").stat().st_size > 1000


def test_an_npz_without_users_is_dealt_to_synthetic_ones(tmp_path):
    x, y, _ = toy_data.separable_rows(users=1, per_user=400, features=6)
    np.savez(tmp_path / "windows.npz", x=x.reshape(-1, 2, 3).astype(np.float32), y=y)
    data = {
        "kind": "npz",
        "path": str(tmp_path / "windows.npz"),
        "options": {"partition": {"users": 12, "alpha": 0.5}, "shuffle": True},
    }
    report = small_run(tmp_path / "out", data, "tests.fleet.toy_data:flat_linear")
    assert (
        report["data"]["users_from"] == "Dirichlet(0.5) label-skewed split over 12 synthetic users"
    )
    assert report["data"]["train_examples"] + report["data"]["heldout_examples"] == 400
    assert report["final"]["accuracy"] > report["baselines"]["majority class"]["accuracy"]


def test_a_researchers_own_loader_class(tmp_path):
    data = {"kind": "tests.fleet.toy_data:Sensors", "options": {"users": 12, "per_user": 16}}
    report = small_run(tmp_path, data, "tests.fleet.toy_data:flat_linear")
    assert report["data"]["name"] == "toy sensors"
    assert report["data"]["heldout_examples"] == 12 * 4
    assert report["final"]["accuracy"] > 0.8 > report["baselines"]["majority class"]["accuracy"]


def test_jsonl_text_trains_next_word_against_the_trigram(tmp_path):
    path = tmp_path / "chat.jsonl"
    rows = toy_data.chatty_users()
    path.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))  # time orders them
    data = {"kind": "jsonl", "path": str(path), "options": {"vocabulary_size": 40}}
    report = small_run(tmp_path / "out", data, "tests.fleet.toy_data:bigram", lr=0.5, epochs=5)
    assert report["data"]["task"] == "next_word" and report["data"]["name"] == "chat"
    assert report["data"]["metrics"] == ["accuracy", "top3_accuracy"]
    assert set(report["baselines"]) == {"3-gram", "centralized"}
    first, final = report["timeline"][0], report["final"]
    assert final["top3_accuracy"] > first["top3_accuracy"] + 0.2
    assert final["mean_loss"] < first["mean_loss"]


def _evaluated_run(tmp_path, users: int, per_user: int) -> dict:
    """20 devices on `users` users' npz rows (the last 20% of each user's held out), half
    of each round's spare devices evaluating: the report."""
    path = toy_data.write_separable_npz(tmp_path / "d.npz", users, per_user, features=3)
    config = small_fleet(
        20,
        goal=5,
        versions=4,
        model="tests.fleet.toy_data:linear",
        task=sync_task(goal=5) | {"eval_fraction": 0.5},
        data={"kind": "npz", "path": str(path)},
        eval_examples=100,
        seed=3,
        **OWN_DATA,
    )
    return run(config, tmp_path / "out", centralized_epochs=0, show_progress=False)


def test_federated_evaluation_scores_devices_held_out_examples(tmp_path):
    # 10 rows a user: 8 train, 2 held out; a device's evaluation counts its 2 only
    report = _evaluated_run(tmp_path, users=20, per_user=10)
    evaluations = report["federated_evaluation"]
    assert evaluations and sum(e["devices"] for e in evaluations) >= 2
    for e in evaluations:
        assert e["count"] == 2 * e["devices"]


def test_devices_without_held_out_examples_skip_federated_evaluation(tmp_path):
    # 5 users of 5 rows (4 train, 1 held out) on 20 devices: each user's 4 devices train on
    # one row each, one of them holds the user's held-out row, three nothing to evaluate on
    report = _evaluated_run(tmp_path, users=5, per_user=5)
    evaluations = report["federated_evaluation"]
    assert evaluations and all(e["count"] == e["devices"] for e in evaluations)
    assert report["client"]["outcomes"].get("aborted", 0) > 0  # the devices with none


def test_a_regression_csv_trains_a_factory_model_below_the_mean_predictors_error(tmp_path):
    """MSE through the compiler's general path, a model with one output per example."""
    rng = np.random.default_rng(0)
    users = np.repeat([f"u{i}" for i in range(12)], 30)
    x = rng.normal(size=(len(users), 3))
    y = x @ np.array([1.5, -2.0, 0.5]) + 3.0 + rng.normal(0, 0.1, len(users))
    write_csv(
        tmp_path / "r.csv",
        ["user", "a", "b", "c", "y"],
        [[u, *row, t] for u, row, t in zip(users, x.round(4), y.round(4))],
    )
    data = {
        "kind": "csv",
        "path": str(tmp_path / "r.csv"),
        "options": {"label": "y", "kind": "regression"},
    }
    report = small_run(
        tmp_path / "out", data, "tests.fleet.toy_data:regressor", loss="mse", lr=0.05
    )
    mean = report["baselines"]["mean predictor"]
    assert report["final"]["mse"] < 0.2 * mean["mse"]
    assert report["final"]["mae"] < mean["mae"]
