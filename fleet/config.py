"""Simulation settings, validated when built; `from_json` reads a config file."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

CODECS = ("default", "float32", "float16", "int8")


@dataclass(frozen=True)
class ProfileSettings:
    """How devices differ. Availability follows a diurnal pattern: each device is on
    charger, idle and on Wi-Fi for a nightly window (as in the Bonawitz et al. 2019 and
    FedScale traces)."""

    window_start_h_mean: float = 23.0
    window_start_h_std: float = 2.0
    window_length_h: tuple[float, float] = (3.0, 8.0)
    speed_sigma: float = 0.8  # log-normal spread of compute speed (stragglers)
    step_time_s: float = 1.0  # a median phone's time for one training step
    upload_mbps: tuple[float, float] = (0.5, 8.0)
    download_mbps: tuple[float, float] = (2.0, 40.0)
    drop_during_training: float = 0.05
    drop_during_upload: float = 0.03
    check_interval_s: tuple[float, float] = (300.0, 1800.0)

    def __post_init__(self):
        for name in ("drop_during_training", "drop_during_upload"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} is a probability in [0, 1)")
        if self.step_time_s <= 0 or self.speed_sigma < 0:
            raise ValueError("step_time_s must be > 0 and speed_sigma >= 0")


@dataclass(frozen=True)
class SimulationConfig:
    model: str = "keyboard_cifg"
    devices: int = 1419
    # the vocabulary built from the training split holds at most this many entries (the
    # text has 74 characters: a character vocabulary holds 76 at most); the model is sized
    # to it
    vocabulary_size: int = 10000
    # positions per example: sentences cut to this many words, or windows of this many
    # characters; None: the task's own (20 words; LEAF's 80 characters)
    sequence_length: int | None = None
    task: dict = field(default_factory=lambda: {
        "mode": "sync", "sync": {"goal": 50, "overselect": 1.3, "selection_timeout_s": 600,
                                 "report_deadline_s": 900, "min_fraction": 0.7},
        "plan": {"epochs": 1, "batch_size": 16, "lr": 1.0}})
    codec: str = "default"
    transport: str = "http"
    hours: float = 48.0
    max_versions: int = 30
    eval_every: int = 5
    eval_examples: int = 2000
    final_eval_all: bool = False  # also evaluate the final model on every held-out example
    profiles: ProfileSettings = field(default_factory=ProfileSettings)
    seed: int = 0
    # where local training runs: "local" (inline, one core), "processes" (a pool of
    # `workers` processes, 0 = one per core) or "ray" (Ray actors, fleet/ray_backend.py)
    backend: str = "local"
    workers: int = 0
    ray: dict = field(default_factory=dict)  # {"address": None | "host:port", "actors": 2}
    attackers: dict | None = None  # {"fraction": 0.1, "kind": "sign_flip" | "scale", "scale": 10}
    # where each device's example store lives: "memory" (fast; RSS grows by one float32
    # model per device for its error-feedback residual) or "disk" (one SQLite file per
    # device under OUT/devices, as on a phone: RSS stays flat, ~2 model sizes of disk each)
    device_stores: str = "memory"

    def __post_init__(self):
        if self.devices < 1:
            raise ValueError("devices must be >= 1")
        specials = 2 if self.model.startswith("shakespeare_char") else 4
        if not isinstance(self.vocabulary_size, int) or self.vocabulary_size <= specials:
            raise ValueError(f"vocabulary_size must be an int above the vocabulary's "
                             f"{specials} special tokens, got {self.vocabulary_size!r}")
        if self.sequence_length is not None and (
                not isinstance(self.sequence_length, int) or self.sequence_length < 1):
            raise ValueError(f"sequence_length must be an int >= 1 or None (the task's own), "
                             f"got {self.sequence_length!r}")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, got {self.codec!r}")
        if self.transport not in ("http", "inprocess"):
            raise ValueError("transport must be 'http' or 'inprocess'")
        if self.device_stores not in ("memory", "disk"):
            raise ValueError(f"device_stores must be 'memory' or 'disk', got {self.device_stores!r}")
        if self.backend not in ("local", "processes", "ray"):
            raise ValueError(f"backend must be 'local', 'processes' or 'ray', got {self.backend!r}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be an int >= 0 (0: one per core), got {self.workers!r}")
        if set(self.ray) - {"address", "actors"}:
            raise ValueError("ray settings are 'address' (None starts a local Ray instance) "
                             "and 'actors' (training workers)")
        if self.attackers is not None and (
                not 0 < self.attackers.get("fraction", 0) < 1
                or self.attackers.get("kind") not in ("sign_flip", "scale")):
            raise ValueError("attackers need a fraction in (0, 1) and kind 'sign_flip' or 'scale'")
        if self.hours <= 0 or self.max_versions < 1 or self.eval_every < 1:
            raise ValueError("hours must be > 0, max_versions and eval_every >= 1")

    @classmethod
    def from_json(cls, path: str | Path) -> SimulationConfig:
        doc = json.loads(Path(path).read_text())
        profiles = ProfileSettings(**{k: tuple(v) if isinstance(v, list) else v
                                      for k, v in doc.pop("profiles", {}).items()})
        return cls(profiles=profiles, **doc)

    def to_json(self) -> dict:
        return asdict(self)
