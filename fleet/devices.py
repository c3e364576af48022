"""The simulated device and what every device of a run shares: its pacing in simulated
time, the training wrappers (paced, poisoned), and `FleetParts`, which builds a device's
SDK client. The eager fleet (simulator.py) and the lazy one (lazy_fleet.py) both use it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.client import DeviceIdentity, FederatedClient, Pacer
from edge_sdk.clock import FakeClock
from edge_sdk.eligibility import (
    MinLocalExamples,
    Policy,
    RequireCharging,
    RequireIdle,
    RequireUnmetered,
)
from edge_sdk.example_store import ExampleStore
from edge_sdk.transport import RetryPolicy, Transport

from .config import SimulationConfig, pipeline_of
from .inprocess import InProcessTransport
from .population import DeviceProfile
from .virtual_time import VirtualTime

SECRET = "simulation-secret"
TASK = "fleet-task"
COLLECTION = "examples"
HELDOUT_COLLECTION = "heldout"  # a device's held-out examples: federated evaluation's


class SimulatedDropout(Exception):
    """The device vanished (app killed, out of range): it never reports back."""


class SimPacer(Pacer):
    def __init__(
        self,
        vt: VirtualTime,
        profile: DeviceProfile,
        config: SimulationConfig,
        rng: np.random.Generator,
        stats: dict,
    ):
        self.vt, self.profile, self.p, self.rng, self.stats = (
            vt,
            profile,
            config.profiles,
            rng,
            stats,
        )

    async def downloaded(self, nbytes: int) -> None:
        self.stats["bytes_down"] += nbytes
        await self.vt.sleep(nbytes / self.profile.download_bps)

    async def trained(self, examples: int, steps: int) -> None:
        # the training's simulated time was spent by PacedTraining, around the real work
        if self.rng.random() < self.p.drop_during_training:
            self.stats["dropped"]["vanished_training"] += 1
            raise SimulatedDropout("training")

    async def uploading(self, nbytes: int) -> None:
        await self.vt.sleep(nbytes / self.profile.upload_bps)
        if self.rng.random() < self.p.drop_during_upload:
            self.stats["dropped"]["vanished_upload"] += 1
            raise SimulatedDropout("upload")
        self.stats["bytes_up"] += nbytes


class PoisonedTraining:
    """A malicious device's training: trains honestly, then reports a scaled or
    sign-flipped delta (model poisoning, as in Bhagoji et al. 2019 and Fang et al. 2020)."""

    def __init__(self, inner, kind: str, scale: float):
        self.inner, self.kind, self.scale = inner, kind, scale

    async def train(self, params, examples, plan, check):
        result, delta = await self.inner.train(params, examples, plan, check)
        factor = np.float32(-self.scale if self.kind == "sign_flip" else self.scale)
        return result, {k: v * factor for k, v in delta.items()}


class PacedTraining:
    """One device's local training in simulated time: the device is busy for its steps at
    its own speed, and the real work runs meanwhile (inline, or on a worker while the
    clock runs on; the clock waits at the finish time if the worker is not done)."""

    def __init__(self, inner, vt: VirtualTime, seconds_per_step: float):
        self.inner, self.vt, self.seconds_per_step = inner, vt, seconds_per_step

    async def train(self, params, examples, plan, check):
        # the device's shuffled data, drawn once (a worker gets the same lists)
        epochs = [list(examples(epoch)) for epoch in range(plan.epochs)]
        steps = sum(-(-len(e) // plan.batch_size) for e in epochs)
        if plan.max_steps is not None:
            steps = min(steps, plan.max_steps)
        work = asyncio.ensure_future(
            self.inner.train(params, lambda e: iter(epochs[e]), plan, check)
        )
        await self.vt.sleep(steps * self.seconds_per_step, until=work)
        return work.result()


@dataclass
class Device:
    client: FederatedClient
    profile: DeviceProfile


@dataclass
class FleetParts:
    """What every simulated device of a run shares: its settings, the model, the clock,
    the aggregator (and its URL and HTTP session over HTTP), where training runs, the
    traffic counters and the run's random streams."""

    config: SimulationConfig
    bundle: Bundle
    clock: FakeClock
    vt: VirtualTime
    service: object  # aggregator.service.AggregatorService
    training: object  # a TrainingRunner
    stats: dict
    stream: object  # (*ints) -> np.random.Generator
    url: str | None
    session: aiohttp.ClientSession | None

    def __post_init__(self):
        self.policy = Policy(
            (RequireCharging(), RequireUnmetered(), RequireIdle(), MinLocalExamples(1))
        )
        self.pipeline = pipeline_of(self.config.codec)
        attackers = self.config.attackers
        self.poisoned = (
            None
            if not attackers
            else PoisonedTraining(
                self.training, attackers["kind"], float(attackers.get("scale", 10.0))
            )
        )

    def transport(self, i: int):
        if self.url:
            return Transport(
                self.url,
                self.session,
                retry=RetryPolicy(attempts=3, base_s=0.01, cap_s=0.1),
                rng=self.stream(i),
            )
        return InProcessTransport(self.service)

    def client(
        self,
        i: int,
        transport,
        identity: DeviceIdentity,
        store: ExampleStore,
        profile: DeviceProfile,
        attacker: bool,
        held_out_split: bool,
        visit: tuple[int, ...] = (),
    ) -> FederatedClient:
        """Device i's SDK client (`visit` keeps a returning lazy device's random streams
        fresh)."""
        config = self.config
        return FederatedClient(
            self.bundle,
            transport,
            store,
            identity,
            policy=self.policy,
            clock=self.clock,
            rng=self.stream(i, 1, *visit),
            collection=COLLECTION,
            pipeline=self.pipeline,
            pacer=SimPacer(self.vt, profile, config, self.stream(i, 2, *visit), self.stats),
            training=PacedTraining(
                self.poisoned if attacker else self.training,
                self.vt,
                config.profiles.step_time_s * profile.speed,
            ),
            eval_collection=HELDOUT_COLLECTION if held_out_split else None,
        )


def fill_store(store: ExampleStore, examples: list[dict], heldout: list[dict]) -> ExampleStore:
    store.add_many(COLLECTION, examples)
    if heldout:
        store.add_many(HELDOUT_COLLECTION, heldout)
    return store
