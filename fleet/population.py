"""Devices of the simulated fleet: whose data each holds, and how it behaves.

Data comes from the dataset's users (fleet/datasets). A population no larger than the
users gives each device one user (the largest users first); a larger one gives devices
sub-splits of users' data (round-robin over a user's sentences), which the report says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from edge_sdk.eligibility import DeviceState

from .config import ProfileSettings


@dataclass(frozen=True)
class DeviceProfile:
    tz_offset_h: float
    window_start_h: float
    window_length_h: float
    speed: float  # >1: slower than median
    upload_bps: float
    download_bps: float

    def available(self, now: float) -> bool:
        local_h = ((now / 3600.0) + self.tz_offset_h) % 24.0
        return (local_h - self.window_start_h) % 24.0 < self.window_length_h

    def next_window(self, now: float) -> float:
        """Seconds until the next availability window opens (0 if open now)."""
        if self.available(now):
            return 0.0
        local_h = ((now / 3600.0) + self.tz_offset_h) % 24.0
        return ((self.window_start_h - local_h) % 24.0) * 3600.0

    def state(self, now: float) -> DeviceState:
        on = self.available(now)
        local = datetime.fromtimestamp(now + self.tz_offset_h * 3600, tz=timezone.utc)
        return DeviceState(
            charging=on,
            battery_level=0.9 if on else 0.6,
            network="unmetered" if on else "metered",
            idle=on,
            thermal="nominal",
            free_storage_bytes=2**32,
            local_time=local.replace(tzinfo=None),
        )


def draw_profile(settings: ProfileSettings, rng: np.random.Generator) -> DeviceProfile:
    lo, hi = settings.window_length_h
    up_lo, up_hi = settings.upload_mbps
    down_lo, down_hi = settings.download_mbps
    return DeviceProfile(
        tz_offset_h=float(rng.uniform(-3, 3)),
        window_start_h=float(
            rng.normal(settings.window_start_h_mean, settings.window_start_h_std) % 24
        ),
        window_length_h=float(rng.uniform(lo, hi)),
        speed=float(rng.lognormal(0.0, settings.speed_sigma)),
        upload_bps=float(math.exp(rng.uniform(math.log(up_lo), math.log(up_hi)))) * 1e6 / 8,
        download_bps=float(math.exp(rng.uniform(math.log(down_lo), math.log(down_hi)))) * 1e6 / 8,
    )


def assign_data(user_examples: list[list[dict]], devices: int) -> list[list[dict]]:
    """Device i's examples: one user each (largest users first), or, with more devices
    than users, sub-splits: each extra device goes to the user with the most examples per
    device so far (a user is never split below one example per device). Only when the
    devices outnumber the examples themselves do devices share data (round-robin)."""
    import heapq

    order = sorted(range(len(user_examples)), key=lambda u: -len(user_examples[u]))
    order = [u for u in order if user_examples[u]]
    if devices <= len(order):
        return [user_examples[u] for u in order[:devices]]
    parts = {u: 1 for u in order}
    heap = [(-len(user_examples[u]), u) for u in order if len(user_examples[u]) > 1]
    heapq.heapify(heap)
    extra = devices - len(order)
    while extra and heap:
        _, u = heapq.heappop(heap)
        parts[u] += 1
        extra -= 1
        if parts[u] < len(user_examples[u]):
            heapq.heappush(heap, (-len(user_examples[u]) / parts[u], u))
    out = [user_examples[u][k :: parts[u]] for u in order for k in range(parts[u])]
    shared = 0
    while len(out) < devices:  # more devices than examples: share round-robin
        out.append(out[shared % len(order)])
        shared += 1
    return out
