"""Device-state snapshots for tests: a phone that may train (charging, idle, unmetered,
cool, with room), and the same with any field changed."""

from __future__ import annotations

from datetime import datetime

from edge_sdk.eligibility import DeviceState


def good_state(**overrides) -> DeviceState:
    """A phone at 03:00 that every default eligibility rule allows; `overrides` replace
    fields (e.g. `charging=False`)."""
    base = dict(
        charging=True,
        battery_level=0.9,
        network="unmetered",
        idle=True,
        thermal="nominal",
        free_storage_bytes=2**30,
        local_time=datetime(2026, 1, 1, 3),
    )
    return DeviceState(**(base | overrides))
