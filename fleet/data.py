"""The fleet's task data: a federated dataset (fleet/datasets), the bundle of the model
trained on it (fleet/models.py), each user's training and held-out examples, and a
fixed sample of held-out examples for the periodic evaluation.

Without a `data` description the zoo model's own data is used: Shakespeare by (play,
role) for keyboard_cifg* (next word, sentences tokenized with the bundle's word
vocabulary) and shakespeare_char* (the role's text in 80-character windows, every
position a target, as in LEAF and TFF's Shakespeare); Fashion-MNIST over 100 IID
synthetic users for femnist_cnn*; breast cancer for logreg and mlp.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.vocabulary import load_vocabulary

from .datasets import FederatedDataset, Task, load_dataset
from .datasets.text import TextDataset
from .models import ModelError, build_model_bundle, check_fits, is_bundle_dir

UNITS = {"next_word": "sentences", "next_char": "80-character windows"}


@dataclass
class TaskData:
    bundle: Bundle
    task: Task
    name: str  # the dataset's name, for reports and plots
    users: list[list[dict]]  # training examples per user
    heldout: list[list[dict]]  # held-out examples per user (same order)
    test: list[dict]  # the held-out sample evaluated during the run
    test_all: list[dict]  # every held-out example (final figures)
    train_all: list[dict]
    split_note: str = "the data's own users"  # how the users came about

    @property
    def kind(self) -> str:
        return self.task.kind

    @property
    def unit(self) -> str:
        return UNITS.get(self.task.kind, "examples")


def is_char_model(model: str) -> bool:
    return model.startswith("shakespeare_char")


def default_data(model: str) -> dict:
    """The data a zoo model was made for (module docstring)."""
    name = model
    if is_bundle_dir(model):
        name = json.loads((Path(model) / "manifest.json").read_text())["model_name"]
    if name.startswith("shakespeare_char"):
        return {"kind": "shakespeare", "options": {"level": "char"}}
    if name.startswith(("keyboard_cifg", "keyboard_transformer")):
        return {"kind": "shakespeare", "options": {"level": "word"}}
    if name.startswith(("femnist_cnn", "mobilenet_cnn")):
        return {"kind": "fashion_mnist"}
    if name in ("logreg", "mlp"):
        return {"kind": "breast_cancer"}
    raise ModelError(
        f'model {model!r} has no data of its own: give the config a "data" '
        "description (docs/own-data.md)"
    )


def open_dataset(config) -> FederatedDataset:
    """The dataset the config describes (its vocabulary size filling a word-level text
    reader's, its seed any reader's that takes one)."""
    spec = config.data if config.data is not None else default_data(config.model)
    if getattr(config, "pretrain", None) is not None:  # the public roles are not the fleet's
        from .pretrain import federated_spec

        spec = federated_spec(spec, config)
    options = spec.get("options", {})
    text = spec["kind"] in ("jsonl", "text_dir", "shakespeare")
    word_text = text and options.get("level", "word") == "word"
    length = getattr(config, "sequence_length", None)
    if text and length is not None:  # the config's length, unless the data's options set one
        spec = spec | {"options": {("max_len" if word_text else "window"): length} | options}
    return load_dataset(
        spec, seed=config.seed, vocabulary_size=config.vocabulary_size if text else None
    )


def prepare(config, out: Path) -> TaskData:
    """Open the config's dataset, build (or load) its model's bundle into `out`, and
    encode every user's examples."""
    dataset = open_dataset(config)
    if is_bundle_dir(config.model) and isinstance(dataset, TextDataset):
        vocab = Bundle.load(config.model).vocabulary_path()
        if vocab is not None:  # the bundle's tokenizer is the one devices run
            dataset.use_vocabulary(load_vocabulary(vocab))
    task = dataset.task()
    bundle = build_model_bundle(config, task, out)
    return encode(dataset, bundle, task, config.eval_examples, config.seed)


def encode(
    dataset: FederatedDataset, bundle: Bundle, task: Task, eval_examples: int, seed: int = 0
) -> TaskData:
    check_fits(bundle, task, f"the bundle of {bundle.model_name}")
    users, heldout = [], []
    for user in dataset.users():
        users.append(dataset.examples(user, "train"))
        heldout.append(dataset.examples(user, "heldout"))
    test_all = [e for h in heldout for e in h]
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(test_all))[:eval_examples]
    test = [test_all[i] for i in sorted(pick)]
    train_all = [e for u in users for e in u]
    note = getattr(dataset, "describe", lambda: "the data's own users")()
    return TaskData(
        bundle, task, str(dataset.name), users, heldout, test, test_all, train_all, note
    )


def build_task_bundle(model: str, out: Path, vocabulary_size: int, seed: int = 0) -> Bundle:
    """A zoo model's bundle for its own data (fleet/run.py builds from a config)."""
    from .config import SimulationConfig

    config = SimulationConfig(model=model, vocabulary_size=vocabulary_size, seed=seed)
    return build_model_bundle(config, open_dataset(config).task(), out)


def task_data(bundle: Bundle, eval_examples: int, seed: int = 0) -> TaskData:
    """Shakespeare encoded with a bundle's vocabulary (word or character, by its kind)."""
    from .datasets.builtin import Shakespeare

    vocab = load_vocabulary(bundle.vocabulary_path())
    dataset = Shakespeare(level=vocab.kind, vocabulary=vocab)
    return encode(dataset, bundle, dataset.task(), eval_examples, seed)


def leaf_form_sample(bundle: Bundle, count: int, seed: int = 0) -> list[dict]:
    """LEAF's next-character metric on the same held-out text: a character counts only with
    the full 80 characters before it as input. `count` positions drawn at random (the
    full set is ~740k windows, 80x the cost of the every-position evaluation); each is an
    example whose targets are padding except the last, so the ordinary eval graph (and the
    n-gram) score exactly that one prediction."""
    from model_zoo.data.shakespeare import char_windows_leaf, load_users

    vocab = load_vocabulary(bundle.vocabulary_path())
    pairs = [char_windows_leaf(vocab, u.split()[1]) for u in load_users()]
    x = np.concatenate([p[0] for p in pairs])
    y = np.concatenate([p[1] for p in pairs])
    pick = np.sort(np.random.default_rng([seed, 0x1EAF]).permutation(len(y))[:count])
    out = []
    for i in pick:
        targets = np.zeros(x.shape[1], np.int64)  # 0 is the char vocabulary's padding
        targets[-1] = y[i]
        out.append({"chars": x[i].astype(np.int64), "targets": targets})
    return out


def assign_devices(data: TaskData, devices: int) -> list[tuple[list[dict], list[dict]]]:
    """Each device's (training, held-out) examples: one user each, or sub-splits of a
    user when devices outnumber users (fleet.population.assign_data deals the training
    examples; a sub-split gets the same share of the user's held-out examples)."""
    from .population import assign_data

    refs = [[(u, j) for j in range(len(train))] for u, train in enumerate(data.users)]
    parts = assign_data(refs, devices)
    shares: dict[int, int] = {}
    seen = set()
    for part in parts:
        if id(part) not in seen:  # devices past the examples share a part (same object)
            seen.add(id(part))
            shares[part[0][0]] = shares.get(part[0][0], 0) + 1
    out = []
    for part in parts:
        user, k = part[0]
        out.append(([data.users[user][j] for _, j in part], data.heldout[user][k :: shares[user]]))
    return out


__all__ = [
    "TaskData",
    "assign_devices",
    "build_task_bundle",
    "default_data",
    "encode",
    "is_char_model",
    "leaf_form_sample",
    "open_dataset",
    "prepare",
    "task_data",
]
