"""Secure aggregation inside the aggregator's sync rounds: the state machine, and the real
app on 127.0.0.1 with real edge_sdk clients, asserting that nothing the server persists
or logs holds an individual update."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

import edge_sdk.client as client_module
from aggregator.config import RobustSettings, SecAggSettings, TaskSettings
from aggregator.errors import BadRequest, RoundClosed
from aggregator.secure_round import SecureRound
from edge_sdk.client import Pacer
from edge_sdk.protocol import decode_parameters
from edge_sdk.protocol.secagg import FixedPoint, SecAggClient, secagg_input

from .fleet import good_state, lm_examples, server_with_task

SETTINGS = SecAggSettings(phase_timeout_s=10.0)


# -- the state machine ------------------------------------------------------------------------
def _group(n: int, length: int, rng):
    secure = SecureRound(SETTINGS, length, goal=n, now=0.0)
    clients, vectors = {}, {}
    for i in range(n):
        c = SecAggClient(0, 0, FixedPoint(SETTINGS.clip, SETTINGS.frac_bits))
        secure.advertise(f"d{i}", *c.advertise(), now=1.0)
        clients[f"d{i}"] = c
        vectors[f"d{i}"] = rng.uniform(-0.2, 0.2, length).astype(np.float32)
    assert secure.phase == "sharing"
    for d, c in clients.items():
        view = secure.view_for(d)
        c.assign(view["index"], view["threshold"])
        secure.share(d, c.share_keys(view["peers"]), now=2.0)
    assert secure.phase == "masking"
    return secure, clients, vectors


@pytest.mark.parametrize("drop", ["none", "before_masked_input", "before_reveal"])
def test_the_round_sums_the_survivors_when_20_percent_drop(drop):
    rng = np.random.default_rng(0)
    secure, clients, vectors = _group(10, 500, rng)
    gone = {"none": set(), "before_masked_input": {"d2", "d7"}, "before_reveal": {"d1", "d5"}}[drop]
    for d, c in clients.items():
        if not (drop == "before_masked_input" and d in gone):
            secure.masked_input(
                d, c.masked_input(vectors[d], secure.view_for(d)["shares"]), now=3.0
            )
    if drop == "before_masked_input":
        assert secure.phase == "masking"
        secure.tick(3.0 + SETTINGS.phase_timeout_s)  # the phase times out: go on without them
    assert secure.phase == "unmasking"
    view = secure.view_for("d0")
    for d, c in clients.items():
        if c.index in view["survivors"] and not (drop == "before_reveal" and d in gone):
            secure.reveal(d, c.reveal(set(view["survivors"]), set(view["dropped"])), now=4.0)
    if drop == "before_reveal":
        secure.tick(4.0 + SETTINGS.phase_timeout_s)
    assert secure.phase == "done"
    summed = [d for d in clients if clients[d].index in view["survivors"]]
    assert len(summed) == (8 if drop == "before_masked_input" else 10)
    expected = sum(vectors[d] for d in summed)
    step = 2.0**-SETTINGS.frac_bits
    np.testing.assert_allclose(secure.result(), expected, atol=len(summed) * step / 2 + 1e-6)


def test_the_round_fails_below_the_threshold_and_refuses_out_of_phase_steps():
    rng = np.random.default_rng(1)
    secure, clients, vectors = _group(5, 50, rng)
    with pytest.raises(RoundClosed):
        secure.advertise("late", bytes(32), bytes(32), now=2.0)
    with pytest.raises(BadRequest):
        secure.masked_input("stranger", np.zeros(50, np.uint32), now=2.0)
    c = clients["d0"]
    secure.masked_input("d0", c.masked_input(vectors["d0"], secure.view_for("d0")["shares"]), 3.0)
    secure.tick(3.0 + SETTINGS.phase_timeout_s)  # 1 of 5 answered; the threshold is 3
    assert secure.phase == "failed" and "threshold" in secure.failure


def test_settings_refuse_what_secure_aggregation_cannot_do():
    with pytest.raises(ValueError, match="sync"):
        TaskSettings(mode="async", secagg=SecAggSettings())
    with pytest.raises(ValueError, match="individual updates"):
        TaskSettings(secagg=SecAggSettings(), robust=RobustSettings(kind="median"))
    with pytest.raises(ValueError, match="overflow"):
        TaskSettings.from_json({"sync": {"goal": 5000}, "secagg": {}})


# -- over HTTP with real devices (`bundle`: tests/conftest.py) -----------------------------------


class VanishBeforeMaskedInput(Pacer):
    async def uploading(self, nbytes: int) -> None:
        raise ConnectionAbortedError("the phone lost its network")


def _needles(x: np.ndarray) -> list[bytes]:
    """Byte strings that would show a vector was stored: 12 consecutive values, as float32
    and as the fixed-point words the device masks, from three places in the vector."""
    out = []
    fixed = FixedPoint(SETTINGS.clip, SETTINGS.frac_bits).encode(x)
    nonzero = np.flatnonzero(x)
    for start in (nonzero[0], nonzero[len(nonzero) // 2], max(0, nonzero[-1] - 12)):
        out.append(x[start : start + 12].astype("<f4").tobytes())
        out.append(fixed[start : start + 12].astype("<u4").tobytes())
    return out


def test_secure_rounds_over_http_store_only_the_sum(bundle, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    sent: dict[str, tuple[dict, int]] = {}
    real = client_module.report_securely

    async def recording(transport, task_id, round_id, delta, names, examples, *args, **kw):
        sent[transport.device_id] = ({k: v.copy() for k, v in delta.items()}, examples)
        return await real(transport, task_id, round_id, delta, names, examples, *args, **kw)

    monkeypatch.setattr(client_module, "report_securely", recording)

    async def scenario():
        settings = {
            "mode": "sync",
            "plan": {"epochs": 1, "batch_size": 4, "lr": 0.5},
            "sync": {"goal": 10, "overselect": 1.0, "min_fraction": 0.7},
            "secagg": {"phase_timeout_s": SETTINGS.phase_timeout_s},
        }
        async with server_with_task(tmp_path, bundle, settings) as env:
            phones = [await env.enroll(i, lm_examples(i, n=4 + i)) for i in range(10)]
            vanishing = {phones[3].identity.device_id, phones[8].identity.device_id}
            for p in phones:
                if p.identity.device_id in vanishing:
                    p.client.pacer = VanishBeforeMaskedInput()
            task = env.service.tasks["kb"]
            _, before = decode_parameters(
                env.service.model_file("kb", 0)[1].read_bytes(), task.record.specs
            )

            async def time_keeper():
                # once the eight survivors' inputs are in, let the masking phase time out
                while True:
                    secure = task.coordinator.secure
                    if secure.phase == "masking" and len(secure.server.survivors) == 8:
                        env.clock.advance(SETTINGS.phase_timeout_s + 1)
                        return
                    await asyncio.sleep(0.05)

            results = await asyncio.wait_for(
                asyncio.gather(
                    *[p.client.participate(good_state, "kb") for p in phones],
                    time_keeper(),
                    return_exceptions=True,
                ),
                timeout=120,
            )
            _, after = decode_parameters(
                env.service.model_file("kb", 1)[1].read_bytes(), task.record.specs
            )
            return phones, vanishing, before, after, results, task

    phones, vanishing, before, after, results, task = asyncio.run(scenario())
    outcomes = {p.identity.device_id: r for p, r in zip(phones, results)}
    assert all(isinstance(outcomes[d], ConnectionAbortedError) for d in vanishing)
    completed = [d for d, r in outcomes.items() if d not in vanishing]
    assert all(outcomes[d].status == "completed" for d in completed), outcomes
    assert task.coordinator.version == 1

    # the new model is the example-weighted mean of the eight survivors' deltas
    weights = {d: min(sent[d][1], 100) / 100 for d in completed}
    total = sum(weights.values())
    step = 2.0**-SETTINGS.frac_bits
    for name in before:
        expected = sum(weights[d] * sent[d][0][name] for d in completed) / total
        np.testing.assert_allclose(
            after[name] - before[name], expected, atol=len(completed) * step / total + 1e-6
        )

    # nothing persisted or logged holds one device's delta or its fixed-point input
    persisted = b"".join(f.read_bytes() for f in (tmp_path / "data").rglob("*") if f.is_file())
    logged = caplog.text.encode()
    names = [s["name"] for s in task.record.specs]
    for device, (delta, examples) in sent.items():
        x = secagg_input(delta, names, min(examples, 100) / 100)
        for needle in _needles(x) + _needles(np.concatenate([delta[k].reshape(-1) for k in names])):
            assert needle not in persisted, f"an individual vector of {device} was stored"
            assert needle not in logged
