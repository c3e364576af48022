"""A lazy population in a simulation: devices that exist only while they take part.

An eager fleet (fleet/simulator.py) builds every device up front, enrolls it, and runs
its days as a task that checks in whenever its window is open. At a million devices
that is a million clients, stores and tasks, and, with the server answering "come back
later" to all but the thousand it selects, hundreds of thousands of check-ins per round.

Here the population's check-ins are one stream instead: each device checks in as a
Poisson process of rate 1 / mean(check_interval_s) while its window is open, so the
population's check-ins arrive at rate size / mean(check_interval_s), each from a device
drawn uniformly; arrivals from a device outside its window or already taking part are
dropped (thinning, Lewis and Shedler 1979), which is where the device's own eligibility
check would have stopped it. Only while the server accepts devices (a sync round
selecting, async with free places) do arrivals run: device i is then built from the
population (profile, data sub-split), enrolled with the aggregator on its first visit,
runs the real edge_sdk client's participation against the real aggregator, and is
dropped again. While the server accepts no one the stream is parked, and the check-ins
it would have answered "later" are not made: by the memorylessness of the Poisson
process, resuming the stream when selection reopens gives the same arrivals in law.

A returning device keeps its enrollment (identity and token) and nothing else: its
example store (and with it the error-feedback residual and participation history) is
rebuilt from its data on each visit, as on a phone that cleared the app's data; at 1,000
of 1,000,000 devices per round a device takes part about once in a thousand rounds.
Federated evaluation assigns spare devices evaluations instead of "later", so a lazy
population refuses it (SimulationConfig checks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aggregator.config import TaskSettings
from edge_sdk.client import DeviceIdentity
from edge_sdk.example_store import ExampleStore, RetentionPolicy
from edge_sdk.protocol import generate_signing_key, public_key_of

from .devices import SECRET, TASK, FleetParts, SimulatedDropout, fill_store
from .lazy_population import LazyPopulation, mean_check_interval

__all__ = ["LazyFleet"]

ARRIVALS = 0xA221  # the arrival stream's part of the run's random streams
BATCH = 256  # arrivals drawn (and thinned) at once
POLL_S = 60.0  # a parked stream looks again this often (deadlines change what the server wants)


@dataclass
class Enrolled:
    transport: object
    identity: DeviceIdentity
    visits: int = 0


class LazyFleet:
    def __init__(self, fleet: FleetParts, population: LazyPopulation):
        self.fleet, self.population = fleet, population
        self.rng = fleet.stream(ARRIVALS)
        self.rate = population.size / mean_check_interval(fleet.config.profiles)
        settings = TaskSettings.from_json(fleet.config.task)
        self.places = (
            settings.async_.concurrency
            if settings.mode == "async"
            else int(np.ceil(settings.sync.goal * settings.sync.overselect))
        )
        self.enrolled: dict[int, Enrolled] = {}  # devices that ever checked in
        self.busy: set[int] = set()  # devices taking part now
        self.arrivals_drawn = self.visits = self.attackers = self.peak_busy = 0

    def accepting(self) -> bool:
        """Whether a check-in now could be given work (the server's own state, asked)."""
        d = self.fleet.service.describe(TASK)
        if d["paused"]:
            return False
        if d["mode"] == "async":
            return d["in_flight"] < self.places
        return d["phase"] == "selecting" and d["in_flight"] < self.places

    def wake_if_wanted(self) -> None:
        if self.fleet.vt.parked and self.accepting():
            self.fleet.vt.wake_parked()

    async def arrivals(self) -> None:
        vt, population = self.fleet.vt, self.population
        while True:
            if not self.accepting():
                await vt.park(POLL_S)
                continue
            times = vt.now() + np.cumsum(self.rng.exponential(1.0 / self.rate, BATCH))
            index = self.rng.integers(population.size, size=BATCH)
            self.arrivals_drawn += BATCH
            available = population.available(index, times)
            stopped = False
            for when, i in zip(times[available], index[available].tolist()):
                await vt.sleep(when - vt.now())
                if not self.accepting():
                    stopped = True
                    break
                if i not in self.busy:
                    self.busy.add(i)
                    self.peak_busy = max(self.peak_busy, len(self.busy))
                    vt.spawn(lambda i=i: self.visit(i))
            if not stopped:
                await vt.sleep(times[-1] - vt.now())

    async def visit(self, i: int) -> None:
        """Device i, built from the population, takes part once and is dropped."""
        fleet, population = self.fleet, self.population
        store = None
        try:
            known = self.enrolled.get(i)
            if known is None:
                key = generate_signing_key()
                transport = fleet.transport(i)
                doc = await transport.enroll("fleet", SECRET, public_key_of(key))
                known = self.enrolled[i] = Enrolled(
                    transport, DeviceIdentity(doc["device_id"], key)
                )
                self.attackers += population.is_attacker(i)
            known.visits += 1
            self.visits += 1
            examples, _ = population.examples(i)
            profile = population.profile(i)
            store = fill_store(
                ExampleStore(
                    ":memory:", RetentionPolicy(max_count=None, max_age_s=None), fleet.clock
                ),
                examples,
                [],
            )
            client = fleet.client(
                i,
                known.transport,
                known.identity,
                store,
                profile,
                population.is_attacker(i),
                held_out_split=False,
                visit=(known.visits,),
            )
            try:
                result = await client.participate(lambda: profile.state(fleet.vt.now()), TASK)
                status = result.status
            except SimulatedDropout:
                status = "vanished"
            stats = fleet.stats
            stats["participations"] += 1
            stats["outcomes"][status] = stats["outcomes"].get(status, 0) + 1
        finally:
            if store is not None:
                store.close()
            self.busy.discard(i)
        self.wake_if_wanted()

    def describe(self) -> dict:
        return {
            "kind": "lazy",
            "size": self.population.size,
            "enrolled": len(self.enrolled),
            "visits": self.visits,
            "peak_busy": self.peak_busy,
            "arrivals_drawn": self.arrivals_drawn,
            "check_ins_per_s": self.rate,
        }

    def close(self) -> None:
        self.busy.clear()
