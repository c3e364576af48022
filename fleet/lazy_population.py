"""A population of any size whose devices exist only when drawn: device i's profile and
availability are a pure function of (seed, i), and its data a deterministic sub-split of
the dataset's natural users, so a million-device population costs a few arrays of one
entry per *user*, never an object per device.

Profiles come from a counter-based generator (SplitMix64, Steele et al. 2014, over seed,
field and device index): each field of device i is one hash, so any device, or a batch of
them, is drawn in O(1) without drawing the ones before it. The distributions are those of
fleet.population.draw_profile.

Data: every user holds at least one device, and the remaining devices are apportioned to
users in proportion to their training examples (largest remainders, ties to the lower
user index), a user never split below one example per device while another has room. Device k of a user with P parts holds the user's examples k, k + P, k + 2P...
(round-robin, as fleet.population.assign_data deals them); a user split into more parts
than it has examples gives each part one example, shared round-robin.
"""

from __future__ import annotations

import numpy as np

from .config import ProfileSettings
from .population import DeviceProfile

__all__ = ["LazyPopulation", "uniform_of"]

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_FIELDS = (
    "tz",
    "window_start_a",
    "window_start_b",
    "window_length",
    "speed_a",
    "speed_b",
    "upload",
    "download",
    "attacker",
)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer over uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniform_of(seed: int, field: str, index: np.ndarray) -> np.ndarray:
    """U[0, 1) per device index (int array, not mutated), float64, same shape: a function
    of (seed, field, index) only."""
    key = hash_key(seed, _FIELDS.index(field))
    with np.errstate(over="ignore"):
        x = _mix(np.asarray(index, dtype=np.uint64) * np.uint64(_GOLDEN) + np.uint64(key))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def hash_key(seed: int, field: int) -> int:
    with np.errstate(over="ignore"):
        key = _mix(np.array([(seed & _MASK)], dtype=np.uint64))
        key = _mix(key ^ np.uint64((field + 1) * _GOLDEN & _MASK))
    return int(key[0])


def _normal(seed: int, a: str, b: str, index: np.ndarray) -> np.ndarray:
    """Standard normal by Box-Muller from two independent uniforms."""
    u1 = 1.0 - uniform_of(seed, a, index)  # (0, 1]: log is finite
    u2 = uniform_of(seed, b, index)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


class LazyPopulation:
    """`size` devices over `users` (training examples per user; `heldout` the users'
    held-out examples, same order). Nothing here grows with `size`."""

    def __init__(
        self,
        size: int,
        users: list[list[dict]],
        settings: ProfileSettings,
        seed: int,
        heldout: list[list[dict]] | None = None,
        attacker_fraction: float = 0.0,
    ):
        if size < 1:
            raise ValueError("a population needs at least one device")
        self.size, self.settings, self.seed = size, settings, seed
        self.attacker_fraction = attacker_fraction
        order = [u for u in sorted(range(len(users)), key=lambda u: -len(users[u])) if users[u]]
        if not order:
            raise ValueError("no user holds any training example")
        self._users, self._heldout = users, heldout
        sizes = np.array([len(users[u]) for u in order], dtype=np.int64)
        if size <= len(order):  # one user each, the largest first (as assign_data)
            self.user_of_part = np.array(order[:size], dtype=np.int64)
            self.parts = np.ones(size, dtype=np.int64)
        else:
            self.user_of_part = np.array(order, dtype=np.int64)
            self.parts = split_users(size, sizes)
        self._ends = np.cumsum(self.parts)  # device i belongs to the first user whose end > i

    # -- data ----------------------------------------------------------------------------
    def locate(self, i: int) -> tuple[int, int, int]:
        """Device i's (user index in `users`, part k, parts P of that user)."""
        self._check(i)
        slot = int(np.searchsorted(self._ends, i, side="right"))
        start = int(self._ends[slot] - self.parts[slot])
        return int(self.user_of_part[slot]), i - start, int(self.parts[slot])

    def examples(self, i: int) -> tuple[list[dict], list[dict]]:
        """Device i's (training, held-out) examples: new lists of the dataset's examples."""
        user, k, parts = self.locate(i)
        train = self._users[user]
        step = min(parts, len(train))
        held = self._heldout[user] if self._heldout is not None else []
        return train[k % step :: step], held[k::parts] if held else []

    # -- profiles ------------------------------------------------------------------------
    def profile_arrays(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """DeviceProfile fields for a batch of device indices (int array), float64 each."""
        s, seed = self.settings, self.seed
        lo, hi = s.window_length_h
        up, down = (np.log(s.upload_mbps), np.log(s.download_mbps))
        return {
            "tz_offset_h": -3.0 + 6.0 * uniform_of(seed, "tz", index),
            "window_start_h": (
                s.window_start_h_mean
                + s.window_start_h_std * _normal(seed, "window_start_a", "window_start_b", index)
            )
            % 24.0,
            "window_length_h": lo + (hi - lo) * uniform_of(seed, "window_length", index),
            "speed": np.exp(s.speed_sigma * _normal(seed, "speed_a", "speed_b", index)),
            "upload_bps": np.exp(up[0] + (up[1] - up[0]) * uniform_of(seed, "upload", index))
            * 1e6
            / 8,
            "download_bps": np.exp(
                down[0] + (down[1] - down[0]) * uniform_of(seed, "download", index)
            )
            * 1e6
            / 8,
        }

    def profile(self, i: int) -> DeviceProfile:
        self._check(i)
        arrays = self.profile_arrays(np.array([i]))
        return DeviceProfile(**{k: float(v[0]) for k, v in arrays.items()})

    def available(self, index: np.ndarray, now: np.ndarray | float) -> np.ndarray:
        """Whether each device is in its window at `now` (a time per device, or one time):
        DeviceProfile.available, vectorized."""
        p = self.profile_arrays(index)
        local_h = (np.asarray(now) / 3600.0 + p["tz_offset_h"]) % 24.0
        return (local_h - p["window_start_h"]) % 24.0 < p["window_length_h"]

    def is_attacker(self, i: int) -> bool:
        return bool(uniform_of(self.seed, "attacker", np.array([i]))[0] < self.attacker_fraction)

    def _check(self, i: int) -> None:
        if not 0 <= i < self.size:
            raise IndexError(f"device {i} is outside the population of {self.size}")


def split_users(devices: int, sizes: np.ndarray) -> np.ndarray:
    """Devices per user (int64, >= 1 each, summing to `devices` >= len(sizes)) in
    proportion to the users' examples `sizes` (not mutated), no user split below one
    example per device until every example has a device of its own."""
    total = int(sizes.sum())
    if devices >= total:  # every example a device, the rest shared in proportion
        return sizes + apportion(devices - total, sizes)
    parts = np.ones(len(sizes), dtype=np.int64)
    left = devices - len(sizes)
    while left:  # each pass places >= 1 device: every unit goes to a user with room
        room = sizes - parts
        add = np.minimum(apportion(left, np.where(room > 0, sizes, 0)), room)
        parts += add
        left -= int(add.sum())
    return parts


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """`total` split in proportion to `weights` (int64, positive; not mutated) by largest
    remainders (Hamilton's method); ties go to the lower index. Sums to `total`."""
    quota = total * weights.astype(np.float64) / float(weights.sum())
    base = np.floor(quota).astype(np.int64)
    left = total - int(base.sum())
    if left:
        order = np.argsort(-(quota - base), kind="stable")
        base[order[:left]] += 1
    return base


def mean_check_interval(settings: ProfileSettings) -> float:
    lo, hi = settings.check_interval_s
    return (lo + hi) / 2.0
