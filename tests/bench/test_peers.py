"""The parts of the Flower comparison (bench/peers) that are ours, without Flower: PSS
accounting of a process tree, the split both sides read, and the per-round accounting."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench.peers import accounting
from bench.peers.ours_side import device_examples, fedavg_config
from bench.peers.process_tree import descendants, parent_map, pss_kib, tree_pss_kib
from bench.peers.split import read_split, write_split

MIB = 1024

# a child that maps 64 MiB of shared anonymous memory, touches every page, forks (the
# grandchild maps the same pages), which prints its pid and waits for stdin to close
_SHARED_TREE = textwrap.dedent("""
    import mmap, os, sys
    size = 64 * 2**20
    m = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
    for i in range(0, size, 4096):
        m[i] = 1
    pid = os.fork()
    if pid == 0:
        sum(m[i] for i in range(0, size, 4096))  # map the same pages here too
        print(os.getpid(), flush=True)
        sys.stdin.read()
        os._exit(0)
    sys.stdin.read()
    os.waitpid(pid, 0)
""")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_tree_pss_counts_shared_pages_once_and_finds_grandchildren():
    child = subprocess.Popen(
        [sys.executable, "-c", _SHARED_TREE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        grandchild = int(child.stdout.readline())
        assert descendants(child.pid, parent_map()) == [grandchild]
        assert set(descendants(_self(), parent_map())) >= {child.pid, grandchild}
        total, count = tree_pss_kib(_self())
        rss = _rss_kib(child.pid) + _rss_kib(grandchild)
        pss = pss_kib(child.pid) + pss_kib(grandchild)
        assert count >= 2 and total >= pss
        # RSS counts the 64 MiB in each process, PSS half in each
        assert rss >= 2 * 64 * MIB
        assert 64 * MIB <= pss <= rss - 48 * MIB
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    assert pss_kib(grandchild) == 0  # gone: nothing to count


def _self() -> int:
    import os

    return os.getpid()


def test_parent_map_reads_command_names_with_parentheses_and_spaces(tmp_path):
    for pid, comm, ppid in ((10, "python", 1), (11, "ray::Client) (x", 10), (12, "a b", 11)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} ({comm}) S {ppid} 1 1 0 -1 0\n")
    (tmp_path / "self").mkdir()
    parents = parent_map(tmp_path)
    assert parents == {10: 1, 11: 10, 12: 11}
    assert descendants(10, parents) == [11, 12] and descendants(12, parents) == []


def _fashion_clients(users: int = 6):
    pytest.importorskip("model_zoo.data.fashion_mnist")
    from fleet.datasets.builtin import FashionMnist
    from model_zoo.data.fashion_mnist import DEFAULT_DIR

    if not DEFAULT_DIR.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    data = FashionMnist(partition={"users": users}, limit=600, seed=3)
    return [data.examples(u, "train") for u in data.users()], [
        e for u in data.users() for e in data.examples(u, "heldout")
    ]


def test_both_sides_read_the_split_the_driver_wrote(tmp_path):
    from bench.peers.compare import stack

    clients, heldout = _fashion_clients()
    initial = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    doc = write_split(
        tmp_path,
        [stack(c) for c in clients],
        stack(heldout[:50]),
        stack(heldout),
        initial,
        {"task": {"seed": 3}},
    )
    split = read_split(tmp_path)
    assert split.clients == len(clients) == doc["clients"]
    assert isinstance(split.x, np.memmap)
    ours = device_examples(split)  # our devices' example dicts
    for i, examples in enumerate(clients):
        x, y = split.client(i)  # what Flower's client i trains on
        assert len(ours[i]) == len(examples) == len(y)
        for mine, theirs, original, label in zip(ours[i], x, examples, y):
            np.testing.assert_array_equal(mine["x"], original["x"])
            np.testing.assert_array_equal(theirs, original["x"])
            assert mine["targets"] == original["targets"] == label
    np.testing.assert_array_equal(split.initial_parameters()["w"], initial["w"])
    assert split.heldout_y.tolist() == [int(e["targets"]) for e in heldout]


def test_split_fingerprint_changes_with_one_label(tmp_path):
    from bench.peers.compare import stack

    clients, heldout = _fashion_clients(3)
    arrays = [stack(c) for c in clients]
    first = write_split(tmp_path / "a", arrays, stack(heldout), stack(heldout), {})
    again = write_split(tmp_path / "b", arrays, stack(heldout), stack(heldout), {})
    arrays[1][1][0] = (arrays[1][1][0] + 1) % 10
    changed = write_split(tmp_path / "c", arrays, stack(heldout), stack(heldout), {})
    assert first["fingerprint"] == again["fingerprint"] != changed["fingerprint"]


def _evals(*spans):
    return [
        {"round": r, "start": s, "end": e, "accuracy": 0.1 * r} for r, (s, e) in enumerate(spans)
    ]


def test_rounds_split_wall_time_into_training_and_overhead():
    evaluations = _evals((10.0, 11.0), (20.0, 20.5), (30.0, 31.0))
    trainings = [
        {"start": 12.0, "end": 14.0},
        {"start": 15.0, "end": 16.0},  # round 1
        {"start": 22.0, "end": 25.0},
        {"start": 26.0, "end": 27.0},
        {"start": 28.0, "end": 28.5},
    ]  # round 2
    first, second = accounting.rounds(evaluations, trainings)
    assert (first.wall_s, first.clients, first.training_s) == (8.0, 2, 3.0)  # 12 -> 20
    assert first.overhead_per_client_ms == pytest.approx(2500.0)
    assert (second.wall_s, second.clients, second.training_s) == (9.5, 3, 4.5)  # 20.5 -> 30
    assert second.accuracy == pytest.approx(0.2)
    assert accounting.overhead_per_client_ms([first, second]) == pytest.approx(1000 * 10 / 5)
    # launched at 2: 10 s to the first training, less the 1 s initial evaluation
    assert accounting.startup_s(2.0, evaluations, trainings) == pytest.approx(9.0)


def test_rounds_refuse_missing_evaluations_or_trainings():
    with pytest.raises(ValueError, match="rounds 0..R"):
        accounting.rounds(_evals((0, 1), (2, 3))[1:], [{"start": 1.5, "end": 1.8}])
    with pytest.raises(ValueError, match="no client training"):
        accounting.rounds(_evals((0, 1), (2, 3)), [])


def test_our_side_runs_plain_fedavg(tmp_path):
    from types import SimpleNamespace

    from aggregator.config import TaskSettings

    args = SimpleNamespace(
        transport="inprocess",
        rounds=3,
        seed=0,
        clients_per_round=7,
        epochs=2,
        batch_size=16,
        lr=0.1,
    )
    config = fedavg_config(tmp_path, 50, args)
    task = TaskSettings.from_json(config.task)
    assert (task.sync.goal, task.sync.overselect, task.sync.min_fraction) == (7, 1.0, 1.0)
    assert task.server_optimizer == "fedavg" and task.server_lr == 1.0
    assert (task.plan.epochs, task.plan.batch_size, task.plan.lr) == (2, 16, 0.1)
    assert config.codec == "float32" and config.devices == 50 and config.max_versions == 3
    p = config.profiles
    assert p.window_length_h == (24.0, 24.0) and p.drop_during_training == 0 == p.drop_during_upload
