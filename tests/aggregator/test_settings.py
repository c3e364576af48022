"""Task settings and server config: typed, nested, checked when built, refusing unknown
keys with their path and the nearest valid name; every settings object built can be
built into its aggregation stack and server optimizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from aggregator.aggregation import build_aggregation
from aggregator.config import (
    DPSettings,
    LrDecaySettings,
    PlanSettings,
    RobustSettings,
    TaskSettings,
    reference_table,
)
from aggregator.server_config import HeldoutEntry, ServerConfig
from aggregator.server_optimizers import SERVER_OPTIMIZERS, build_server_optimizer
from edge_sdk.protocol import ProtocolError
from edge_sdk.protocol.typedjson import BadField

DOCS = Path(__file__).parents[2] / "docs" / "aggregator.md"


def _refused(doc: dict) -> BadField:
    with pytest.raises(BadField) as e:
        TaskSettings.from_json(doc)
    return e.value


@pytest.mark.parametrize(
    "doc, path, hint",
    [
        ({"plan": {"epochz": 3}}, "settings.plan.epochz", "did you mean 'epochs'?"),
        (
            {
                "dp": {
                    "clip_norm": 1.0,
                    "noise_multiplier": 1.0,
                    "population": 100,
                    "adaptive_quantil": 0.5,
                }
            },
            "settings.dp.adaptive_quantil",
            "did you mean 'adaptive_quantile'?",
        ),
        (
            {"robust": {"kind": "median", "bufer": 9}},
            "settings.robust.bufer",
            "did you mean 'buffer'?",
        ),
        (
            {"sync": {"goal": 5, "overselct": 1.2}},
            "settings.sync.overselct",
            "did you mean 'overselect'?",
        ),
        (
            {"server_optimiser": "fedadam"},
            "settings.server_optimiser",
            "did you mean 'server_optimizer'?",
        ),
        ({"zzz": 1}, "settings.zzz", "valid: "),
    ],
)
def test_unknown_keys_are_refused_with_their_path_and_the_nearest_name(doc, path, hint):
    error = _refused(doc)
    assert error.field == path and hint in str(error)
    assert str(error).startswith(path + ": unknown key")


@pytest.mark.parametrize(
    "doc, path, words",
    [
        ({"robust": {"kind": "trimmed_mean", "trim": 0.7}}, "settings.robust.trim", "[0, 0.5)"),
        ({"robust": {"kind": "median", "trim": 0.1}}, "settings.robust.trim", "trimmed_mean"),
        (
            {"robust": {"kind": "trimmed", "trim": 0.1}},
            "settings.robust.kind",
            "did you mean 'trimmed_mean'?",
        ),
        ({"robust": {"kind": "trimmed_mean", "buffer": 2}}, "settings.robust.buffer", "at least 3"),
        ({"server_optimizer": "fedadm"}, "settings.server_optimizer", "did you mean 'fedadam'?"),
        ({"async_": {"staleness": "polynominal"}}, "settings.async_.staleness", "'polynomial'"),
        ({"async": {"buffer_size": 0}}, "settings.async.buffer_size", ">= 1"),
        ({"sync": {"goal": True}}, "settings.sync.goal", "integer, got a boolean"),
        ({"sync": {"goal": 10**30}}, "settings.sync.goal", "out of range"),
        ({"sync": {"goal": 2.5}}, "settings.sync.goal", "integer"),
        ({"server_lr": "1.0"}, "settings.server_lr", "number, got a string"),
        ({"server_lr": 10**400}, "settings.server_lr", "finite"),
        ({"server_lr": float("nan")}, "settings.server_lr", "finite"),
        (
            {"server_lr_decay": {"at": [5, 3], "factor": 0.5}},
            "settings.server_lr_decay.at",
            "increasing",
        ),
        (
            {"server_lr_decay": {"at": [5, "x"], "factor": 0.5}},
            "settings.server_lr_decay.at[1]",
            "integer",
        ),
        (
            {"server_lr_decay": {"at": [5], "factor": 1.5}},
            "settings.server_lr_decay.factor",
            "(0, 1)",
        ),
        (
            {"dp": {"clip_norm": 1.0, "noise_multiplier": 1.0}},
            "settings.dp.population",
            "required key missing",
        ),
        (
            {"dp": {"clip_norm": 1.0, "noise_multiplier": 0.0, "population": 9}},
            "settings.dp.noise_multiplier",
            "> 0",
        ),
        (
            {
                "dp": {
                    "clip_norm": 1.0,
                    "noise_multiplier": 1.0,
                    "population": 9,
                    "adaptive_quantile": 1.5,
                }
            },
            "settings.dp.adaptive_quantile",
            "(0, 1)",
        ),
        (
            {
                "dp": {"clip_norm": 1.0, "noise_multiplier": 1.0, "population": 9},
                "robust": {"kind": "median"},
            },
            "settings.robust",
            "not both",
        ),
        ({"plan": {"epochs": 0}}, "settings.plan.epochs", ">= 1"),
        ({"plan": 3}, "settings.plan", "must be an object"),
        ({"mode": "asink"}, "settings.mode", "did you mean 'async'?"),
        ({"reject_outlier_factor": 0.5}, "settings.reject_outlier_factor", "> 1"),
        ({"max_update_norm": -1.0}, "settings.max_update_norm", "> 0"),
        ({"max_examples": 0}, "settings.max_examples", ">= 1"),
        ({"secagg": {}, "mode": "async"}, "settings.secagg", "sync rounds"),
        ({"async": {}, "async_": {}}, "settings.async_", "given twice"),
    ],
)
def test_bad_values_are_refused_with_their_path_and_how_to_fix_them(doc, path, words):
    error = _refused(doc)
    assert error.field == path, str(error)
    assert words in str(error)
    assert isinstance(error, ProtocolError) and error.details == {"field": path}


def test_the_contribution_bounds_default_on():
    s = TaskSettings()
    assert s.max_update_norm == 100.0 and s.max_examples == 10_000
    assert TaskSettings.from_json({"max_update_norm": None}).max_update_norm is None
    assert TaskSettings.from_json({"max_examples": 1}).max_examples == 1


RICH = {
    "mode": "async",
    "async_": {"concurrency": 5, "buffer_size": 4, "staleness": "hinge"},
    "server_optimizer": "fedadam",
    "server_lr": 0.01,
    "server_lr_decay": {"at": [10, 20], "factor": 0.5},
    "clip_norm": 3.0,
    "reject_outlier_factor": 4.0,
    "dp": {
        "clip_norm": 1.0,
        "noise_multiplier": 0.8,
        "population": 1000,
        "adaptive_quantile": 0.5,
        "epsilon_budget": 8.0,
    },
    "eval_fraction": 0.1,
    "plan": {"epochs": 2, "batch_size": 8, "lr": 0.5, "max_steps": 40},
    "max_update_norm": 50.0,
    "max_examples": 500,
}


@pytest.mark.parametrize(
    "doc",
    [
        {},
        RICH,
        {"robust": {"kind": "trimmed_mean", "trim": 0.2}},
        {"robust": {"kind": "median", "buffer": 7}},
        {"secagg": {"clip": 0.5}, "sync": {"goal": 20}},
    ],
)
def test_settings_round_trip_through_json(doc):
    settings = TaskSettings.from_json(doc)
    text = json.dumps(settings.to_json(), allow_nan=False)
    assert TaskSettings.from_json(json.loads(text)) == settings


def test_settings_stored_by_the_previous_version_still_load():
    """The shape `asdict` stored before settings were typed (async_, plain dicts)."""
    stored = {
        "mode": "sync",
        "sync": {
            "goal": 10,
            "overselect": 1.3,
            "selection_timeout_s": 120.0,
            "report_deadline_s": 600.0,
            "min_fraction": 0.7,
        },
        "async_": {
            "concurrency": 20,
            "buffer_size": 10,
            "max_staleness": 10,
            "staleness": "polynomial",
            "report_deadline_s": 600.0,
        },
        "server_optimizer": "fedavgm",
        "server_lr": 1.0,
        "server_lr_decay": {"at": [300], "factor": 0.3},
        "clip_norm": 2.0,
        "reject_outlier_factor": None,
        "robust": {"kind": "trimmed_mean", "trim": 0.2, "buffer": 30},
        "dp": None,
        "secagg": None,
        "eval_fraction": 0.0,
        "retry_min_s": 30.0,
        "retry_max_s": 300.0,
        "plan": {"epochs": 1, "batch_size": 16, "lr": 1.0},
    }
    s = TaskSettings.from_json(stored)
    assert s.robust == RobustSettings("trimmed_mean", 0.2, 30)
    assert s.server_lr_decay == LrDecaySettings((300,), 0.3) and s.server_lr_at(300) == 0.3
    assert s.plan == PlanSettings(1, 16, 1.0) and s.max_examples == 10_000
    assert TaskSettings.from_json({"async": {"buffer_size": 3}}).async_.buffer_size == 3
    dp = TaskSettings.from_json(
        {
            "dp": {
                "clip_norm": 0.1,
                "noise_multiplier": 1.5,
                "population": 20,
                "target_delta": 1e-5,
                "epsilon_budget": 3.0,
            }
        }
    ).dp
    assert dp == DPSettings(0.1, 1.5, 20, target_delta=1e-5, epsilon_budget=3.0)


def test_python_callers_get_the_same_checks():
    with pytest.raises(BadField, match="trim"):
        RobustSettings(trim=0.7)
    with pytest.raises(BadField, match="must be a DPSettings"):
        TaskSettings(dp={"clip_norm": 1.0})  # JSON goes through from_json
    with pytest.raises(ValueError, match="server_optimizer"):
        TaskSettings(server_optimizer="fedadm")


# every value a JSON document may hold at a settings leaf, good and bad
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3000),
    st.sampled_from([0.0, 0.05, 0.2, 0.49, 0.5, 0.7, 1.0, 1.5, 3.0, -1.0, 1e308, 10**400]),
    st.sampled_from(
        [
            "trimmed_mean",
            "median",
            "fedadam",
            "fedavgm",
            "fedyogi",
            "fedadm",
            "sync",
            "async",
            "hinge",
            "x",
        ]
    ),
)
_parts = {
    "robust": st.fixed_dictionaries({}, optional={"kind": _leaf, "trim": _leaf, "buffer": _leaf}),
    "dp": st.fixed_dictionaries(
        {"clip_norm": _leaf, "noise_multiplier": _leaf, "population": _leaf},
        optional={
            "adaptive_quantile": _leaf,
            "adaptive_lr": _leaf,
            "target_delta": _leaf,
            "expected_count": _leaf,
        },
    ),
    "plan": st.fixed_dictionaries(
        {}, optional={"epochs": _leaf, "batch_size": _leaf, "lr": _leaf, "max_steps": _leaf}
    ),
    "sync": st.fixed_dictionaries({}, optional={"goal": _leaf, "overselect": _leaf}),
    "secagg": st.fixed_dictionaries({}, optional={"clip": _leaf, "frac_bits": _leaf}),
}
_doc = st.fixed_dictionaries(
    {},
    optional={
        "mode": _leaf,
        "server_optimizer": _leaf,
        "server_lr": _leaf,
        "clip_norm": _leaf,
        "reject_outlier_factor": _leaf,
        "max_examples": _leaf,
        "max_update_norm": _leaf,
        **{k: st.one_of(st.none(), v) for k, v in _parts.items()},
    },
)


@given(_doc)
@hsettings(max_examples=300, deadline=None)
def test_every_settings_object_built_can_be_built_into_its_stack(doc):
    """Built means usable: a BadField (a 400) or an aggregation stack and a server
    optimizer that build, never a crash at the first commit."""
    try:
        s = TaskSettings.from_json(doc)
    except BadField as e:
        assert e.field.startswith("settings")
        return
    build_aggregation(s.aggregation(), np.random.default_rng(0))
    build_server_optimizer(s.server_optimizer, lr=s.server_lr_at(0))
    assert s.server_optimizer in SERVER_OPTIMIZERS
    assert TaskSettings.from_json(json.loads(json.dumps(s.to_json(), allow_nan=False))) == s


def test_the_docs_hold_the_generated_settings_reference():
    """docs/aggregator.md's table is `python -m aggregator.config`'s output."""
    assert reference_table() in DOCS.read_text()


# -- server config ---------------------------------------------------------------------------
def test_server_config_refuses_unknown_keys_with_their_path(tmp_path):
    base = {
        "data_dir": str(tmp_path),
        "admin_token": "a" * 20,
        "advertise_url": "http://127.0.0.1:1",
    }
    with pytest.raises(BadField) as e:
        ServerConfig.from_json(base | {"max_body_byte": 4096})
    assert e.value.field == "config.max_body_byte"
    assert "did you mean 'max_body_bytes'" in str(e.value)
    (tmp_path / "ex.jsonl").write_text("")
    with pytest.raises(BadField) as e:
        ServerConfig.from_json(
            base
            | {"heldout": {"kb": {"bundel": str(tmp_path), "examples": str(tmp_path / "ex.jsonl")}}}
        )
    assert e.value.field == "config.heldout.kb.bundel" and "'bundle'" in str(e.value)
    with pytest.raises(BadField) as e:
        ServerConfig.from_json(
            base
            | {
                "heldout": {
                    "kb": {"bundle": str(tmp_path / "none"), "examples": str(tmp_path / "ex.jsonl")}
                }
            }
        )
    assert e.value.field == "config.heldout.kb.bundle" and "existing" in str(e.value)
    config = ServerConfig.from_json(
        base
        | {
            "heldout": {
                "kb": {"bundle": str(tmp_path), "examples": str(tmp_path / "ex.jsonl"), "poll_s": 2}
            }
        }
    )
    assert config.heldout["kb"] == HeldoutEntry(str(tmp_path), str(tmp_path / "ex.jsonl"), 2.0)
    assert ServerConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    "change, path",
    [
        ({"admin_token": "short"}, "config.admin_token"),
        ({"admin_token": "é" * 20}, "config.admin_token"),
        ({"enrollment_secrets": {"p": "sécret"}}, "config.enrollment_secrets.p"),
        ({"enrollment_secrets": {"p": ""}}, "config.enrollment_secrets.p"),
        ({"enrollment_secrets": {"p": 5}}, "config.enrollment_secrets.p"),
        ({"burst": 0}, "config.burst"),
        ({"rate_per_s": True}, "config.rate_per_s"),
        ({"store_url": "mysql://db/x"}, "config.store_url"),
        ({"crash_at": {"model_file_written": "2"}}, "config.crash_at.model_file_written"),
    ],
)
def test_server_config_values_are_checked(tmp_path, change, path):
    with pytest.raises(BadField) as e:
        ServerConfig.from_json({"data_dir": str(tmp_path), "admin_token": "a" * 20} | change)
    assert e.value.field == path, str(e.value)


def test_no_enrollment_secret_is_built_in(tmp_path):
    assert ServerConfig(str(tmp_path), "a" * 20).enrollment_secrets == {}


def test_a_hostile_key_or_value_is_quoted_back_bounded():
    for doc in ({"k" * 10**6: 1}, {"mode": "m" * 10**6}, {"plan": {"\ud800" * 10**5: 1}}):
        error = _refused(doc)
        assert len(str(error)) < 600 and len(error.field) < 100
        json.dumps({"field": error.field, "message": str(error)})  # a lone surrogate too


@pytest.mark.parametrize(
    "change",
    [
        {"rate_per_s": "fast"},
        {"burst": 2.5},
        {"burst": None},
        {"max_body_bytes": 10},
        {"tick_interval_s": -1},
    ],
)
def test_python_built_server_config_says_which_field_not_a_type_error(tmp_path, change):
    with pytest.raises(BadField) as e:
        ServerConfig(str(tmp_path), "a" * 20, **change)
    assert e.value.field == next(iter(change))
