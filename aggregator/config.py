"""Task settings: frozen, validated when built, with messages that say how to fix them."""
from __future__ import annotations

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
class TaskSettings:
    mode: str = "sync"
    sync: SyncSettings = field(default_factory=SyncSettings)
    async_: AsyncSettings = field(default_factory=AsyncSettings)
    server_optimizer: str = "fedavg"
    server_lr: float = 1.0
    clip_norm: float | None = None
    reject_outlier_factor: float | None = None
    robust: dict | None = None
    dp: dict | None = None  # DPMean fields + population, target_delta, epsilon_budget
    eval_fraction: float = 0.0  # of devices not needed for training, the share sent to evaluate
    retry_min_s: float = 30.0
    retry_max_s: float = 300.0
    plan: dict = field(default_factory=lambda: {"epochs": 1, "batch_size": 16, "lr": 0.1})

    def __post_init__(self):
        if self.mode not in ("sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', got {self.mode!r}")
        if not 0 <= self.retry_min_s <= self.retry_max_s:
            raise ValueError("need 0 <= retry_min_s <= retry_max_s")
        if not 0 <= self.eval_fraction <= 1:
            raise ValueError(f"eval_fraction must be in [0, 1], got {self.eval_fraction}")
        if self.dp is not None:
            missing = {"clip_norm", "noise_multiplier", "population"} - set(self.dp)
            if missing:
                raise ValueError(f"dp settings need {sorted(missing)}")

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
        return cls(sync=sync, async_=async_, **doc)
