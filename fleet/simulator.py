"""Run a simulated fleet: real edge_sdk clients (eligibility, check-in, download, ORT
training, encoding, signed upload) against the real aggregator, in simulated time."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
from aiohttp import web
from tqdm import tqdm

from aggregator.app import ServerConfig, build_app, make_service
from aggregator.config import TaskSettings
from edge_sdk.bundle import Bundle
from edge_sdk.client import DeviceIdentity, LocalTraining
from edge_sdk.clock import FakeClock
from edge_sdk.evaluator import Evaluator
from edge_sdk.example_store import ExampleStore, RetentionPolicy
from edge_sdk.protocol import CodecSpec, generate_signing_key, public_key_of
from edge_sdk.trainer import LocalTrainer

from .config import SimulationConfig, pipeline_of
from .devices import SECRET, TASK, Device, FleetParts, SimulatedDropout, fill_store
from .lazy_population import LazyPopulation
from .population import draw_profile
from .virtual_time import VirtualTime

T0 = 1_767_571_200.0  # 2026-01-05 00:00 UTC: simulated time starts at midnight
ADMIN = "simulation-admin-token"
TIMELINE_METRICS = ("accuracy", "top3_accuracy", "mean_loss", "auc", "mse", "mae")
LAZY_TICK_S = 1.0  # a lazy fleet ticks the in-process aggregator at most this often
DISK_STORE_CACHE_KIB = 128  # per device: the residual is read whole once per round anyway


def make_training(config: SimulationConfig, bundle: Bundle, clock):
    """Where the fleet's local training runs: inline on one shared trainer (and its ORT
    sessions), on a pool of worker processes (fleet/process_backend.py), or on Ray actors
    (fleet/ray_backend.py)."""
    if config.backend == "processes":
        from .process_backend import ProcessTraining

        return ProcessTraining(bundle, config.workers or None)
    if config.backend == "ray":
        from .ray_backend import RayTraining

        return RayTraining(bundle, **config.ray)
    return LocalTraining(bundle, clock, in_thread=False, trainer=LocalTrainer(bundle, clock=clock))


def _device_store_dir(config: SimulationConfig, out: Path) -> Path | None:
    """For on-disk device stores: a fresh directory, and enough file descriptors (an open
    SQLite store in WAL mode holds three), else a clear error before anything starts."""
    if config.device_stores == "memory":
        return None
    import resource
    import shutil

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 3 * config.devices + 1024  # + sockets, bundle files, the server's store
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise ValueError(
                f"{config.devices} on-disk device stores need ~{needed} open files; "
                f"the limit is {hard} (raise `ulimit -n`, or use "
                f"device_stores 'memory')"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    store_dir = out / "devices"
    shutil.rmtree(store_dir, ignore_errors=True)  # a previous run's devices are not these
    store_dir.mkdir(parents=True)
    return store_dir


def codec_of(codec: str | dict) -> CodecSpec:
    """The codec a config names (fleet.config.pipeline_of has the whole pipeline)."""
    return pipeline_of(codec).codec


def open_run_store(out: Path):
    """The aggregator store a simulation left in `out/server` (SqliteStore; close it)."""
    from aggregator.store import SqliteStore

    store_dir = out / "server"
    if not (store_dir / "aggregator.db").exists():
        raise FileNotFoundError(f"no simulation state in {store_dir}: run the simulation first")
    return SqliteStore(store_dir)


@dataclass
class ResumePoint:
    """Where a stopped run left off: its newest committed version, that commit's simulated
    time, and the evaluations already written to timeline.jsonl."""

    version: int
    now: float
    timeline: list[dict]

    @classmethod
    def read(cls, out: Path) -> ResumePoint:
        store = open_run_store(out)
        try:
            latest = store.model_history(TASK)[-1]
        finally:
            store.close()
        log = out / "timeline.jsonl"
        lines = [
            line for line in (log.read_text().splitlines() if log.exists() else []) if line.strip()
        ]
        points = []
        for number, line in enumerate(lines, 1):
            try:
                points.append(json.loads(line))
            except json.JSONDecodeError:
                if number < len(lines):
                    raise ValueError(f"{log} line {number} is damaged") from None
                # else the run died writing its last line: that evaluation is redone
        return cls(
            latest["version"],
            latest["created"],
            [p for p in points if p["version"] <= latest["version"]],
        )


async def _eager_devices(
    fleet: FleetParts, device_data: list, out: Path, rng: np.random.Generator
) -> tuple[list[Device], set[int]]:
    """Every device of the population, enrolled and holding its data, up front."""
    config = fleet.config
    store_dir = _device_store_dir(config, out)
    attackers = set()
    if config.attackers:
        count = int(round(config.attackers["fraction"] * len(device_data)))
        attackers = set(rng.choice(len(device_data), size=count, replace=False).tolist())
    devices = []
    for i, examples in enumerate(device_data):
        held_out_split = isinstance(examples, tuple)  # else federated evaluation uses training
        examples, heldout = examples if held_out_split else (examples, [])
        key = generate_signing_key()
        transport = fleet.transport(i)
        doc = await transport.enroll("fleet", SECRET, public_key_of(key))
        store = fill_store(
            ExampleStore(
                store_dir / f"device-{i}.db" if store_dir else ":memory:",
                RetentionPolicy(max_count=None, max_age_s=None),
                fleet.clock,
                cache_kib=DISK_STORE_CACHE_KIB if store_dir else None,
            ),
            examples,
            heldout,
        )
        profile = draw_profile(config.profiles, rng)
        client = fleet.client(
            i,
            transport,
            DeviceIdentity(doc["device_id"], key),
            store,
            profile,
            i in attackers,
            held_out_split,
        )
        devices.append(Device(client, profile))
    return devices, attackers


async def _life(fleet: FleetParts, device: Device, index: int) -> None:
    """An eager device's days: check in whenever its window is open, again after each
    answer (at the server's retry time when told to come back later)."""
    vt, stats = fleet.vt, fleet.stats
    r = fleet.stream(index, 3)
    await vt.sleep(float(r.uniform(0, 1800)))
    lo, hi = fleet.config.profiles.check_interval_s
    while True:
        wait = device.profile.next_window(vt.now())
        if wait > 0:
            await vt.sleep(wait + float(r.uniform(0, 900)))
            continue
        try:
            result = await device.client.participate(lambda: device.profile.state(vt.now()), TASK)
            status = result.status
        except SimulatedDropout:
            result, status = None, "vanished"
        stats["participations"] += 1
        stats["outcomes"][status] = stats["outcomes"].get(status, 0) + 1
        if result is not None and result.status == "later" and result.retry_at:
            await vt.sleep(max(1.0, result.retry_at - vt.now()))
        else:
            await vt.sleep(float(r.uniform(lo, hi)))


async def simulate(
    config: SimulationConfig,
    bundle: Bundle,
    device_data: list | LazyPopulation,
    test: list[dict],
    out: Path,
    show_progress: bool = True,
    resume: ResumePoint | None = None,
    scorer=None,
) -> dict:
    """Run the fleet; returns the report document (also the caller writes it).

    device_data: per device, its (training, held-out) examples, or only its training
    examples; or a LazyPopulation, whose devices exist only while they take part
    (fleet/lazy_fleet.py). Devices train on the first and, asked for a federated
    evaluation, score the model on the second. test: the held-out sample the run's timeline scores with
    `scorer` (fleet.metrics.Scorer; default: the bundle's eval graph). With
    `resume`, the aggregator recovers the stopped run's task from `out/server` and the
    fleet goes on from its newest version: the same devices (profiles and data), new
    identities, error-feedback residuals and random streams."""
    rng = np.random.default_rng(config.seed)
    salt = [] if resume is None else [resume.version]  # fresh streams for a resumed run

    def stream(*parts) -> np.random.Generator:
        return np.random.default_rng([config.seed, *parts, *salt])

    clock = FakeClock(T0 if resume is None else resume.now)
    vt = VirtualTime(clock)
    server_cfg = ServerConfig(
        str(out / "server"),
        ADMIN,
        {"fleet": SECRET},
        rate_per_s=1e6,
        burst=10**6,
        tick_interval_s=0.05,
    )
    service = make_service(server_cfg, clock, stream())
    if resume is None:
        service.create_task(TASK, str(bundle.path), TaskSettings.from_json(config.task))
    runner = session = None
    url = None
    if config.transport == "http":
        runner = web.AppRunner(build_app(server_cfg, service))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
    stats = {
        "bytes_up": 0,
        "bytes_down": 0,
        "participations": 0,
        "outcomes": {},
        "dropped": {"vanished_training": 0, "vanished_upload": 0},
    }
    training = make_training(config, bundle, clock)
    fleet = FleetParts(config, bundle, clock, vt, service, training, stats, stream, url, session)
    lazy = isinstance(device_data, LazyPopulation)
    if lazy:
        from .lazy_fleet import LazyFleet

        population = LazyFleet(fleet, device_data)
        vt.spawn(population.arrivals)
        devices, attackers = [], range(0)
    else:
        devices, attackers = await _eager_devices(fleet, device_data, out, rng)
        for index, device in enumerate(devices):
            vt.spawn(lambda d=device, i=index: _life(fleet, d, i))

    score = scorer.score if scorer is not None else Evaluator(bundle).evaluate
    timeline: list[dict] = [] if resume is None else list(resume.timeline)
    progress_log = out / "timeline.jsonl"
    progress_log.write_text("".join(json.dumps(p) + "\n" for p in timeline))
    earlier_wall = timeline[-1]["wall_s"] if timeline else 0.0
    if timeline:  # the traffic counters go on from the last evaluation's
        stats["bytes_up"], stats["bytes_down"] = (
            timeline[-1]["bytes_up"],
            timeline[-1]["bytes_down"],
        )
    started = time.perf_counter() - earlier_wall
    cpu_started = time.process_time()  # this process's CPU (not a pool's or Ray's)
    bar = tqdm(
        total=config.max_versions,
        initial=service.current_version(TASK),
        desc="model versions",
        unit="v",
        disable=not show_progress,
    )
    seen = {"version": service.current_version(TASK)}

    def evaluate(version: int) -> None:
        metrics = score(service.current_parameters(TASK), test)
        timeline.append(
            {
                "version": version,
                "sim_hours": (vt.now() - T0) / 3600,
                "wall_s": time.perf_counter() - started,
                **{k: metrics[k] for k in TIMELINE_METRICS if k in metrics},
                "bytes_up": stats["bytes_up"],
                "bytes_down": stats["bytes_down"],
            }
        )
        shown = {k: f"{metrics[k]:.3f}" for k in ("accuracy", "mse") if k in metrics}
        bar.set_postfix(hours=f"{timeline[-1]['sim_hours']:.1f}", **shown, refresh=False)
        with progress_log.open("a") as f:  # a long run's history survives the run dying
            f.write(json.dumps(timeline[-1]) + "\n")

    if not timeline or timeline[-1]["version"] != service.current_version(TASK):
        evaluate(service.current_version(TASK))

    ticked = [float("-inf")]

    def on_advance(now: float) -> bool:
        # a lazy fleet's clock steps are dense (a thousand devices at once), and a tick
        # saves the coordinator's whole state: deadlines are met to the simulated second
        if config.transport == "inprocess" and (not lazy or now - ticked[0] >= LAZY_TICK_S):
            service.tick()
            ticked[0] = now
        if lazy:
            population.wake_if_wanted()
        version = service.current_version(TASK)
        if version != seen["version"]:
            bar.update(version - seen["version"])
            seen["version"] = version
            if version % config.eval_every == 0 or version >= config.max_versions:
                evaluate(version)
        return version >= config.max_versions

    training_info = {}
    try:
        await vt.run_until(T0 + config.hours * 3600, on_advance)
    finally:
        bar.close()
        await vt.shutdown()
        if hasattr(training, "describe"):
            training_info = training.describe()
        if hasattr(training, "close"):
            training.close()
        if session:
            await session.close()
        if runner:
            await runner.cleanup()
        for device in devices:
            device.client.store.close()
        if lazy:
            population.close()
    if timeline[-1]["version"] != service.current_version(TASK):
        evaluate(service.current_version(TASK))
    describe = service.describe(TASK)
    history = service.history(TASK)
    privacy = history["versions"][-1]["metrics"]
    version = service.current_version(TASK)
    final_parameters = {k: v.copy() for k, v in service.current_parameters(TASK).items()}
    service.close()
    return {
        "config": config.to_json(),
        "devices": device_data.size if lazy else len(devices),
        "attackers": population.attackers if lazy else len(attackers),
        **({"population": population.describe()} if lazy else {}),
        "sim_hours": (vt.now() - T0) / 3600,
        "wall_seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "versions": version,
        "timeline": timeline,
        "funnel": describe["funnel"],
        "client": stats,
        "privacy": {k: privacy[k] for k in ("epsilon", "delta") if k in privacy},
        "final": timeline[-1],
        # devices' own scores of versions on their held-out examples (eval_fraction)
        "federated_evaluation": history["federated_evaluation"],
        "training": {
            "backend": config.backend,
            "remote_trainings": getattr(training, "trainings", None),
            **training_info,
        },
        "final_parameters": final_parameters,
    }
