"""The pre-trained start: public roles kept out of the fleet and its held-out text, the
simulator starting from the model trained on them, and the report showing that start."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aggregator.config import TaskSettings
from edge_sdk.bundle import Bundle
from fleet.config import SimulationConfig
from fleet.curve import version_curve
from fleet.data import prepare
from fleet.datasets.builtin import Shakespeare
from fleet.pretrain import PretrainError, PublicSplit, cache_dir, check_pretrain
from fleet.run import run
from model_zoo.data.shakespeare import load_users

from .small_fleet import small_fleet

TINY_PRETRAIN = {
    "public": {"roles_every": 3, "offset": 1},
    "epochs": 1,
    "batch_size": 64,
    "lr": 0.01,
}


def test_public_federated_and_heldout_text_are_disjoint():
    users = load_users()
    split = PublicSplit(roles_every=3, offset=1)
    public, federated = split.split(users)
    public_ids = {u.user_id for u in public}
    assert public_ids and not public_ids & {u.user_id for u in federated}
    assert len(public) + len(federated) == len(users)
    # every play gives roles to both sides (the public text covers every play's names)
    assert {u.play for u in public} == {u.play for u in federated} == {u.play for u in users}
    # the fleet's dataset holds exactly the federated users; its held-out text is theirs
    dataset = Shakespeare(exclude=split.to_json(), level="word", vocabulary_size=500)
    assert set(dataset.users()) == {u.user_id for u in federated}
    by_id = {u.user_id: u for u in users}
    public_lines = {(u.user_id, line) for u in public for line in u.lines}
    for user in dataset.users():
        train, heldout = dataset.texts(user, "train"), dataset.texts(user, "heldout")
        assert train + heldout == list(by_id[user].lines)
        assert not {(user, line) for line in train + heldout} & public_lines


def test_whole_plays_can_be_public_and_unknown_ones_are_refused():
    users = load_users()
    public, federated = PublicSplit(plays=("hamlet", "macbeth")).split(users)
    assert {u.play for u in public} == {"hamlet", "macbeth"}
    assert not {"hamlet", "macbeth"} & {u.play for u in federated}
    with pytest.raises(PretrainError, match="no play"):
        PublicSplit(plays=("hamlett",)).split(users)
    with pytest.raises(PretrainError, match="not both"):
        PublicSplit(plays=("hamlet",), roles_every=3)
    with pytest.raises(ValueError, match="nearest|did you mean 'roles_every'"):
        SimulationConfig(pretrain={"public": {"role_every": 3}})


@pytest.mark.slow  # pre-training, two compiles and a small fleet: ~1 min on 2 cores
def test_simulator_starts_from_the_pretrained_model_and_reports_it(tmp_path):
    config = small_fleet(40, goal=5, versions=2, eval_examples=100, pretrain=TINY_PRETRAIN)
    report = run(config, tmp_path, centralized_epochs=0, show_progress=False)
    data = prepare(config, tmp_path / "check")  # same config elsewhere: the cached start
    bundle = Bundle.load(tmp_path / "bundle")
    cached = cache_dir(config, data.task.vocabulary, tmp_path)
    assert (cached / "parameters.npz").is_file()
    with np.load(cached / "parameters.npz") as saved:
        for name, value in bundle.initial_parameters().items():
            np.testing.assert_array_equal(value, saved[name])  # the bundle starts there
    # a random start of the same model is a different, worse one
    random_start = prepare(
        small_fleet(40, goal=5, versions=2, eval_examples=100), tmp_path / "random"
    ).bundle.initial_parameters()
    assert any(
        not np.array_equal(random_start[k], v) for k, v in bundle.initial_parameters().items()
    )
    start = report["pretrained"]
    assert report["timeline"][0]["version"] == 0
    assert start["accuracy"] == report["timeline"][0]["accuracy"]
    assert start["pretraining"]["public_users"] > 0
    assert start["pretraining"]["key"] == cached.name
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["pretrained"]["accuracy"] == start["accuracy"]
    assert "3-gram+public" in saved["baselines"]
    # the fleet's devices hold no public role's text
    assert report["data"]["users"] == len(
        PublicSplit(roles_every=3, offset=1).split(load_users())[1]
    )
    # the re-scored curve names version 0 as the pre-trained start
    rows = version_curve(config, tmp_path, versions=[0, 2], show_progress=False)
    assert [r.get("start") for r in rows] == ["pre-trained", None]


CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "configs"


def test_the_demo_fine_tunes_the_full_keyboard_model_on_the_federated_roles():
    """`make demo` runs keyboard_demo.json: the full keyboard_cifg pre-trained on the
    public roles, one device per federated role (no public role is a device), scored on
    the same 1,500 held-out sentences as the random start (keyboard_demo_random.json,
    every role a device) and the two-epoch start (keyboard_demo_pretrained.json)."""
    demo = SimulationConfig.from_json(CONFIGS / "keyboard_demo.json")
    two_epochs = SimulationConfig.from_json(CONFIGS / "keyboard_demo_pretrained.json")
    random_start = SimulationConfig.from_json(CONFIGS / "keyboard_demo_random.json")
    for config in (demo, two_epochs, random_start):
        assert config.model == "keyboard_cifg" and config.model_options == {}
        assert config.vocabulary_size == 10_000 and config.eval_examples == 1500
    federated = PublicSplit(roles_every=3, offset=1).split(load_users())[1]
    for config in (demo, two_epochs):
        settings = check_pretrain(config)
        assert settings is not None and settings.public == PublicSplit(roles_every=3, offset=1)
        assert config.devices == len(federated)
        task = TaskSettings.from_json(config.task)  # the aggregator accepts the task
        assert task.mode == "sync" and task.server_lr_at(config.max_versions) > 0
    assert random_start.pretrain is None and random_start.devices == len(load_users())
    makefile = (CONFIGS.parents[1] / "Makefile").read_text()
    assert "--config examples/configs/keyboard_demo.json" in makefile
