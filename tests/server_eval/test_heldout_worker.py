"""Server-side held-out evaluation: the evaluator process beside a real aggregator on
127.0.0.1 evaluates each new model version and the server keeps what it reported."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import aiohttp
import pytest

from edge_sdk.evaluator import Evaluator
from edge_sdk.protocol import decode_parameters
from server_eval import (
    HeldoutSetError,
    HeldoutWorker,
    WorkerConfig,
    read_heldout_set,
    write_heldout_set,
)
from tests.aggregator.fleet import (
    ADMIN,
    ServerProcess,
    admin,
    create_task,
    free_port,
    good_state,
    lm_examples,
    server_with_task,
)
from tests.fresh_imports import loaded_after_importing

SETTINGS = {
    "mode": "sync",
    "plan": {"epochs": 1, "batch_size": 4, "lr": 0.5},
    "sync": {"goal": 2, "overselect": 1.0, "min_fraction": 1.0},
}


def test_each_new_version_is_evaluated_once_and_kept_in_the_history(bundle, tmp_path):
    heldout = tmp_path / "heldout.jsonl"
    write_heldout_set(heldout, lm_examples(99, n=30))
    examples = read_heldout_set(heldout, bundle)

    async def scenario():
        async with server_with_task(tmp_path, bundle, SETTINGS) as env:
            worker = HeldoutWorker(
                WorkerConfig(
                    env.url, ADMIN, "kb", str(bundle.path), str(heldout), every_version=True
                ),
                env.session,
            )
            first = await worker.evaluate_pending()
            again = await worker.evaluate_pending()  # nothing new: nothing evaluated
            phones = [await env.enroll(i, lm_examples(i, n=16)) for i in range(2)]
            await asyncio.gather(*[p.client.participate(good_state, "kb") for p in phones])
            second = await worker.evaluate_pending()
            _, doc = await admin(env.session, env.url, "GET", "/v1/admin/tasks/kb")
            async with env.session.get(env.url + "/metrics") as r:
                exposed = await r.text()
            models = [
                decode_parameters(
                    env.service.model_file("kb", v)[1].read_bytes(), bundle.parameter_specs
                )[1]
                for v in (0, 1)
            ]
            return first, again, second, doc, exposed, models

    first, again, second, doc, exposed, models = asyncio.run(scenario())
    assert (first, again, second) == ([0], [], [1])
    reported = {e["version"]: e for e in doc["heldout_evaluation"]}
    assert sorted(reported) == [0, 1]
    for version, params in enumerate(models):
        expected = Evaluator(bundle).evaluate(params, examples)
        for name in ("mean_loss", "accuracy", "top3_accuracy", "count"):
            assert reported[version][name] == pytest.approx(expected[name], rel=1e-6)
    assert reported[0]["mean_loss"] != reported[1]["mean_loss"]  # a new model, new metrics
    assert (
        f'edgefl_heldout_metric{{metric="mean_loss",task="kb"}} {reported[1]["mean_loss"]}'
        in exposed.replace(repr(reported[1]["mean_loss"]), str(reported[1]["mean_loss"]))
    )


def test_bad_heldout_reports_are_refused_and_the_first_report_stands(bundle, tmp_path):
    async def scenario():
        async with server_with_task(tmp_path, bundle, SETTINGS) as env:

            def post(v, doc):
                return admin(
                    env.session, env.url, "POST", f"/v1/admin/tasks/kb/versions/{v}/heldout", doc
                )

            answers = [
                await post(0, {"metrics": {"accuracy": "high"}}),
                await post(0, {"metrics": {}}),
                await post(0, {"accuracy": 0.5}),
                await post(7, {"metrics": {"accuracy": 0.5}}),
                await post(0, {"metrics": {"accuracy": 0.5}}),
                await post(0, {"metrics": {"accuracy": 0.9}}),
            ]
            async with env.session.post(
                env.url + "/v1/admin/tasks/kb/versions/0/heldout",
                json={"metrics": {"accuracy": 0.1}},
            ) as r:
                anonymous = r.status
            _, doc = await admin(env.session, env.url, "GET", "/v1/admin/tasks/kb")
            return answers, anonymous, doc

    answers, anonymous, doc = asyncio.run(scenario())
    assert [status for status, _ in answers] == [400, 400, 400, 404, 200, 200]
    assert answers[0][1]["error"]["code"] == "bad_field"
    assert answers[0][1]["error"]["field"] == "heldout.metrics.accuracy"
    assert [body.get("status") for _, body in answers[4:]] == ["recorded", "duplicate"]
    assert anonymous == 401
    assert doc["heldout_evaluation"] == [{"version": 0, "accuracy": 0.5}]


def test_a_heldout_file_that_does_not_fit_the_bundle_says_which_line(bundle, tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"tokens": [4, 5, 6], "targets": [5, 6, 7]})
    for text, needle in (
        (good + "\n" + json.dumps({"tokens": [4]}) + "\n", ":2: an example holds exactly"),
        (good + "\n{not json\n", ":2: not JSON"),
        (json.dumps({"tokens": [[4, 5]], "targets": [5]}) + "\n", ":1: tokens has shape"),
        (json.dumps({"tokens": ["a"], "targets": [5]}) + "\n", ":1: tokens is not an array"),
        ("\n", "holds no examples"),
    ):
        path.write_text(text)
        with pytest.raises(HeldoutSetError, match=needle):
            read_heldout_set(path, bundle)


def _serve_with_heldout(bundle, tmp_path, n):
    """`edge-fl serve` (a subprocess) configured to evaluate task kb on n examples."""
    heldout = tmp_path / "heldout.jsonl"
    write_heldout_set(heldout, lm_examples(7, n=n))
    server = ServerProcess(tmp_path / "data", free_port())
    url = server.start(
        heldout={"kb": {"bundle": str(bundle.path), "examples": str(heldout), "poll_s": 0.2}}
    )
    return server, url, heldout


def test_serve_runs_a_heldout_evaluator_for_a_configured_task(bundle, tmp_path):
    server, url, heldout = _serve_with_heldout(bundle, tmp_path, n=10)

    async def scenario():
        async with aiohttp.ClientSession() as session:
            status, _ = await create_task(session, url, bundle, SETTINGS)
            assert status == 201
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                _, doc = await admin(session, url, "GET", "/v1/admin/tasks/kb")
                if doc["heldout_evaluation"]:
                    return doc["heldout_evaluation"]
                await asyncio.sleep(0.2)
            raise AssertionError("no held-out evaluation within 60 s: " + server.log.read_text())

    try:
        reported = asyncio.run(scenario())
    finally:
        server.stop()
    expected = Evaluator(bundle).evaluate(
        bundle.initial_parameters(), read_heldout_set(heldout, bundle)
    )
    assert reported[0]["version"] == 0
    assert reported[0]["mean_loss"] == pytest.approx(expected["mean_loss"], rel=1e-6)
    # the evaluator stopped with the server: no process is left holding the port
    out = subprocess.run(["pgrep", "-f", f"heldout --server {url}"], capture_output=True)
    assert out.returncode == 1, out.stdout


def test_the_evaluator_loads_neither_torch_nor_the_aggregator():
    evaluator = ["server_eval", "server_eval.worker", "server_eval.heldout_set"]
    assert loaded_after_importing(evaluator, ("torch", "aggregator", "model_zoo")) == []


def test_the_evaluator_does_not_outlive_a_server_killed_with_kill_9(bundle, tmp_path):
    server, url, heldout = _serve_with_heldout(bundle, tmp_path, n=4)
    pattern = f"heldout --server {url}"
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "the evaluator never started"
        time.sleep(0.1)
    server.kill9()
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the evaluator outlived its server"
        time.sleep(0.2)


def test_a_task_not_created_yet_is_logged_once_not_at_every_poll(bundle, tmp_path, caplog):
    heldout = tmp_path / "heldout.jsonl"
    write_heldout_set(heldout, lm_examples(99, n=4))

    async def scenario():
        async with server_with_task(tmp_path, bundle, SETTINGS) as env:
            worker = HeldoutWorker(
                WorkerConfig(env.url, ADMIN, "later", str(bundle.path), str(heldout), poll_s=0.001),
                env.session,
            )
            stop, passes = asyncio.Event(), []
            evaluate = worker.evaluate_pending

            async def counted():
                passes.append(1)
                if len(passes) == 5:
                    stop.set()
                return await evaluate()

            worker.evaluate_pending = counted
            await worker.run(stop)
            return len(passes)

    with caplog.at_level("WARNING", logger="edge_fl.heldout"):
        assert asyncio.run(scenario()) == 5
    warnings = [r.getMessage() for r in caplog.records if r.name == "edge_fl.heldout"]
    assert len(warnings) == 1 and "404" in warnings[0] and "later" in warnings[0], warnings
