"""Central differential privacy: DP-FedAvg (McMahan et al. 2018, "Learning Differentially
Private Recurrent Language Models") with fixed or adaptive clipping (Andrew et al. 2021,
"Differentially Private Learning with Adaptive Clipping"), and the privacy accountant.

Each update is clipped to norm C and counted with weight 1; the sum gets Gaussian noise
of standard deviation z * C and is divided by the expected number of updates per round
(a fixed denominator, so one device's presence changes the output by at most C / n).

Accounting (dp-accounting's RDP accountant): every published version is one Poisson-
subsampled Gaussian mechanism with noise multiplier z and sampling rate q. Sync rounds:
q = goal / population (devices sampled for a round are assumed a uniform random subset).
Buffered async: q = buffer_size / population per flush (each device assumed equally
likely to land in any buffer, and to contribute at most once per buffer). Both are
assumptions about the fleet's check-in process, stated in the report, not enforced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .numerics import Delta, add_scaled, clip_scale, global_norm
from .stages import Accumulator


@dataclass
class DPMean:
    """A stage (stateful across rounds when adaptive): clip, sum, noise, fixed denominator."""

    clip_norm: float
    noise_multiplier: float
    expected_count: int
    rng: np.random.Generator
    adaptive_quantile: float | None = None  # e.g. 0.5: track the median update norm
    adaptive_lr: float = 0.2
    count_noise: float = 0.0  # std of the noise on the unclipped count (Andrew et al. 2021)

    def __post_init__(self):
        if self.clip_norm <= 0 or self.noise_multiplier < 0 or self.expected_count < 1:
            raise ValueError("need clip_norm > 0, noise_multiplier >= 0, expected_count >= 1")
        if self.adaptive_quantile is not None and not 0 < self.adaptive_quantile < 1:
            raise ValueError("adaptive_quantile must be in (0, 1)")

    def start(self) -> Accumulator:
        return _DPAccumulator(self)

    def state(self) -> dict:
        return {"clip_norm": self.clip_norm}

    def load_state(self, state: dict) -> None:
        self.clip_norm = float(state.get("clip_norm", self.clip_norm))


class _DPAccumulator:
    def __init__(self, stage: DPMean):
        self.stage, self.clip = stage, stage.clip_norm
        self.sums: dict[str, np.ndarray] = {}
        self.count = 0
        self.unclipped = 0

    def add(self, delta: Delta, weight: float) -> dict:
        norm = global_norm(delta)
        scale = clip_scale(norm, self.clip)
        self.unclipped += scale == 1.0
        for k, v in delta.items():
            if k not in self.sums:
                self.sums[k] = np.zeros(v.shape, np.float64)
            add_scaled(self.sums[k], v, scale)
        self.count += 1
        return {"norm": norm, "clipped": scale < 1.0}

    def result(self) -> tuple[Delta, dict]:
        s, rng = self.stage, self.stage.rng
        std = s.noise_multiplier * self.clip
        mean = {
            k: ((v + rng.normal(0.0, std, v.shape)) / s.expected_count).astype(np.float32)
            for k, v in self.sums.items()
        }
        measurements = {
            "updates": self.count,
            "dp": {"clip_norm": self.clip, "noise_std": std, "unclipped": self.unclipped},
        }
        if s.adaptive_quantile is not None and self.count:
            noisy = (self.unclipped + rng.normal(0.0, s.count_noise)) / max(1, self.count)
            # geometric update towards the target quantile of update norms
            s.clip_norm = self.clip * math.exp(-s.adaptive_lr * (noisy - s.adaptive_quantile))
            measurements["dp"]["next_clip_norm"] = s.clip_norm
        return mean, measurements


class PrivacyAccountant:
    """(epsilon, delta) after n published versions of a Poisson-subsampled Gaussian."""

    def __init__(self, noise_multiplier: float, sampling_rate: float, target_delta: float):
        if not 0 < sampling_rate <= 1:
            raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate}")
        if noise_multiplier <= 0 or not 0 < target_delta < 1:
            raise ValueError("need noise_multiplier > 0 and 0 < target_delta < 1")
        self.noise_multiplier, self.sampling_rate = noise_multiplier, sampling_rate
        self.target_delta = target_delta

    def epsilon(self, versions: int) -> float:
        if versions == 0:
            return 0.0
        # imported here: dp_accounting pulls in scipy, seconds of start-up for every server
        from dp_accounting import dp_event, rdp

        accountant = rdp.RdpAccountant()
        event = dp_event.PoissonSampledDpEvent(
            self.sampling_rate, dp_event.GaussianDpEvent(self.noise_multiplier)
        )
        accountant.compose(event, versions)
        return float(accountant.get_epsilon(self.target_delta))
