"""How an app's device takes part in federated learning: one frozen, validated object
(`ClientConfig`) instead of the client's many constructor parameters."""

from __future__ import annotations

from dataclasses import dataclass, field

from .clock import Clock, SystemClock
from .eligibility import Policy, default_policy
from .protocol import DEFAULT_CODEC, UpdatePipeline

_PIPELINE = UpdatePipeline(DEFAULT_CODEC)


@dataclass(frozen=True)
class ClientConfig:
    """collection: the example-store collection training reads; eval_collection: the one
    federated evaluation scores (None: the same). policy: when the device may take part
    (default: charging, unmetered, idle, cool, enough data; see `default_policy`).
    pipeline: what is done to a delta before it leaves (clipping, local noise, codec).
    seed: of the
    client's random draws (None: fresh each run). train_in_thread: local training in a
    worker thread, so the app's event loop stays responsive."""

    collection: str = "default"
    eval_collection: str | None = None
    policy: Policy = field(default_factory=default_policy)
    pipeline: UpdatePipeline = _PIPELINE
    seed: int | None = None
    clock: Clock = field(default_factory=SystemClock)
    train_in_thread: bool = True

    def __post_init__(self):
        for name in ("collection", "eval_collection"):
            value = getattr(self, name)
            if not (value is None and name != "collection") and not (
                isinstance(value, str) and value
            ):
                raise ValueError(
                    f"ClientConfig.{name} must be a non-empty string"
                    f"{'' if name == 'collection' else ' or None'}, got {value!r}"
                )
        kinds = {
            "policy": (Policy, "an edge_sdk.Policy of predicates, e.g. default_policy()"),
            "pipeline": (UpdatePipeline, "an UpdatePipeline"),
        }
        for name, (kind, what) in kinds.items():
            if not isinstance(getattr(self, name), kind):
                raise TypeError(
                    f"ClientConfig.{name} must be {what}, got {type(getattr(self, name)).__name__}"
                )
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0
        ):
            raise ValueError(f"ClientConfig.seed must be an int >= 0 or None, got {self.seed!r}")
        if not callable(getattr(self.clock, "now", None)):
            raise TypeError(
                "ClientConfig.clock must have a now() -> seconds method (edge_sdk.SystemClock)"
            )
