"""The dashboard in headless Chromium against a real aggregator on 127.0.0.1: a sync task
commits three versions (two devices report each round, a third is dropped when the round
fills and uploads late), the held-out evaluator's metrics are posted, and the page is
driven over the DevTools protocol. What it rendered is checked against the server: axes
with tick labels and units, top-1 and top-3, held-out and training labelled, time per
version and time to go, bytes per version, and one count per device outcome equal to
/v1/status and /metrics; then the screenshot's pixels: each chart draws its series, where
the data says it should."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import itertools
import json
import shutil
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.transport import ServerRejected

from .fleet import (
    admin,
    enroll_phone,
    full_delta,
    good_state,
    lm_examples,
    server_with_task,
    signed_update,
)

CHROMIUM = shutil.which("chromium")
# ~20-30 s on a busy machine: a bundle is compiled, 6 devices train 3 rounds, Chromium starts
pytestmark = pytest.mark.slow
ROUNDS, STEP_S = 3, 30.0
SETTINGS = {
    "mode": "sync",
    "sync": {"goal": 2, "overselect": 1.5},  # 3 selected, 2 needed
    "plan": {"epochs": 1, "batch_size": 4, "lr": 0.5},
    "target": {"max_versions": 10, "metric": "heldout.accuracy", "at_least": 0.875},
}
# what server_eval/ would post: +12.5 points of top-1 per version, so 2 versions to 87.5%
HELDOUT = {
    v: {"accuracy": 0.25 + 0.125 * v, "top3_accuracy": 0.5 + 0.125 * v, "mean_loss": 6.0 - v}
    for v in range(ROUNDS + 1)
}


@pytest.fixture(scope="module")
def rendered(bundle, tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("Debian chromium is not installed")
    return asyncio.run(_scenario(bundle, tmp_path_factory.mktemp("dash")))


async def _scenario(bundle: Bundle, tmp: Path) -> dict:
    async with server_with_task(tmp, bundle, SETTINGS, "keyboard") as env:
        url, session, clock = env.url, env.session, env.clock
        traffic = {}  # version -> the bytes its devices moved, as the devices counted them
        late_bytes = 0
        for round_ in range(ROUNDS):
            clock.advance(STEP_S)  # each version STEP_S after the one before
            phones = [
                await enroll_phone(
                    url, session, bundle, tmp, 10 * round_ + i, clock, lm_examples(i)
                )
                for i in range(3)
            ]
            straggler = phones.pop()
            offer = await straggler.transport.check_in("keyboard")  # selected first ...
            assert offer["assignment"]["round_id"] == round_ + 1
            results = await asyncio.gather(
                *[p.client.participate(good_state, "keyboard") for p in phones]
            )
            assert [r.status for r in results] == ["completed"] * 2
            traffic[round_ + 1] = {
                "down": sum(r.bytes_down for r in results),
                "up": sum(r.bytes_up for r in results) + late_bytes,
            }
            # ... but the round filled without it: its upload arrives late, once
            late_bytes = await _upload_late(straggler, bundle, version=round_)
        for version, metrics in HELDOUT.items():
            status, _ = await admin(
                session,
                url,
                "POST",
                f"/v1/admin/tasks/keyboard/versions/{version}/heldout",
                {"metrics": metrics},
            )
            assert status == 200
        async with session.get(url + "/v1/status") as r:
            status_doc = await r.json()
        async with session.get(url + "/metrics") as r:
            metrics_text = await r.text()
        async with _chromium_page(url + "/dashboard", tmp) as page:
            facts = json.loads(await page.evaluate(FACTS_JS))
            shot = base64.b64decode(
                (await page.call("Page.captureScreenshot", format="png"))["data"]
            )
            assert "Runtime.exceptionThrown" not in page.events
        (tmp / "dashboard.png").write_bytes(shot)  # kept for a look after a failure
        return {
            "facts": facts,
            "png": shot,
            "status": status_doc["tasks"][0],
            "metrics": metrics_text,
            "traffic": traffic,
        }


async def _upload_late(phone, bundle: Bundle, version: int) -> int:
    delta = full_delta(bundle, 1e-3)
    data = signed_update(phone, bundle, delta, f"late-{version}", version, task_id="keyboard")
    with pytest.raises(ServerRejected) as e:
        await phone.transport.upload("keyboard", data)
    assert e.value.status == 409 and e.value.code == "round_closed"
    return len(data)


# -- the page, over the DevTools protocol ---------------------------------------------------
class _Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws, self.next_id, self.events = ws, 0, []

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        async for msg in self.ws:
            doc = json.loads(msg.data)
            if doc.get("id") == self.next_id:
                assert "error" not in doc, doc
                return doc["result"]
            self.events.append(doc.get("method"))
        raise AssertionError("the DevTools connection closed")

    async def navigate(self, url: str) -> None:
        """Open `url` and return once its load event fired (its scripts ran)."""
        await self.call("Page.enable")
        await self.call("Runtime.enable")  # a script error is then an event
        self.events.clear()
        await self.call("Page.navigate", url=url)
        if "Page.loadEventFired" in self.events:
            return
        async for msg in self.ws:
            self.events.append(json.loads(msg.data).get("method"))
            if self.events[-1] == "Page.loadEventFired":
                return
        raise AssertionError("the DevTools connection closed")

    async def evaluate(self, expression: str):
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"]["value"]


@contextlib.asynccontextmanager
async def _chromium_page(url: str, tmp: Path):
    profile = tmp / "profile"
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--window-size=1000,2400",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(600):  # Chromium writes it once it listens
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as s:
            for _ in range(200):
                async with s.get(f"http://127.0.0.1:{port}/json/list") as r:
                    pages = [t for t in await r.json() if t["type"] == "page"]
                if pages:
                    break
                await asyncio.sleep(0.05)
            async with s.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = _Page(ws)
                await page.navigate(url)
                yield page
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


# after the first render: what a reader sees, per chart and per count, with positions
FACTS_JS = """(async () => {
  for (let i = 0; i < 400 && !document.body.dataset.rendered; i++)
    await new Promise(r => setTimeout(r, 25));
  const rect = e => { const b = e.getBoundingClientRect(); return [b.x, b.y, b.width, b.height]; };
  const texts = (root, sel) => [...root.querySelectorAll(sel)].map(t => t.textContent);
  const charts = {};
  for (const svg of document.querySelectorAll("svg.chart")) {
    charts[svg.dataset.chart] = {
      box: rect(svg), title: svg.querySelector("text.title").textContent,
      x_ticks: texts(svg, ".x-axis text.tick"), y_ticks: texts(svg, ".y-axis text.tick"),
      x_tick_boxes: [...svg.querySelectorAll(".x-axis text.tick")].map(rect),
      y_tick_boxes: [...svg.querySelectorAll(".y-axis text.tick")].map(rect),
      x_label: (svg.querySelector(".x-axis .axis-label") || {}).textContent,
      y_label: (svg.querySelector(".y-axis .axis-label") || {}).textContent,
      legend: texts(svg, "text.legend"),
      series: Object.fromEntries([...svg.querySelectorAll("g.series")].map(
        g => [g.dataset.series, [...g.querySelectorAll("circle")].map(
          c => [+c.getAttribute("cx"), +c.getAttribute("cy")])])),
      colors: Object.fromEntries([...svg.querySelectorAll("g.series")].map(
        g => [g.dataset.series, g.dataset.color])),
      empty: (svg.querySelector("text.empty") || {}).textContent || null};
  }
  return JSON.stringify({
    rendered: document.body.dataset.rendered, charts,
    counts: [...document.querySelectorAll("[data-outcome]")].map(
      r => [r.dataset.outcome, r.dataset.reason || "", +r.dataset.count]),
    funnel_text: document.querySelector("table.funnel").innerText,
    progress: Object.fromEntries([...document.querySelectorAll(".progress [data-field]")].map(
      d => [d.dataset.field, d.textContent])),
    dpr: window.devicePixelRatio});
})()"""


# -- what was rendered ------------------------------------------------------------------------
def test_every_chart_has_readable_axes_with_ticks_labels_and_units(rendered):
    charts = rendered["facts"]["charts"]
    assert set(charts) >= {
        "heldout-accuracy",
        "training-accuracy",
        "loss",
        "time-per-version",
        "bytes-per-version",
    }
    units = {
        "heldout-accuracy": "(%)",
        "training-accuracy": "(%)",
        "time-per-version": "(s)",
        "bytes-per-version": "(kB)",
    }
    for name, c in charts.items():
        assert c["empty"] is None, (name, c["empty"])
        assert c["x_label"] == "model version", name
        assert c["y_label"] and c["y_label"].endswith(units.get(name, "")), (name, c["y_label"])
        assert len(c["x_ticks"]) >= 3 and len(c["y_ticks"]) >= 3, (name, c)
        xs = [float(t) for t in c["x_ticks"]]
        assert xs == sorted(xs) and all(x == int(x) for x in xs), name  # whole versions
        ys = [float(t) for t in c["y_ticks"]]
        steps = np.diff(ys)
        assert np.allclose(steps, steps[0]) and steps[0] > 0, (name, ys)  # evenly spaced
        for boxes in (c["x_tick_boxes"], sorted(c["y_tick_boxes"], key=lambda b: b[1])):
            assert all(b[2] > 0 and b[3] > 0 for b in boxes), name
        for a, b in itertools.pairwise(c["x_tick_boxes"]):
            assert a[0] + a[2] <= b[0], (name, "x tick labels overlap")
        ys_box = sorted(c["y_tick_boxes"], key=lambda b: b[1])
        for a, b in itertools.pairwise(ys_box):
            assert a[1] + a[3] <= b[1] + 1, (name, "y tick labels overlap")
    # the held-out ticks cover its data (in %): 25..62.5 top-1, 50..87.5 top-3
    ys = [float(t) for t in charts["heldout-accuracy"]["y_ticks"]]
    assert ys[0] <= 25 and ys[-1] >= 87.5


def test_top1_and_top3_held_out_and_training_are_drawn_and_labelled(rendered):
    charts, status = rendered["facts"]["charts"], rendered["status"]
    held = charts["heldout-accuracy"]
    assert "Held-out" in held["title"] and held["legend"] == ["top-1", "top-3"]
    assert len(held["series"]["top1"]) == len(held["series"]["top3"]) == ROUNDS + 1
    # keyboard_cifg_tiny's train step measures top-1 only (its eval graph, top-3 too): the
    # training chart draws top-1 and says top-3 is not reported, rather than leave it out
    assert all(
        "accuracy" in v["metrics"] and "top3_accuracy" not in v["metrics"]
        for v in status["versions"][1:]
    )
    training = charts["training-accuracy"]
    assert "Training" in training["title"]
    assert training["legend"] == ["top-1", "top-3: not reported"]
    assert len(training["series"]["top1"]) == ROUNDS and training["series"]["top3"] == []
    loss = charts["loss"]
    assert loss["legend"] == ["held-out", "training"]
    assert len(loss["series"]["heldout"]) == ROUNDS + 1
    assert len(loss["series"]["training"]) == ROUNDS
    # on screen, top-3 lies above top-1 (smaller y), and both rise with the version
    for top1, top3 in zip(held["series"]["top1"], held["series"]["top3"]):
        assert top3[0] == top1[0] and top3[1] < top1[1]
    ys = [p[1] for p in held["series"]["top1"]]
    assert ys == sorted(ys, reverse=True)


def test_each_outcome_is_counted_once_and_agrees_with_status_and_metrics(rendered):
    funnel = rendered["status"]["funnel"]
    # 3 rounds: 3 selected, 2 accepted, the straggler dropped when the round filled; its
    # late upload is refused and not counted as a second outcome
    assert funnel["selected"] == 3 * ROUNDS and funnel["accepted"] == 2 * ROUNDS
    assert funnel["dropped"] == {"round_full": ROUNDS} and funnel["rejected"] == {}
    assert funnel["late_after_drop"] == ROUNDS
    assert funnel["reported"] == funnel["accepted"] + sum(funnel["rejected"].values())
    shown = {(o, r): n for o, r, n in rendered["facts"]["counts"]}
    expected = {
        ("checked_in", ""): funnel["checked_in"],
        ("selected", ""): funnel["selected"],
        ("reported", ""): funnel["reported"],
        ("accepted", ""): funnel["accepted"],
        ("dropped", "round_full"): ROUNDS,
        ("late_after_drop", ""): ROUNDS,
    }
    assert shown == expected
    assert "late" not in rendered["facts"]["funnel_text"]  # not listed twice
    metrics = rendered["metrics"]
    for name, value in (
        ("edgefl_check_ins_total", funnel["checked_in"]),
        ("edgefl_selections_total", funnel["selected"]),
        ("edgefl_updates_reported_total", funnel["reported"]),
        ("edgefl_updates_accepted_total", funnel["accepted"]),
        ("edgefl_late_after_drop_total", ROUNDS),
    ):
        assert f'{name}{{task="keyboard"}} {float(value)}' in metrics, name
    assert f'edgefl_dropouts{{reason="round_full",task="keyboard"}} {float(ROUNDS)}' in metrics
    assert "edgefl_updates_rejected_total{" not in metrics  # no rejection: no sample
    assert f'edgefl_model_version{{task="keyboard"}} {float(ROUNDS)}' in metrics
    assert 'edgefl_heldout_metric{metric="top3_accuracy",task="keyboard"} 0.875' in metrics


def test_time_per_version_and_time_to_go(rendered):
    # public status hides the settings, not where the task is going
    assert "settings" not in rendered["status"]
    assert rendered["status"]["progress"]["target"]["max_versions"] == 10
    progress = rendered["facts"]["progress"]
    assert (
        progress["seconds-per-version"] == f"Time per version: {STEP_S:.0f} s (mean of the last 3)"
    )
    # max 10 versions, 3 made: 7 to go at 30 s each; target 87.5% at +12.5 points a version
    assert progress["max-versions-to-go"].startswith(
        "Maximum: version 10: 7 version(s) to go, about 3.5 min at 30 s per version"
    )
    assert progress["metric-to-go"] == (
        "Target: held-out top-1 accuracy ≥ 87.5%: now 62.5% (version 3); about 2 version(s), "
        "60 s to go at the recent trend"
    )
    time_chart = rendered["facts"]["charts"]["time-per-version"]
    assert len(time_chart["series"]["seconds"]) == ROUNDS  # v0 has no version before it


def test_bytes_down_and_up_per_version_are_the_devices_own_counts(rendered):
    versions = {v["version"]: v for v in rendered["status"]["progress"]["versions"]}
    for version, moved in rendered["traffic"].items():
        assert versions[version]["bytes_down"] == moved["down"] > 0
        assert versions[version]["bytes_up"] == moved["up"] > 0
    chart = rendered["facts"]["charts"]["bytes-per-version"]
    assert chart["legend"] == ["down (models)", "up (updates)"]
    assert len(chart["series"]["down"]) == len(chart["series"]["up"]) == ROUNDS


def _near(mask: np.ndarray, x: float, y: float, r: int = 3) -> bool:
    """Whether `mask` (bool, [height, width]) holds a pixel within r of (x, y)."""
    x, y = round(x), round(y)
    return bool(mask[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1].any())


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])


def test_screenshot_shows_each_series_where_its_data_is(rendered):
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(rendered["png"])).convert("RGB")).astype(int)
    assert image.std() > 20  # not blank
    dpr = rendered["facts"]["dpr"]
    drawn = 0
    for name, chart in rendered["facts"]["charts"].items():
        x, y, w, h = (round(v * dpr) for v in chart["box"])
        assert y + h <= image.shape[0] and x + w <= image.shape[1], (name, "off the screenshot")
        area = image[y : y + h, x : x + w]
        for key, points in chart["series"].items():
            if not points:
                continue
            mask = np.abs(area - _rgb(chart["colors"][key])).sum(axis=2) < 40
            # a marker at each data point, and the line between each pair of them
            for cx, cy in points:
                assert _near(mask, cx * dpr, cy * dpr), (name, key, "no marker at", cx, cy)
            for (ax, ay), (bx, by) in itertools.pairwise(points):
                assert _near(mask, (ax + bx) / 2 * dpr, (ay + by) / 2 * dpr), (
                    name,
                    key,
                    "no line from",
                    ax,
                    bx,
                )
            drawn += 1
        # tick labels and axis titles: dark text in the margins left of and under the plot
        left_margin = area[round(40 * dpr) : round(h - 46 * dpr), : round(60 * dpr)]
        bottom_margin = area[round(h - 46 * dpr) :, round(62 * dpr) :]
        assert (left_margin.sum(axis=2) < 400).sum() > 100, name
        assert (bottom_margin.sum(axis=2) < 400).sum() > 100, name
    assert (
        drawn == 8
    )  # held-out accuracy 2, training 1 (top-3 not reported), loss 2, time 1, bytes 2
    # the held-out lines rise (accuracy grows by version): their pixels at the right of the
    # plot are higher on screen than at the left
    held = rendered["facts"]["charts"]["heldout-accuracy"]
    x, y, w, h = (round(v * dpr) for v in held["box"])
    area = image[y + round(40 * dpr) : y + h, x : x + w]  # below the legend
    for key in ("top1", "top3"):
        rows, cols = np.nonzero(np.abs(area - _rgb(held["colors"][key])).sum(axis=2) < 40)
        assert rows[cols > 2 * w / 3].mean() < rows[cols < w / 3].mean(), key
