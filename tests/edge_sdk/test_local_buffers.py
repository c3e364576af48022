"""A device's kept buffer values (FedBN): stored per task and bundle in the example store,
surviving a reopen, never fed to a bundle they do not fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_sdk.bundle import Bundle, ParameterSpec
from edge_sdk.errors import BundleError
from edge_sdk.example_store import ExampleStore
from edge_sdk.local_buffers import KEY, LocalBuffers

SPECS = (
    ParameterSpec("w", (2, 3)),
    ParameterSpec("bn.running_mean", (3,)),
    ParameterSpec("bn.running_var", (3,)),
)
BUFFERS = ("bn.running_mean", "bn.running_var")


def bundle(model_id: str = "m1", specs=SPECS, buffers=BUFFERS) -> Bundle:
    return Bundle(
        Path("."), {}, model_id, "bn", "classification", specs, ("x",), "targets", -100, 3, buffers
    )


def parameters(value: float) -> dict[str, np.ndarray]:
    return {s.name: np.full(s.shape, value, np.float32) for s in SPECS}


@pytest.fixture
def store(tmp_path):
    s = ExampleStore(tmp_path / "device.db")
    yield s
    s.close()


def test_kept_values_survive_reopening_the_store(tmp_path):
    first = ExampleStore(tmp_path / "device.db")
    LocalBuffers(first, bundle()).save("t", parameters(0.5) | {"bn.running_var": np.arange(3.0)})
    first.close()
    again = ExampleStore(tmp_path / "device.db")
    kept = LocalBuffers(again, bundle()).load("t")
    again.close()
    assert set(kept) == set(BUFFERS)  # buffers only, the trained parameters are not kept
    assert kept["bn.running_var"].dtype == np.float32
    np.testing.assert_array_equal(kept["bn.running_var"], [0, 1, 2])
    np.testing.assert_array_equal(kept["bn.running_mean"], [0.5] * 3)


def test_apply_puts_kept_values_over_the_servers_and_mutates_nothing(store):
    buffers = LocalBuffers(store, bundle())
    server = parameters(1.0)
    assert buffers.apply("t", server) is server  # nothing kept: the server's values
    buffers.save("t", parameters(2.0))
    mixed = buffers.apply("t", server)
    assert mixed["w"] is server["w"] and (mixed["bn.running_mean"] == 2.0).all()
    assert (server["bn.running_mean"] == 1.0).all()
    assert buffers.apply("other-task", server) is server  # kept per task


def test_values_kept_for_another_bundle_are_dropped_not_fed():
    store = ExampleStore(":memory:")
    LocalBuffers(store, bundle("m1")).save("t", parameters(2.0))
    assert LocalBuffers(store, bundle("m2")).load("t") is None
    assert store.get_state(KEY.format(task="t")) is None  # dropped
    wider = tuple(ParameterSpec(s.name, (4,)) if s.name in BUFFERS else s for s in SPECS)
    LocalBuffers(store, bundle("m1")).save("t", parameters(2.0))
    assert LocalBuffers(store, bundle("m1", wider)).load("t") is None


@pytest.mark.parametrize("blob", [b"", b"not arrays", b"EFLA\xff\xff\xff\xff"])
def test_unreadable_kept_values_are_dropped(store, blob):
    store.put_state(KEY.format(task="t"), blob)
    assert LocalBuffers(store, bundle()).load("t") is None
    assert store.get_state(KEY.format(task="t")) is None


def test_values_that_are_not_finite_are_never_fed(store):
    LocalBuffers(store, bundle()).save("t", parameters(np.nan))
    assert LocalBuffers(store, bundle()).load("t") is None


def test_wipe_erases_kept_values(store):
    LocalBuffers(store, bundle()).save("t", parameters(2.0))
    store.wipe()
    assert LocalBuffers(store, bundle()).load("t") is None


def test_split_keeps_the_buffers_a_run_reached_and_sends_zeros_for_them(store):
    start, delta = parameters(1.0), parameters(0.25)
    reached, sent = LocalBuffers(store, bundle()).split(start, delta)
    assert set(reached) == set(BUFFERS) and (reached["bn.running_var"] == 1.25).all()
    assert (sent["w"] == 0.25).all() and not sent["bn.running_mean"].any()
    assert set(sent) == set(delta) and (delta["bn.running_mean"] == 0.25).all()  # not mutated


def test_a_bundle_without_buffers_keeps_nothing(store):
    plain = bundle(buffers=())
    LocalBuffers(store, plain).save("t", parameters(2.0))
    assert store.get_state(KEY.format(task="t")) is None


def test_bundles_name_their_buffers_and_refuse_one_that_is_not_a_parameter(mlp_bundle, tmp_path):
    assert Bundle.load(mlp_bundle).buffer_names == ()
    copy = Path(shutil.copytree(mlp_bundle, tmp_path / "b"))
    manifest = json.loads((copy / "manifest.json").read_text())
    first = manifest["parameters"][0]["name"]
    manifest["buffers"] = [{"name": first, "shape": manifest["parameters"][0]["shape"]}]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert Bundle.load(copy).buffer_names == (first,)
    manifest["buffers"] = [{"name": "bn.running_mean", "shape": [3]}]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"buffers \['bn.running_mean'\] that are not among"):
        Bundle.load(copy)
