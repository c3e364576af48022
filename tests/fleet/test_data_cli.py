"""`edge-fl data inspect / prepare / export`, `zoo export --data`, `simulate --data` and
the keyboard example on one's own text."""

from __future__ import annotations

import json

import numpy as np

from edge_fl_cli import main as cli
from edge_sdk.bundle import Bundle
from edge_sdk.vocabulary import load_vocabulary
from server_eval.heldout_set import read_heldout_set

from . import toy_data


def write_chat(path):
    path.write_text("".join(json.dumps(r) + "\n" for r in toy_data.chatty_users()))
    return path


def _simulate(config, out, data, model: str, more=("--centralized-epochs", "0")) -> int:
    """`edge-fl simulate --config CONFIG --out OUT --data DATA --model MODEL [MORE]`'s exit
    code (by default with no centralized baseline)."""
    return cli(
        ["simulate", "--config", str(config), "--out", str(out), "--data", str(data)]
        + ["--model", model, *more]
    )


def test_inspect_reports_users_histogram_and_skew(tmp_path, capsys):
    assert (
        cli(
            [
                "data",
                "inspect",
                "--data",
                "digits",
                "--json",
                "--option",
                'partition={"users": 10, "alpha": 0.1}',
            ]
        )
        == 0
    )
    skewed = json.loads(capsys.readouterr().out)
    assert skewed["users"] <= 10 and skewed["num_classes"] == 10
    assert skewed["train_examples"] + skewed["heldout_examples"] == 1797
    assert (
        cli(
            ["data", "inspect", "--data", "digits", "--json", "--option", 'partition={"users": 10}']
        )
        == 0
    )
    iid = json.loads(capsys.readouterr().out)
    assert iid["non_iid"] < 0.15 < skewed["non_iid"]  # Dirichlet(0.1) is far from IID
    assert cli(["data", "inspect", "--data", str(write_chat(tmp_path / "c.jsonl"))]) == 0
    printed = capsys.readouterr().out
    assert "15 users" in printed and "most frequent target tokens" in printed


def test_prepare_writes_a_vocabulary_and_a_held_out_set_the_bundle_reads(tmp_path, capsys):
    chat = write_chat(tmp_path / "c.jsonl")
    assert (
        cli(
            [
                "data",
                "prepare",
                "--data",
                str(chat),
                "--vocabulary-size",
                "12",
                "--out",
                str(tmp_path / "prep"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "vocabulary: 12 words" in printed and "out of vocabulary:" in printed
    assert (
        cli(
            [
                "zoo",
                "export",
                "keyboard_cifg_tiny",
                "--data",
                str(chat),
                "--vocabulary-size",
                "12",
                "--out",
                str(tmp_path / "bundle"),
            ]
        )
        == 0
    )
    bundle = Bundle.load(tmp_path / "bundle")
    assert bundle.num_classes == 12
    assert (
        load_vocabulary(bundle.vocabulary_path()).words
        == json.loads((tmp_path / "prep" / "vocabulary.json").read_text())["tokens"]
    )
    held = read_heldout_set(tmp_path / "prep" / "heldout.jsonl", bundle)
    assert len(held) == 15 * 2  # 12 one-sentence messages a user, the last 2 held out
    assert all(int(e["tokens"].max()) < 12 for e in held)


def test_export_round_trips_through_the_csv_reader(tmp_path, capsys):
    out = tmp_path / "bc.csv"
    assert (
        cli(
            [
                "data",
                "export",
                "--data",
                "breast_cancer",
                "--option",
                "standardize=false",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert cli(["data", "inspect", "--data", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert summary["users"] == 10 and summary["heldout_examples"] == 110
    assert cli(["data", "inspect", "--data", str(out), "--option", "label=lable"]) == 2
    assert "did you mean 'label'" in capsys.readouterr().err


def test_simulate_takes_data_and_model_from_the_command_line(tmp_path, capsys):
    data = toy_data.write_separable_npz(tmp_path / "d.npz", users=10, per_user=20, features=3)
    config = {
        "devices": 10,
        "transport": "inprocess",
        "hours": 24,
        "max_versions": 2,
        "eval_every": 2,
        "codec": {"quantizer": "int4", "rotate": True},
        "task": {"mode": "sync", "sync": {"goal": 4}, "plan": {"epochs": 2, "lr": 0.5}},
    }
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert _simulate(tmp_path / "c.json", tmp_path / "o", data, "logreg") == 0
    printed = capsys.readouterr().out
    assert "from 10 d users" in printed and "majority class: accuracy" in printed
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["config"]["model"] == "logreg" and report["data"]["name"] == "d"
    (tmp_path / "run.json").write_text(json.dumps(report["config"]))  # data included
    curve = ["curve", "--config", str(tmp_path / "run.json"), "--out", str(tmp_path / "o")]
    assert cli([*curve, "--every", "2", "--target", "0.5"]) == 0
    rows = json.loads((tmp_path / "o" / "curve.json").read_text())
    assert rows[-1]["accuracy"] == report["final"]["accuracy"] and "auc" in rows[-1]
    assert "accuracy on every held-out example: first >= 50.0%" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text(json.dumps(config | {"devics": 3}))
    assert (
        cli(["simulate", "--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o2")])
        == 2
    )
    assert "unknown key 'devics' (did you mean 'devices'?)" in capsys.readouterr().err


def test_a_bundle_directory_is_a_model(tmp_path, capsys):
    data = toy_data.write_separable_npz(tmp_path / "d.npz", users=8, per_user=10, features=5)
    assert (
        cli(
            [
                "zoo",
                "export",
                "mlp",
                "--data",
                str(tmp_path / "d.npz"),
                "--out",
                str(tmp_path / "bundle"),
            ]
        )
        == 0
    )
    config = {
        "devices": 8,
        "transport": "inprocess",
        "hours": 12,
        "max_versions": 1,
        "task": {"mode": "sync", "sync": {"goal": 3}, "plan": {"lr": 0.1}},
    }
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert _simulate(tmp_path / "c.json", tmp_path / "o", data, str(tmp_path / "bundle")) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["versions"] == 1 and report["data"]["train_examples"] == 8 * 8
    np.savez(
        tmp_path / "wide.npz",
        x=np.zeros((20, 7), np.float32),
        y=np.arange(20) % 2,
        users=np.arange(20) % 4,
    )
    assert (
        _simulate(
            tmp_path / "c.json",
            tmp_path / "o2",
            tmp_path / "wide.npz",
            str(tmp_path / "bundle"),
            (),
        )
        == 2
    )
    assert "takes x of shape [5], the data's is [7]" in capsys.readouterr().err


def test_the_keyboard_example_types_ones_own_messages(tmp_path, capsys):
    from examples.keyboard_app import main as keyboard

    keyboard(
        [
            "--data",
            str(write_chat(tmp_path / "c.jsonl")),
            "--out",
            str(tmp_path / "k"),
            "--vocabulary-size",
            "30",
        ]
    )
    printed = capsys.readouterr().out
    assert "c: user person0 types 10 messages; 2 later ones are held out" in printed
    assert "held-out next-word recall" in printed and "the keyboard suggests" in printed
