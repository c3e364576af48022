"""A pre-trained starting point, the way production keyboards start federated training:
the model is first trained centrally on public text, then fine-tuned by the fleet.

The public text is Shakespeare too, but never the federated users' own: a config's

    "pretrain": {"public": {"roles_every": 3, "offset": 1}, "epochs": 2,
                 "batch_size": 64, "lr": 0.003}

makes every third role of each play (ranked by lines spoken, from rank `offset`) public:
those roles' whole text is the pre-training corpus, and they are left out of the
federated population, so none of their lines is a device's training or held-out
example. `{"plays": ["hamlet", ...]}` makes whole plays public instead. The held-out
text every figure is scored on is the federated users' later 20% only (PublicSplit,
tests/fleet/test_pretrain.py checks the three parts are disjoint).

The pre-training runs where the model is compiled (fleet/models.py, torch; the loop is
model_zoo/pretrain.py) and its result is cached under `OUT/pretrain/KEY/` keyed by
everything it depends on (model, vocabulary, public split, settings, seed), so a second
`make demo` compiles the same start without training again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

FORMAT = 1  # bump when the pre-training loop changes what a key's result would be
CACHE_DIR = "pretrain"


class PretrainError(ValueError):
    """Pre-training settings that cannot work; the message says how to fix them."""


@dataclass(frozen=True)
class PublicSplit:
    """Which Shakespeare users are public (pre-training text) rather than federated:
    whole `plays` by name, or in each play the roles of rank offset, offset + k,
    offset + 2k, ... with k = `roles_every` (roles ranked by lines spoken, then name)."""

    plays: tuple[str, ...] = ()
    roles_every: int | None = None
    offset: int = 0

    def __post_init__(self):
        if bool(self.plays) == (self.roles_every is not None):
            raise PretrainError(
                'pretrain.public names either plays ({"plays": ["hamlet", '
                '...]}) or every k-th role ({"roles_every": 3}), not both'
            )
        if self.roles_every is not None and (
            not isinstance(self.roles_every, int) or self.roles_every < 2
        ):
            raise PretrainError(
                f"pretrain.public.roles_every must be an int >= 2 (2: half "
                f"the roles public), got {self.roles_every!r}"
            )
        if self.roles_every is not None and not 0 <= self.offset < self.roles_every:
            raise PretrainError(
                f"pretrain.public.offset must be in [0, roles_every), got {self.offset!r}"
            )

    @classmethod
    def from_json(cls, doc) -> PublicSplit:
        if not isinstance(doc, dict):
            raise PretrainError(
                'pretrain.public is an object: {"roles_every": 3} or {"plays": [...]}'
            )
        _refuse_unknown(doc, cls, "pretrain.public")
        return cls(**{k: tuple(v) if k == "plays" else v for k, v in doc.items()})

    def to_json(self) -> dict:
        return (
            {"plays": list(self.plays)}
            if self.plays
            else {"roles_every": self.roles_every, "offset": self.offset}
        )

    def public_ids(self, users) -> set[str]:
        """The user ids ("play/role") of `users` (model_zoo ShakespeareUser) that are
        public; a named play that does not exist is an error."""
        if self.plays:
            known = {u.play for u in users}
            missing = sorted(set(self.plays) - known)
            if missing:
                raise PretrainError(
                    f"pretrain.public.plays: no play {missing} (plays: {', '.join(sorted(known))})"
                )
            return {u.user_id for u in users if u.play in self.plays}
        by_play: dict[str, list] = {}
        for u in users:
            by_play.setdefault(u.play, []).append(u)
        public = set()
        for roles in by_play.values():
            ranked = sorted(roles, key=lambda u: (-len(u.lines), u.role))
            public |= {u.user_id for u in ranked[self.offset :: self.roles_every]}
        return public

    def split(self, users) -> tuple[list, list]:
        """(public users, federated users), each in the input order."""
        public = self.public_ids(users)
        return (
            [u for u in users if u.user_id in public],
            [u for u in users if u.user_id not in public],
        )


@dataclass(frozen=True)
class PretrainSettings:
    """Central pre-training on the public split: Adam at `lr` for `epochs` passes in
    batches of `batch_size` (torch on `threads` threads, 0: torch's default)."""

    public: PublicSplit = field(default_factory=lambda: PublicSplit(roles_every=3, offset=1))
    epochs: int = 2
    batch_size: int = 64
    lr: float = 0.003
    threads: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise PretrainError(f"pretrain.{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.lr, (int, float)) or not 0 < self.lr < 1:
            raise PretrainError(f"pretrain.lr (Adam's) must be in (0, 1), got {self.lr!r}")
        if not isinstance(self.threads, int) or self.threads < 0:
            raise PretrainError(f"pretrain.threads must be an int >= 0, got {self.threads!r}")

    @classmethod
    def from_json(cls, doc) -> PretrainSettings:
        if isinstance(doc, PretrainSettings):
            return doc
        if not isinstance(doc, dict):
            raise PretrainError(
                'pretrain is an object like {"public": {"roles_every": 3}, "epochs": 2}'
            )
        _refuse_unknown(doc, cls, "pretrain")
        doc = dict(doc)
        if "public" in doc:
            doc["public"] = PublicSplit.from_json(doc["public"])
        return cls(**doc)

    def to_json(self) -> dict:
        return asdict(self) | {"public": self.public.to_json()}


def _refuse_unknown(doc: dict, cls, where: str) -> None:
    from .datasets.registry import nearest

    valid = [f.name for f in fields(cls)]
    for key in doc:
        if key not in valid:
            raise PretrainError(
                f"{where}: unknown key {key!r}{nearest(key, valid)}; valid: {', '.join(valid)}"
            )


def check_pretrain(config) -> PretrainSettings | None:
    """The config's pre-training settings, checked against its model and data: public
    text is carved out of the built-in Shakespeare users, so the data must be those."""
    if config.pretrain is None:
        return None
    settings = PretrainSettings.from_json(config.pretrain)
    spec = config.data or {}
    if config.data is not None and spec.get("kind") != "shakespeare":
        raise PretrainError(
            "pretrain carves public text out of the Shakespeare users: "
            'use the model\'s own data or {"kind": "shakespeare"}'
        )
    if (
        config.model.startswith("shakespeare_char")
        or spec.get("options", {}).get("level") == "char"
    ):
        raise PretrainError("pretrain is for next-word models (keyboard_cifg*)")
    return settings


def federated_spec(spec: dict, config) -> dict:
    """The data description with the public users left out (fleet/data.py applies it)."""
    settings = check_pretrain(config)
    if settings is None:
        return spec
    options = dict(spec.get("options", {})) | {"exclude": settings.public.to_json()}
    return spec | {"options": options}


def public_examples(settings: PretrainSettings, vocabulary, max_len: int) -> tuple[list, list]:
    """(the public users, their whole text as next-word examples encoded with the
    bundle's vocabulary)."""
    from model_zoo.data.shakespeare import load_users, word_examples

    public, _ = settings.public.split(load_users())
    return public, [e for u in public for e in word_examples(vocabulary, list(u.lines), max_len)]


def cache_key(config, vocabulary) -> str:
    """sha256 over everything the pre-trained parameters depend on."""
    settings = check_pretrain(config)
    doc = {
        "format": FORMAT,
        "model": config.model,
        "model_options": config.model_options,
        "sequence_length": config.sequence_length,
        "seed": config.seed,
        "settings": settings.to_json() | {"threads": None},
        "vocabulary": hashlib.sha256(
            json.dumps(vocabulary.to_json(), sort_keys=True).encode()
        ).hexdigest(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir(config, vocabulary, root: Path) -> Path:
    return root / CACHE_DIR / cache_key(config, vocabulary)


def pretrain_module(config, task, module, root: Path, show_progress: bool = True) -> dict:
    """Pre-train `module` (a freshly built torch model for `task`) in place on the public
    split, or load the cached result from `root/pretrain/KEY`; returns what was done
    (also written there as info.json)."""
    import torch

    from model_zoo.pretrain import pretrain

    settings = check_pretrain(config)
    where = cache_dir(config, task.vocabulary, root)
    if (where / "parameters.npz").is_file() and (where / "info.json").is_file():
        with np.load(where / "parameters.npz", allow_pickle=False) as saved:
            module.load_state_dict({k: torch.from_numpy(saved[k]) for k in saved.files})
        return json.loads((where / "info.json").read_text()) | {"cached": True}
    max_len = config.sequence_length or 20
    public, examples = public_examples(settings, task.vocabulary, max_len)
    print(
        f"pre-training on public text: {len(examples)} sentences of {len(public)} roles "
        f"kept out of the fleet ({settings.epochs} epochs, Adam lr {settings.lr}, batch "
        f"{settings.batch_size})",
        flush=True,
    )
    from tqdm import tqdm

    bar = tqdm(
        total=settings.epochs * -(-len(examples) // settings.batch_size),
        desc="pre-training",
        unit="step",
        disable=not show_progress,
        mininterval=1.0,
    )

    def on_step(step: int, steps: int, loss: float) -> None:
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    started = time.perf_counter()
    result = pretrain(
        module,
        examples,
        input_name=next(iter(task.inputs)),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        clip_grad_norm=1.0,
        seed=config.seed,
        threads=settings.threads or None,
        on_step=on_step,
    )
    bar.close()
    info = {
        "key": where.name,
        "settings": settings.to_json(),
        "public_users": len(public),
        "public_examples": len(examples),
        "public_words": int(sum(int((e["targets"] != 0).sum()) for e in examples)),
        "steps": result["steps"],
        "final_loss": result["final_loss"],
        "seconds": time.perf_counter() - started,
    }
    where.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    tmp = where / "parameters.tmp.npz"
    np.savez(tmp, **state)
    tmp.replace(where / "parameters.npz")
    (where / "info.json").write_text(json.dumps(info, indent=2))
    return info | {"cached": False}


def pretrain_info(config, vocabulary, root: Path) -> dict | None:
    """What the run's pre-training did (its cache entry's info.json), or None."""
    if config.pretrain is None:
        return None
    path = cache_dir(config, vocabulary, root) / "info.json"
    return json.loads(path.read_text()) if path.is_file() else None


__all__ = [
    "PretrainError",
    "PretrainSettings",
    "PublicSplit",
    "cache_dir",
    "cache_key",
    "check_pretrain",
    "federated_spec",
    "pretrain_info",
    "pretrain_module",
    "public_examples",
]
