"""Simulation settings, validated when built; `from_json` reads a config file and refuses
keys it does not know, naming the nearest valid one.

What to train on and with: `data` describes a federated dataset (fleet/datasets:
{"kind": ..., "path": ..., "options": {...}}; None: the zoo model's own data), `model`
is a zoo name, a "package.module:factory" or a bundle directory (fleet/models.py), and
`codec` is a name (CODECS) or any codec the protocol supports as an object of CodecSpec
fields plus the device's clipping and local DP noise ({"quantizer": "int4", "rotate":
true, "clip_norm": 1.0, "noise_multiplier": 0.3}). `task` is the aggregator's task
settings as JSON (docs/aggregator.md), checked when the config is built; e.g.
{"plan": {"buffers": "local"}} keeps a BatchNorm model's running statistics on each
simulated device (FedBN), in its own example store.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from edge_sdk.protocol import DEFAULT_CODEC, CodecSpec, UpdatePipeline
from edge_sdk.protocol.codec import QUANTIZERS

from .datasets.registry import check_spec, nearest
from .models import LOSSES, check_optimizer

# named codecs: the default (top-k 5% int8 with error feedback's help), dense floats, and
# every dense quantizer of the protocol
CODECS = ("default", *QUANTIZERS)
PIPELINE_KEYS = ("clip_norm", "noise_multiplier", "compression_level")


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
    data: dict | None = None  # fleet/datasets description; None: the model's own data
    model_options: dict = field(default_factory=dict)  # extra arguments of the factory
    optimizer: dict | None = None  # {"name": "sgd" | "adam" | "adamw", "lr": ..., ...}
    loss: str = "cross_entropy"  # or "mse" (regression)
    clip_grad_norm: float | None = None  # compiled into the train step
    devices: int = 1419
    # the vocabulary built from the training split holds at most this many entries (the
    # text has 74 characters: a character vocabulary holds 76 at most); the model is sized
    # to it
    vocabulary_size: int = 10000
    # positions per example: sentences cut to this many words, or windows of this many
    # characters; None: the task's own (20 words; LEAF's 80 characters)
    sequence_length: int | None = None
    task: dict = field(
        default_factory=lambda: {
            "mode": "sync",
            "sync": {
                "goal": 50,
                "overselect": 1.3,
                "selection_timeout_s": 600,
                "report_deadline_s": 900,
                "min_fraction": 0.7,
            },
            "plan": {"epochs": 1, "batch_size": 16, "lr": 1.0},
        }
    )
    codec: str | dict = "default"
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
    # "eager": every device built and enrolled up front, each checking in on its own;
    # "lazy": devices drawn from the seed only while they take part (fleet/lazy_fleet.py),
    # for populations of millions
    population: str = "eager"
    # central pre-training on public text before the fleet starts (fleet/pretrain.py):
    # {"public": {"roles_every": 3, "offset": 1}, "epochs": 2, ...}; None: a random start
    pretrain: dict | None = None

    def __post_init__(self):
        if self.devices < 1:
            raise ValueError("devices must be >= 1")
        pipeline_of(self.codec)
        if self.data is not None:
            check_spec(self.data)
        check_optimizer(self.optimizer)
        if self.loss not in LOSSES:
            raise ValueError(
                f"loss must be one of {LOSSES}, got {self.loss!r}{nearest(self.loss, LOSSES)}"
            )
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("model is a zoo name, 'package.module:factory' or a bundle directory")
        if not isinstance(self.model_options, dict):
            raise ValueError("model_options is an object of the factory's arguments")
        _check_task(self.task)
        if (
            not isinstance(self.vocabulary_size, int)
            or isinstance(self.vocabulary_size, bool)
            or self.vocabulary_size < 3
        ):
            raise ValueError(
                f"vocabulary_size must be an int above the vocabulary's special "
                f"tokens, got {self.vocabulary_size!r}"
            )
        if self.sequence_length is not None and (
            not isinstance(self.sequence_length, int) or self.sequence_length < 2
        ):
            raise ValueError(
                f"sequence_length must be an int >= 2 or None (the task's own), "
                f"got {self.sequence_length!r}"
            )
        if self.transport not in ("http", "inprocess"):
            raise ValueError("transport must be 'http' or 'inprocess'")
        if self.device_stores not in ("memory", "disk"):
            raise ValueError(
                f"device_stores must be 'memory' or 'disk', got {self.device_stores!r}"
            )
        if self.backend not in ("local", "processes", "ray"):
            raise ValueError(f"backend must be 'local', 'processes' or 'ray', got {self.backend!r}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be an int >= 0 (0: one per core), got {self.workers!r}")
        if set(self.ray) - {"address", "actors"}:
            raise ValueError(
                "ray settings are 'address' (None starts a local Ray instance) "
                "and 'actors' (training workers)"
            )
        if self.attackers is not None and (
            not 0 < self.attackers.get("fraction", 0) < 1
            or self.attackers.get("kind") not in ("sign_flip", "scale")
        ):
            raise ValueError("attackers need a fraction in (0, 1) and kind 'sign_flip' or 'scale'")
        _check_population(self)
        if self.pretrain is not None:
            from .pretrain import check_pretrain

            check_pretrain(self)
        if self.hours <= 0 or self.max_versions < 1 or self.eval_every < 1:
            raise ValueError("hours must be > 0, max_versions and eval_every >= 1")

    @classmethod
    def from_json(cls, path: str | Path) -> SimulationConfig:
        try:
            doc = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not JSON: {e}") from None
        return cls.from_dict(doc, str(path))

    @classmethod
    def from_dict(cls, doc: dict, where: str = "config") -> SimulationConfig:
        """A config from its JSON document; unknown keys are refused with their path."""
        if not isinstance(doc, dict):
            raise ValueError(f"{where} must be a JSON object")
        doc = dict(doc)
        refuse_unknown(doc, [f.name for f in fields(cls)], where)
        profiles = doc.pop("profiles", {})
        if isinstance(profiles, ProfileSettings):
            profiles = asdict(profiles)
        refuse_unknown(profiles, [f.name for f in fields(ProfileSettings)], f"{where}: profiles")
        profiles = ProfileSettings(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in profiles.items()}
        )
        return cls(profiles=profiles, **doc)

    def to_json(self) -> dict:
        return asdict(self)


def refuse_unknown(doc: dict, valid: list[str], where: str) -> None:
    for key in doc:
        if key not in valid:
            raise ValueError(
                f"{where}: unknown key {key!r}{nearest(key, valid)}; valid: {', '.join(valid)}"
            )


def pipeline_of(codec: str | dict) -> UpdatePipeline:
    """What devices do to a delta before upload: a named codec, or an object of CodecSpec
    fields and the pipeline's clip_norm, noise_multiplier (local DP) and
    compression_level."""
    if isinstance(codec, str):
        if codec not in CODECS:
            raise ValueError(
                f"codec must be one of {CODECS} or an object of codec fields, "
                f"got {codec!r}{nearest(codec, CODECS)}"
            )
        return UpdatePipeline(DEFAULT_CODEC if codec == "default" else CodecSpec(codec))
    if not isinstance(codec, dict):
        raise ValueError(f"codec must be a name or an object, got {codec!r}")
    valid = [f.name for f in fields(CodecSpec)] + list(PIPELINE_KEYS)
    refuse_unknown(codec, valid, "codec")
    try:
        spec = CodecSpec(**{k: v for k, v in codec.items() if k not in PIPELINE_KEYS})
        return UpdatePipeline(spec, **{k: v for k, v in codec.items() if k in PIPELINE_KEYS})
    except ValueError as e:
        raise ValueError(f"codec: {e}") from None


def _check_population(config: SimulationConfig) -> None:
    if config.population not in ("eager", "lazy"):
        raise ValueError(
            f"population must be 'eager' or 'lazy', got {config.population!r}"
            f"{nearest(str(config.population), ['eager', 'lazy'])}"
        )
    if config.population != "lazy":
        return
    if config.device_stores != "memory":
        raise ValueError(
            "a lazy population keeps no device state between visits: device_stores must be 'memory'"
        )
    if config.task.get("eval_fraction"):
        raise ValueError(
            "a lazy population makes no check-ins while the server wants no "
            "training, so federated evaluation (task eval_fraction) gets no "
            "devices: set eval_fraction to 0, or population 'eager'"
        )


def _check_task(task: dict) -> None:
    from aggregator.config import TaskSettings

    try:
        TaskSettings.from_json(task)
    except (TypeError, ValueError) as e:
        raise ValueError(f"task: {e}") from None
