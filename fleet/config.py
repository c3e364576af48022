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

A config with several mistakes is refused with one BadField (a ValueError) naming each
(`devices: must be an integer >= 1, got 0; task.sync.goal: ...`).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from edge_sdk.protocol import DEFAULT_CODEC, CodecSpec, UpdatePipeline
from edge_sdk.protocol.codec import QUANTIZERS
from edge_sdk.protocol.typedjson import BadField, Checks

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
        with Checks(self) as check:
            for name in ("drop_during_training", "drop_during_upload"):
                value = getattr(self, name)
                check.require(
                    _number(value) and 0 <= value < 1,
                    name,
                    f"is a probability in [0, 1), got {value!r}",
                )
            check.require(
                _number(self.step_time_s) and self.step_time_s > 0,
                "step_time_s",
                f"must be > 0, got {self.step_time_s!r}",
            )
            check.require(
                _number(self.speed_sigma) and self.speed_sigma >= 0,
                "speed_sigma",
                f"must be >= 0, got {self.speed_sigma!r}",
            )


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
        with Checks(self) as check:
            self._check_what(check)
            self._check_how(check)
            if check.fine("population", "device_stores", "task"):
                _refusal(check, "population", _check_population, self)
            if self.pretrain is not None and not check.errors:
                from .pretrain import check_pretrain

                _refusal(check, "pretrain", check_pretrain, self)

    def _check_what(self, check: Checks) -> None:
        """What is trained: the model, its data, loss, optimizer, codec and task."""
        check.require(
            isinstance(self.model, str) and self.model != "",
            "model",
            "is a zoo name, 'package.module:factory' or a bundle directory",
        )
        check.require(
            isinstance(self.model_options, dict),
            "model_options",
            "is an object of the factory's arguments",
        )
        _refusal(check, "codec", pipeline_of, self.codec)
        if self.data is not None:
            _refusal(check, "data", check_spec, self.data)
        _refusal(check, "optimizer", check_optimizer, self.optimizer)
        check.require(
            self.loss in LOSSES,
            "loss",
            f"must be one of {LOSSES}, got {self.loss!r}{nearest(str(self.loss), LOSSES)}",
        )
        _refusal(check, "task", _check_task, self.task)
        check.require(
            _integer(self.vocabulary_size) and self.vocabulary_size >= 3,
            "vocabulary_size",
            f"must be an int above the vocabulary's special tokens, got {self.vocabulary_size!r}",
        )
        check.require(
            self.sequence_length is None
            or (_integer(self.sequence_length) and self.sequence_length >= 2),
            "sequence_length",
            f"must be an int >= 2 or None (the task's own), got {self.sequence_length!r}",
        )

    def _check_how(self, check: Checks) -> None:
        """How it runs: the fleet, the backend and the run's length."""
        check.require(
            _integer(self.devices) and self.devices >= 1,
            "devices",
            f"must be an integer >= 1, got {self.devices!r}",
        )
        for name, choices in (
            ("transport", ("http", "inprocess")),
            ("device_stores", ("memory", "disk")),
            ("backend", ("local", "processes", "ray")),
        ):
            value = getattr(self, name)
            check.require(
                value in choices,
                name,
                f"must be one of {', '.join(map(repr, choices))}, got {value!r}"
                f"{nearest(str(value), choices)}",
            )
        check.require(
            _integer(self.workers) and self.workers >= 0,
            "workers",
            f"must be an int >= 0 (0: one per core), got {self.workers!r}",
        )
        check.require(
            isinstance(self.ray, dict) and not set(self.ray) - {"address", "actors"},
            "ray",
            "settings are 'address' (None starts a local Ray instance) and 'actors' "
            "(training workers)",
        )
        attackers = self.attackers
        check.require(
            attackers is None
            or isinstance(attackers, dict)
            and _number(attackers.get("fraction", 0))
            and 0 < attackers.get("fraction", 0) < 1
            and attackers.get("kind") in ("sign_flip", "scale"),
            "attackers",
            "need a fraction in (0, 1) and kind 'sign_flip' or 'scale'",
        )
        for name, ok, must in (
            ("hours", lambda v: _number(v) and v > 0, "must be > 0"),
            ("max_versions", lambda v: _integer(v) and v >= 1, "must be an integer >= 1"),
            ("eval_every", lambda v: _integer(v) and v >= 1, "must be an integer >= 1"),
        ):
            value = getattr(self, name)
            check.require(ok(value), name, f"{must}, got {value!r}")

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
        with Checks() as check:
            valid = [f.name for f in fields(cls)]
            _refusal(check, where, refuse_unknown, doc, valid, where)
            doc = {k: v for k, v in doc.items() if k in valid}
            profiles = doc.pop("profiles", {})
            if isinstance(profiles, ProfileSettings):
                profiles = asdict(profiles)
            valid = [f.name for f in fields(ProfileSettings)]
            _refusal(
                check, f"{where}.profiles", refuse_unknown, profiles, valid, f"{where}.profiles"
            )
            try:
                profiles = ProfileSettings(
                    **{
                        k: tuple(v) if isinstance(v, list) else v
                        for k, v in profiles.items()
                        if k in valid
                    }
                )
            except BadField as e:
                check.add(e, "profiles")
                profiles = ProfileSettings()
            return cls(profiles=profiles, **doc)

    def to_json(self) -> dict:
        return asdict(self)


def refuse_unknown(doc: dict, valid: list[str], where: str) -> None:
    """BadField naming every key of `doc` not in `valid`, each with the nearest valid one."""
    with Checks() as check:
        for key in doc:
            if key not in valid:
                hint = nearest(str(key), valid) or f"; valid: {', '.join(valid)}"
                check.require(False, where, f"unknown key {str(key)[:64]!r}{hint}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _refusal(check: Checks, field: str, fn, *args) -> None:
    """`fn(*args)`, a check that raises a ValueError whose message starts with `field`
    (or a path under it); its refusal recorded in `check` as a BadField of that path."""
    try:
        fn(*args)
    except BadField as e:
        check.add(e)
    except ValueError as e:
        text = str(e)
        named = re.match(rf"({re.escape(field)}(?:[.\[][^\s:]*)?)(?::\s*|\s+)(.+)", text, re.S)
        check.require(False, *(named.groups() if named else (field, text)))


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

    TaskSettings.from_json(task, "task")  # BadField naming task.sync.goal, ...
