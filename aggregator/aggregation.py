"""The composition root of the aggregation stack: a task's settings become one stack of
stages (stages.py, robust.py, privacy.py), assembled here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass

from .privacy import DPMean
from .robust import ROBUST_STAGES, RejectOutliers
from .stages import Clip, Stage, WeightedMean


@dataclass(frozen=True)
class AggregationConfig:
    """The per-task aggregation stack, validated when built.

    robust: {"kind": "trimmed_mean", "trim": 0.1, "buffer": 50} or {"kind": "median",
    "buffer": 50}; dp: DP-FedAvg settings (aggregator.privacy.DPMean's fields but rng);
    robust and dp exclude each other (the DP analysis assumes the clipped mean).
    """

    clip_norm: float | None = None
    reject_outlier_factor: float | None = None
    robust: dict | None = None
    dp: dict | None = None

    def __post_init__(self):
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 or None, got {self.clip_norm}")
        if self.robust is not None and self.dp is not None:
            raise ValueError("choose robust aggregation or central DP, not both")
        if self.robust is not None and self.robust.get("kind") not in ROBUST_STAGES:
            raise ValueError(f"robust.kind must be one of {sorted(ROBUST_STAGES)}")


def build_aggregation(config: AggregationConfig, rng=None) -> Stage:
    """The composition root of the aggregation stack:
    [Clip] -> [RejectOutliers] -> WeightedMean | TrimmedMean | CoordinateMedian | DPMean."""
    stage: Stage
    if config.dp is not None:
        if rng is None:
            raise ValueError("central DP needs a random generator for its noise")
        dp = {
            k: v
            for k, v in config.dp.items()
            if k
            in (
                "clip_norm",
                "noise_multiplier",
                "expected_count",
                "adaptive_quantile",
                "adaptive_lr",
                "count_noise",
            )
        }
        stage = DPMean(rng=rng, **dp)
    elif config.robust is not None:
        options = {k: v for k, v in config.robust.items() if k != "kind"}
        stage = ROBUST_STAGES[config.robust["kind"]](**options)
    else:
        stage = WeightedMean()
    if config.reject_outlier_factor is not None:
        stage = RejectOutliers(config.reject_outlier_factor, stage)
    if config.clip_norm is not None:
        stage = Clip(config.clip_norm, stage)
    return stage
