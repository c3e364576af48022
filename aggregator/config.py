"""Task settings: frozen, validated when built, with messages that say how to fix them."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .numerics import STALENESS


@dataclass(frozen=True)
class SyncSettings:
    """Synchronous rounds after Bonawitz et al. 2019: select goal x overselect devices,
    commit once `goal` report, or at the deadline with at least min_fraction x goal."""

    goal: int = 10
    overselect: float = 1.3
    selection_timeout_s: float = 120.0
    report_deadline_s: float = 600.0
    min_fraction: float = 0.7

    def __post_init__(self):
        if self.goal < 1:
            raise ValueError(f"goal must be >= 1, got {self.goal}")
        if self.overselect < 1:
            raise ValueError(f"overselect must be >= 1 (1.3 = 30% extra), got {self.overselect}")
        if not 0 < self.min_fraction <= 1:
            raise ValueError(f"min_fraction must be in (0, 1], got {self.min_fraction}")
        if self.selection_timeout_s <= 0 or self.report_deadline_s <= 0:
            raise ValueError("selection_timeout_s and report_deadline_s must be > 0")


@dataclass(frozen=True)
class AsyncSettings:
    """Buffered asynchronous aggregation after FedBuff (Nguyen et al. 2022)."""

    concurrency: int = 20
    buffer_size: int = 10
    max_staleness: int = 10
    staleness: str = "polynomial"
    report_deadline_s: float = 600.0

    def __post_init__(self):
        if self.concurrency < 1 or self.buffer_size < 1:
            raise ValueError("concurrency and buffer_size must be >= 1")
        if self.max_staleness < 0:
            raise ValueError("max_staleness must be >= 0")
        if self.staleness not in STALENESS:
            raise ValueError(f"staleness must be one of {sorted(STALENESS)}, got {self.staleness!r}")


@dataclass(frozen=True)
class SecAggSettings:
    """Secure aggregation of sync rounds (Bonawitz et al. 2017). Each device sends the
    fixed-point vector [w * delta, w] with w = min(examples, max_examples) / max_examples
    (so the server learns the weighted sum and the total weight, nothing per device);
    coordinates are clipped to +-clip, quantized with 2^-frac_bits steps, and summed
    mod 2^32, so n * clip * 2^frac_bits must stay below 2^31. A phase that is not
    complete `phase_timeout_s` after it opened goes on with those who answered, if at
    least threshold_fraction of the group did (Shamir threshold)."""

    threshold_fraction: float = 0.6
    clip: float = 1.0
    frac_bits: int = 20
    max_examples: int = 100
    phase_timeout_s: float = 120.0

    def __post_init__(self):
        if not 0.5 < self.threshold_fraction <= 1:
            raise ValueError("threshold_fraction must be in (0.5, 1]: below half, two disjoint "
                             "sets of devices could each unmask")
        if not self.clip > 0 or not 4 <= self.frac_bits <= 24:
            raise ValueError("clip must be > 0 and frac_bits in 4..24")
        if self.max_examples < 1 or self.phase_timeout_s <= 0:
            raise ValueError("max_examples must be >= 1 and phase_timeout_s > 0")

    def max_devices(self) -> int:
        """The largest group whose sum cannot wrap around 2^32."""
        return int(2**31 // (self.clip * 2**self.frac_bits))


@dataclass(frozen=True)
class TaskSettings:
    mode: str = "sync"
    sync: SyncSettings = field(default_factory=SyncSettings)
    async_: AsyncSettings = field(default_factory=AsyncSettings)
    server_optimizer: str = "fedavg"
    server_lr: float = 1.0
    # step decay: {"at": [500, 900], "factor": 0.3} multiplies server_lr by 0.3 for the
    # steps from version 500 on and again from 900 on (a plateau's noise floor drops)
    server_lr_decay: dict | None = None
    clip_norm: float | None = None
    reject_outlier_factor: float | None = None
    robust: dict | None = None
    dp: dict | None = None  # DPMean fields + population, target_delta, epsilon_budget
    secagg: SecAggSettings | None = None
    eval_fraction: float = 0.0  # of devices not needed for training, the share sent to evaluate
    retry_min_s: float = 30.0
    retry_max_s: float = 300.0
    plan: dict = field(default_factory=lambda: {"epochs": 1, "batch_size": 16, "lr": 0.1})
    # an update whose decoded L2 norm (or any quantization chunk's scale) exceeds this is
    # refused (400 update_norm_exceeded); None turns the bound off
    max_update_norm: float | None = 100.0
    # the weight of an update is min(its num_examples, max_examples)
    max_examples: int = 10_000

    def __post_init__(self):
        norm = self.max_update_norm
        if norm is not None and (not isinstance(norm, (int, float)) or isinstance(norm, bool)
                                 or not 0 < norm <= 1e12):
            raise ValueError(f"max_update_norm must be a number in (0, 1e12] or null (no "
                             f"bound), got {norm!r}")
        if not isinstance(self.max_examples, int) or isinstance(self.max_examples, bool) \
                or not 1 <= self.max_examples <= 2**31:
            raise ValueError(f"max_examples must be an integer in 1..2^31, got "
                             f"{self.max_examples!r}")
        if self.mode not in ("sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', got {self.mode!r}")
        if self.secagg is not None:
            if self.mode != "sync":
                raise ValueError("secure aggregation runs in sync rounds (mode 'sync'); see "
                                 "docs/aggregator.md for async")
            if self.clip_norm or self.robust or self.dp or self.reject_outlier_factor:
                raise ValueError("with secagg the server sees only the sum: per-update clipping, "
                                 "outlier rejection, robust statistics and central DP need "
                                 "individual updates; clip on the device instead")
            group = math.ceil(self.sync.goal * self.sync.overselect)
            if group > self.secagg.max_devices():
                raise ValueError(f"a secagg group of up to {group} devices could overflow "
                                 f"2^32 with clip {self.secagg.clip} and frac_bits "
                                 f"{self.secagg.frac_bits}; lower one of them")
        if not 0 <= self.retry_min_s <= self.retry_max_s:
            raise ValueError("need 0 <= retry_min_s <= retry_max_s")
        if not 0 <= self.eval_fraction <= 1:
            raise ValueError(f"eval_fraction must be in [0, 1], got {self.eval_fraction}")
        if self.server_lr_decay is not None:
            at, factor = self.server_lr_decay.get("at"), self.server_lr_decay.get("factor")
            if set(self.server_lr_decay) != {"at", "factor"} or not isinstance(at, list) or not at \
                    or any(not isinstance(v, int) or v < 1 for v in at) or at != sorted(set(at)) \
                    or not isinstance(factor, (int, float)) or not 0 < factor < 1:
                raise ValueError('server_lr_decay must be {"at": [increasing versions >= 1], '
                                 '"factor": a number in (0, 1)}')
        if self.dp is not None:
            missing = {"clip_norm", "noise_multiplier", "population"} - set(self.dp)
            if missing:
                raise ValueError(f"dp settings need {sorted(missing)}")

    def server_lr_at(self, version: int) -> float:
        """The server learning rate of the step from `version` to `version + 1`."""
        if self.server_lr_decay is None:
            return self.server_lr
        passed = sum(version >= v for v in self.server_lr_decay["at"])
        return self.server_lr * self.server_lr_decay["factor"] ** passed

    def aggregation(self):
        from .stages import AggregationConfig
        dp = None
        if self.dp is not None:
            expected = self.sync.goal if self.mode == "sync" else self.async_.buffer_size
            dp = {"expected_count": expected} | self.dp
        return AggregationConfig(self.clip_norm, self.reject_outlier_factor, self.robust, dp)

    def sampling_rate(self) -> float:
        """Per-version sampling rate for the accountant (see aggregator.privacy)."""
        per_version = self.sync.goal if self.mode == "sync" else self.async_.buffer_size
        return min(1.0, per_version / self.dp["population"])

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> TaskSettings:
        doc = dict(doc)
        sync = SyncSettings(**doc.pop("sync", {}))
        async_ = AsyncSettings(**doc.pop("async_", doc.pop("async", {})))
        secagg = doc.pop("secagg", None)
        secagg = SecAggSettings(**secagg) if isinstance(secagg, dict) else secagg
        return cls(sync=sync, async_=async_, secagg=secagg, **doc)
