"""Task settings: frozen, typed, nested dataclasses validated when built, with messages
that say how to fix a value.

Built from JSON (the admin API, the store) with `TaskSettings.from_json`, which refuses
unknown keys with their path and the nearest valid name (`settings.plan.epochz: unknown
key; did you mean 'epochs'?`), wrong types (no bool for an int, finite numbers only) and,
through each class's `__post_init__`, values out of range. Names are checked against
their registries (server optimizers, staleness functions, robust stages), and a
TaskSettings that was built can always be built into its aggregation stack and server
optimizer: a bad setting fails when the task is created, never at its first commit.
The reference table of every field is in docs/aggregator.md (`python -m
aggregator.config` prints it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from edge_sdk.protocol.messages import BUFFER_POLICIES, BufferPolicy
from edge_sdk.protocol.typedjson import Checks, decode_value, encode_value

from .numerics import STALENESS
from .robust import ROBUST_STAGES
from .server_optimizers import SERVER_OPTIMIZERS

# the enumerations, from their registries (one place names them)
Mode = Literal["sync", "async"]
StalenessName = Literal[tuple(STALENESS)]  # type: ignore[valid-type]
RobustKind = Literal[tuple(ROBUST_STAGES)]  # type: ignore[valid-type]
ServerOptimizerName = Literal[tuple(SERVER_OPTIMIZERS)]  # type: ignore[valid-type]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite_and(check: Checks, settings, name: str, ok: Callable[[float], bool], must: str) -> bool:
    """Refuse field `name` unless it is a finite number for which `ok` holds; the message
    is `must` followed by the value given."""
    value = getattr(settings, name)
    return check.require(_finite(value) and ok(value), name, f"{must}, got {value!r}")


def _positive(check: Checks, settings, *names: str) -> None:
    for name in names:
        _finite_and(check, settings, name, lambda v: v > 0, "must be a finite number > 0")


def _at_least(check: Checks, settings, minimum: int, *names: str) -> bool:
    """Whether every one of `names` is an integer >= minimum (each that is not refused)."""
    fine = True
    for name in names:
        value = getattr(settings, name)
        fine &= check.require(
            isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
            name,
            f"must be an integer >= {minimum}, got {value!r}",
        )
    return fine


class _Settings:
    """JSON in and out, for every settings class (see edge_sdk.protocol.typedjson)."""

    def to_json(self) -> dict:
        return encode_value(self)

    @classmethod
    def from_json(cls, doc: dict, path: str = ""):
        return decode_value(cls, doc, path)


@dataclass(frozen=True)
class SyncSettings(_Settings):
    """Synchronous rounds after Bonawitz et al. 2019: select goal x overselect devices,
    commit once `goal` report, or at the deadline with at least min_fraction x goal."""

    goal: int = 10
    overselect: float = 1.3
    selection_timeout_s: float = 120.0
    report_deadline_s: float = 600.0
    min_fraction: float = 0.7

    def __post_init__(self):
        with Checks(self) as check:
            _at_least(check, self, 1, "goal")
            _finite_and(
                check, self, "overselect", lambda v: v >= 1, "must be >= 1 (1.3 = 30% extra)"
            )
            _finite_and(check, self, "min_fraction", lambda v: 0 < v <= 1, "must be in (0, 1]")
            _positive(check, self, "selection_timeout_s", "report_deadline_s")


@dataclass(frozen=True)
class AsyncSettings(_Settings):
    """Buffered asynchronous aggregation after FedBuff (Nguyen et al. 2022)."""

    concurrency: int = 20
    buffer_size: int = 10
    max_staleness: int = 10
    staleness: StalenessName = "polynomial"
    report_deadline_s: float = 600.0

    def __post_init__(self):
        with Checks(self) as check:
            _at_least(check, self, 1, "concurrency", "buffer_size")
            _at_least(check, self, 0, "max_staleness")
            check.require(
                self.staleness in STALENESS,
                "staleness",
                f"must be one of {sorted(STALENESS)}, got {self.staleness!r}",
            )
            _positive(check, self, "report_deadline_s")


@dataclass(frozen=True)
class SecAggSettings(_Settings):
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
        with Checks(self) as check:
            _finite_and(
                check,
                self,
                "threshold_fraction",
                lambda v: 0.5 < v <= 1,
                "must be in (0.5, 1]: below half, two disjoint sets of devices could each unmask",
            )
            _positive(check, self, "clip", "phase_timeout_s")
            check.require(
                isinstance(self.frac_bits, int) and 4 <= self.frac_bits <= 24,
                "frac_bits",
                f"must be an integer in 4..24, got {self.frac_bits!r}",
            )
            _at_least(check, self, 1, "max_examples")

    def max_devices(self) -> int:
        """The largest group whose sum cannot wrap around 2^32."""
        return int(2**31 // (self.clip * 2**self.frac_bits))


@dataclass(frozen=True)
class PlanSettings(_Settings):
    """What each selected device trains (the SDK's TrainingPlan): `epochs` over its local
    examples in batches of `batch_size` at learning rate `lr`, stopped after `max_steps`
    optimizer steps if set. `buffers` says what happens to the model's buffers (BatchNorm
    running statistics): "average" them like parameters, or keep each device's own on the
    device, "local" (FedBN); with "local" the server never changes the global model's
    buffers. Sent to every device in its assignment (messages.AssignedPlan)."""

    epochs: int = 1
    batch_size: int = 16
    lr: float = 0.1
    max_steps: int | None = None
    buffers: BufferPolicy = "average"

    def __post_init__(self):
        with Checks(self) as check:
            _at_least(check, self, 1, "epochs", "batch_size")
            _positive(check, self, "lr")
            if self.max_steps is not None:
                _at_least(check, self, 1, "max_steps")
            check.require(
                self.buffers in BUFFER_POLICIES,
                "buffers",
                f"must be one of {list(BUFFER_POLICIES)} (average them like parameters, "
                f"or keep each device's own: FedBN), got {self.buffers!r}",
            )


@dataclass(frozen=True)
class LrDecaySettings(_Settings):
    """Step decay: {"at": [500, 900], "factor": 0.3} multiplies server_lr by 0.3 for the
    steps from version 500 on and again from 900 on (a plateau's noise floor drops)."""

    at: tuple[int, ...]
    factor: float

    def __post_init__(self):
        at = self.at
        with Checks(self) as check:
            check.require(
                isinstance(at, tuple)
                and len(at) > 0
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in at)
                and list(at) == sorted(set(at)),
                "at",
                f"must be a non-empty list of strictly increasing versions >= 1, got {at!r}",
            )
            _finite_and(check, self, "factor", lambda v: 0 < v < 1, "must be a number in (0, 1)")


@dataclass(frozen=True)
class RobustSettings(_Settings):
    """Byzantine-robust statistics (aggregator.robust) over buffers of `buffer` updates,
    each held dense in memory. `trim` applies to kind "trimmed_mean" only (None: 0.1)."""

    kind: RobustKind = "trimmed_mean"
    trim: float | None = None
    buffer: int = 50

    MAX_BUFFER = 1000

    def __post_init__(self):
        with Checks(self) as check:
            known = check.require(
                self.kind in ROBUST_STAGES,
                "kind",
                f"must be one of {sorted(ROBUST_STAGES)}, got {self.kind!r}",
            )
            stage = ROBUST_STAGES.get(self.kind)
            if self.trim is not None and known:
                takes = {f.name for f in dataclasses.fields(stage)}
                check.require(
                    "trim" in takes,
                    "trim",
                    f"applies to kind 'trimmed_mean' only, not {self.kind!r}; leave it out",
                ) and _finite_and(
                    check,
                    self,
                    "trim",
                    lambda v: 0 <= v < 0.5,
                    "must be in [0, 0.5) (the fraction cut at each end)",
                )
            check.require(
                isinstance(self.buffer, int)
                and not isinstance(self.buffer, bool)
                and self.buffer <= self.MAX_BUFFER,
                "buffer",
                f"must be an integer <= {self.MAX_BUFFER} (each buffered update is held "
                f"dense in memory), got {self.buffer!r}",
            )
            if not check.errors:
                try:
                    stage(**self.stage_options())
                except ValueError as e:
                    field = "trim" if str(e).startswith("trim") else "buffer"
                    check.require(False, field, str(e))

    def stage_options(self) -> dict:
        """The stage's own keyword arguments (kind and unset values left out)."""
        return {k: v for k, v in (("trim", self.trim), ("buffer", self.buffer)) if v is not None}


@dataclass(frozen=True)
class DPSettings(_Settings):
    """Central DP-FedAvg (aggregator.privacy.DPMean) and its accountant. Each update is
    clipped to `clip_norm`; the sum gets Gaussian noise of std noise_multiplier x
    clip_norm and is divided by `expected_count` (None: sync.goal, or async.buffer_size).
    `adaptive_quantile` (e.g. 0.5) moves clip_norm towards that quantile of update norms
    at rate `adaptive_lr`, the count noised with std `count_noise`. The accountant
    samples from `population` devices and reports epsilon at `target_delta`; the task
    pauses when epsilon reaches `epsilon_budget`."""

    clip_norm: float
    noise_multiplier: float
    population: int
    expected_count: int | None = None
    adaptive_quantile: float | None = None
    adaptive_lr: float = 0.2
    count_noise: float = 0.0
    target_delta: float = 1e-5
    epsilon_budget: float | None = None

    def __post_init__(self):
        with Checks(self) as check:
            _positive(check, self, "clip_norm", "adaptive_lr")
            _finite_and(
                check,
                self,
                "noise_multiplier",
                lambda v: v > 0,
                "must be > 0 (the accountant needs noise)",
            )
            _at_least(check, self, 1, "population")
            if self.expected_count is not None:
                _at_least(check, self, 1, "expected_count")
            if self.adaptive_quantile is not None:
                _finite_and(
                    check, self, "adaptive_quantile", lambda v: 0 < v < 1, "must be in (0, 1)"
                )
            _finite_and(check, self, "count_noise", lambda v: v >= 0, "must be >= 0")
            _finite_and(
                check, self, "target_delta", lambda v: 0 < v < 1, "must be in (0, 1), e.g. 1e-5"
            )
            if self.epsilon_budget is not None:
                _positive(check, self, "epsilon_budget")


# the metric sources a target may name: held-out (server_eval/), training (the mean of
# the devices' training metrics), federated evaluation (devices' own held-out examples)
TARGET_SOURCES = ("heldout", "training", "federated")


@dataclass(frozen=True)
class TargetSettings(_Settings):
    """Where a task is going. `max_versions`: the task pauses once that version is
    published. `metric` ("heldout.accuracy", "training.mean_loss", ...) with `at_least` or
    `at_most`: a value to reach, against which the dashboard measures progress and time to
    go (the task is not paused by it)."""

    max_versions: int | None = None
    metric: str | None = None
    at_least: float | None = None
    at_most: float | None = None

    def __post_init__(self):
        with Checks(self) as check:
            if self.max_versions is not None:
                _at_least(check, self, 1, "max_versions")
            source, _, name = str(self.metric or "").partition(".")
            check.require(
                self.metric is None or (source in TARGET_SOURCES and name),
                "metric",
                f"must be SOURCE.NAME with SOURCE one of {list(TARGET_SOURCES)}, e.g. "
                f"'heldout.accuracy', got {self.metric!r}",
            ) and check.require(
                (self.metric is None) == (self.at_least is None and self.at_most is None),
                "metric",
                "a metric needs at_least or at_most, and at_least/at_most a metric",
            )
            check.require(
                self.at_least is None or self.at_most is None,
                "at_most",
                "give at_least (higher is better) or at_most (lower is better), not both",
            )
            for name in ("at_least", "at_most"):
                value = getattr(self, name)
                check.require(
                    value is None or _finite(value),
                    name,
                    f"must be a finite number, got {value!r}",
                )
            check.require(
                self.max_versions is not None or self.metric is not None,
                "max_versions",
                "set max_versions, or a metric with at_least/at_most (or leave target out)",
            )


@dataclass(frozen=True)
class TaskSettings(_Settings):
    """One task's settings; see docs/aggregator.md for each field's meaning and range."""

    mode: Mode = "sync"
    sync: SyncSettings = field(default_factory=SyncSettings)
    async_: AsyncSettings = field(default_factory=AsyncSettings, metadata={"aliases": ("async",)})
    server_optimizer: ServerOptimizerName = "fedavg"
    server_lr: float = 1.0
    server_lr_decay: LrDecaySettings | None = None
    clip_norm: float | None = None
    reject_outlier_factor: float | None = None
    robust: RobustSettings | None = None
    dp: DPSettings | None = None
    secagg: SecAggSettings | None = None
    eval_fraction: float = 0.0  # of devices not needed for training, the share sent to evaluate
    retry_min_s: float = 30.0
    retry_max_s: float = 300.0
    plan: PlanSettings = field(default_factory=PlanSettings)
    # L2 bound of a decoded delta (None: no bound); a larger update is refused
    max_update_norm: float | None = 100.0
    # cap of the weight (num_examples) a device may claim for one update
    max_examples: int = 10_000
    target: TargetSettings | None = None

    def __post_init__(self):
        with Checks(self) as check:
            self._check_fields(check)
            if check.fine("mode", "sync", "clip_norm", "robust", "dp", "reject_outlier_factor"):
                self._check_secagg(check)
            if not check.errors:
                self._check_buildable(check)

    def _check_fields(self, check: Checks) -> None:
        check.require(
            self.mode in ("sync", "async"), "mode", f"must be 'sync' or 'async', got {self.mode!r}"
        )
        for name, cls in (
            ("sync", SyncSettings),
            ("async_", AsyncSettings),
            ("plan", PlanSettings),
            ("server_lr_decay", LrDecaySettings),
            ("robust", RobustSettings),
            ("dp", DPSettings),
            ("secagg", SecAggSettings),
            ("target", TargetSettings),
        ):
            value = getattr(self, name)
            check.require(
                isinstance(value, cls)
                or (value is None and name not in ("sync", "async_", "plan")),
                name,
                f"must be a {cls.__name__}, got {type(value).__name__} (JSON goes through "
                "TaskSettings.from_json)",
            )
        check.require(
            self.server_optimizer in SERVER_OPTIMIZERS,
            "server_optimizer",
            f"must be one of {sorted(SERVER_OPTIMIZERS)}, got {self.server_optimizer!r}",
        )
        _positive(check, self, "server_lr")
        if self.clip_norm is not None:
            _positive(check, self, "clip_norm")
        if self.reject_outlier_factor is not None:
            _finite_and(
                check,
                self,
                "reject_outlier_factor",
                lambda v: v > 1,
                "must be > 1 (e.g. 3: drop updates over 3x the median norm)",
            )
        if self.max_update_norm is not None:
            _finite_and(
                check,
                self,
                "max_update_norm",
                lambda v: 0 < v <= 1e12,
                "must be a finite number > 0 and at most 1e12 (or null: no bound)",
            )
        _at_least(check, self, 1, "max_examples") and check.require(
            self.max_examples <= 2**31,
            "max_examples",
            f"must be at most 2^31, got {self.max_examples!r}",
        )
        _finite_and(check, self, "eval_fraction", lambda v: 0 <= v <= 1, "must be in [0, 1]")
        check.require(
            _finite(self.retry_min_s)
            and _finite(self.retry_max_s)
            and 0 <= self.retry_min_s <= self.retry_max_s,
            "retry_min_s",
            "need 0 <= retry_min_s <= retry_max_s",
        )
        check.require(
            self.robust is None or self.dp is None,
            "robust",
            "choose robust aggregation or central DP (dp), not both: the DP analysis "
            "assumes the clipped mean",
        )

    def _check_secagg(self, check: Checks) -> None:
        if not isinstance(self.secagg, SecAggSettings):
            return
        check.require(
            self.mode == "sync",
            "secagg",
            "secure aggregation runs in sync rounds "
            "(mode 'sync'); see docs/aggregator.md for async",
        ) and check.require(
            not (self.clip_norm or self.robust or self.dp or self.reject_outlier_factor),
            "secagg",
            "with secagg the server sees only the sum: per-update clipping, "
            "outlier rejection, robust statistics and central DP need individual "
            "updates; clip on the device instead",
        )
        group = math.ceil(self.sync.goal * self.sync.overselect)
        check.require(
            group <= self.secagg.max_devices(),
            "secagg",
            f"a secagg group of up to {group} devices could overflow 2^32 with clip "
            f"{self.secagg.clip} and frac_bits {self.secagg.frac_bits}; lower one of them",
        )

    def _check_buildable(self, check: Checks) -> None:
        """What the first commit will build, built now (cheap: no arrays)."""
        import numpy as np

        from .aggregation import build_aggregation
        from .server_optimizers import build_server_optimizer

        try:
            build_aggregation(self.aggregation(), np.random.default_rng(0))
        except (TypeError, ValueError) as e:
            check.require(False, "", f"the aggregation stack cannot be built: {e}")
        try:
            build_server_optimizer(self.server_optimizer, lr=self.server_lr)
        except (TypeError, ValueError) as e:
            check.require(False, "server_optimizer", f"cannot be built: {e}")

    def server_lr_at(self, version: int) -> float:
        """The server learning rate of the step from `version` to `version + 1`."""
        if self.server_lr_decay is None:
            return self.server_lr
        passed = sum(version >= v for v in self.server_lr_decay.at)
        return self.server_lr * self.server_lr_decay.factor**passed

    def updates_per_version(self) -> int:
        return self.sync.goal if self.mode == "sync" else self.async_.buffer_size

    def aggregation(self):
        from .aggregation import AggregationConfig

        dp = None
        if self.dp is not None:
            dp = {
                "clip_norm": self.dp.clip_norm,
                "noise_multiplier": self.dp.noise_multiplier,
                "expected_count": self.dp.expected_count or self.updates_per_version(),
                "adaptive_quantile": self.dp.adaptive_quantile,
                "adaptive_lr": self.dp.adaptive_lr,
                "count_noise": self.dp.count_noise,
            }
        robust = (
            None
            if self.robust is None
            else {"kind": self.robust.kind} | self.robust.stage_options()
        )
        return AggregationConfig(self.clip_norm, self.reject_outlier_factor, robust, dp)

    def sampling_rate(self) -> float:
        """Per-version sampling rate for the accountant (see aggregator.privacy)."""
        return min(1.0, self.updates_per_version() / self.dp.population)

    @classmethod
    def from_json(cls, doc: dict, path: str = "settings") -> TaskSettings:
        """Settings from the admin API or the store (older stored shapes load too)."""
        return decode_value(cls, doc, path)


def reference_table() -> str:
    """The settings reference as a Markdown table (docs/aggregator.md holds its output)."""
    rows = ["| setting | type | default | meaning, range |", "|---|---|---|---|"]

    def walk(cls, prefix: str) -> None:
        import typing

        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            tp = hints[f.name]
            default = (
                f.default
                if f.default is not dataclasses.MISSING
                else ("(required)" if f.default_factory is dataclasses.MISSING else "{...}")
            )
            name = f"{prefix}{f.name}"
            rows.append(
                f"| `{name}` | {_type_name(tp)} | `{_json_text(default)}` | "
                f"{_MEANING.get(name, '')} |"
            )
            nested = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
            for sub in nested:
                walk(sub, f"{name}.")

    walk(TaskSettings, "")
    return "\n".join(rows)


def _type_name(tp) -> str:
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " \\| ".join(f'"{a}"' for a in args)
    if args and origin is not tuple:
        return " \\| ".join(_type_name(a) for a in args)
    if origin is tuple:
        return f"list of {_type_name(args[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _json_text(value) -> str:
    import json

    if isinstance(value, str) and value.startswith(("(", "{")):
        return value
    return json.dumps(value)


_MEANING = {
    "mode": "sync rounds or buffered async (FedBuff)",
    "sync": "sync rounds",
    "sync.goal": "reports per round, >= 1",
    "sync.overselect": "devices selected per report wanted, >= 1",
    "sync.selection_timeout_s": "> 0",
    "sync.report_deadline_s": "> 0",
    "sync.min_fraction": "share of goal that commits at the deadline, (0, 1]",
    "async_": "buffered async (key `async` accepted too)",
    "async_.concurrency": "devices training at once, >= 1",
    "async_.buffer_size": "updates per version, >= 1",
    "async_.max_staleness": "versions behind still accepted, >= 0",
    "async_.staleness": "staleness weighting (aggregator.numerics.STALENESS)",
    "async_.report_deadline_s": "> 0",
    "server_optimizer": "aggregator.server_optimizers.SERVER_OPTIMIZERS",
    "server_lr": "> 0",
    "server_lr_decay": "step decay of server_lr, or null",
    "server_lr_decay.at": "strictly increasing versions >= 1",
    "server_lr_decay.factor": "(0, 1)",
    "clip_norm": "server-side L2 clip of each update, > 0 or null",
    "reject_outlier_factor": "drop updates over factor x median norm, > 1 or null",
    "robust": "robust statistic (excludes dp), or null",
    "robust.kind": "aggregator.robust.ROBUST_STAGES",
    "robust.trim": "trimmed_mean only: fraction cut at each end, [0, 0.5); null = 0.1",
    "robust.buffer": "updates per block, 3..1000 (trimmed_mean), 1..1000 (median)",
    "dp": "central DP-FedAvg (excludes robust, secagg), or null",
    "dp.clip_norm": "> 0",
    "dp.noise_multiplier": "> 0",
    "dp.population": ">= 1",
    "dp.expected_count": "denominator, >= 1; null = sync.goal or async_.buffer_size",
    "dp.adaptive_quantile": "(0, 1) or null (fixed clipping)",
    "dp.adaptive_lr": "> 0",
    "dp.count_noise": ">= 0",
    "dp.target_delta": "(0, 1)",
    "dp.epsilon_budget": "pause the task at this epsilon, > 0 or null",
    "secagg": "secure aggregation (sync only; excludes server-side clip/robust/dp), or null",
    "secagg.threshold_fraction": "(0.5, 1]",
    "secagg.clip": "> 0",
    "secagg.frac_bits": "4..24",
    "secagg.max_examples": ">= 1",
    "secagg.phase_timeout_s": "> 0",
    "eval_fraction": "share of spare devices sent to evaluate, [0, 1]",
    "retry_min_s": "0 <= retry_min_s <= retry_max_s",
    "retry_max_s": ">= retry_min_s",
    "plan": "what each device trains",
    "plan.epochs": ">= 1",
    "plan.batch_size": ">= 1",
    "plan.lr": "> 0",
    "plan.max_steps": ">= 1 or null",
    "plan.buffers": "buffers (BatchNorm statistics): averaged like parameters, or kept on "
    "each device (FedBN; the server never changes them)",
    "max_update_norm": "L2 bound of a decoded delta, > 0 or null (off)",
    "max_examples": "cap of the weight a device may claim, >= 1",
    "target": "where the task is going (dashboard: time to go), or null",
    "target.max_versions": "pause the task once this version is published, >= 1 or null",
    "target.metric": "SOURCE.NAME, SOURCE in aggregator.config.TARGET_SOURCES, or null",
    "target.at_least": "metric target, higher is better (with metric)",
    "target.at_most": "metric target, lower is better (with metric)",
}


if __name__ == "__main__":
    print(reference_table())
