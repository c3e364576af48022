"""The readers' splits, vocabularies and errors; configs refusing unknown keys; the
per-task metrics against their definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fleet.config import SimulationConfig, pipeline_of
from fleet.data import TaskData, assign_devices
from fleet.datasets import DatasetError, InputSpec, Task, load_dataset, spec_from_argument
from fleet.metrics import roc_auc, trivial_baseline


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_text_splits_each_user_in_time_and_builds_the_vocabulary_from_training_only(tmp_path):
    names = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    rows = [{"user": "ann", "time": t, "text": f"hello world {names[t]}."} for t in range(10)]
    write_jsonl(tmp_path / "c.jsonl", rows[::-1])  # out of order in the file
    d = load_dataset(
        {"kind": "jsonl", "path": str(tmp_path / "c.jsonl"), "options": {"vocabulary_size": 100}}
    )
    assert d.texts("ann", "train") == [f"hello world {names[t]}." for t in range(8)]
    assert d.texts("ann", "heldout") == ["hello world iota.", "hello world kappa."]
    vocab = d.vocabulary()
    assert "theta" in vocab.words and "iota" not in vocab.words  # never seen in training
    assert d.oov_rate("train") == 0 and d.oov_rate("heldout") == pytest.approx(1 / 3)
    example = d.examples("ann", "heldout")[0]
    assert example["tokens"][0] == 1 and example["targets"][-1] == 2  # <s> ... </s>
    assert d.task().kind == "next_word" and d.task().num_classes == len(vocab)


def test_a_directory_holds_one_file_per_user_and_characters_come_in_windows(tmp_path):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "bob.txt").write_text("abc\n" * 20)
    (tmp_path / "texts" / "eve.txt").write_text("xyz\n" * 20)
    d = load_dataset(
        spec_from_argument(str(tmp_path / "texts")) | {"options": {"level": "char", "window": 10}}
    )
    assert d.users() == ["bob", "eve"] and d.task().kind == "next_char"
    ex = d.examples("bob", "train")[0]
    assert len(ex["chars"]) == 10 and list(ex["targets"][:-1]) == list(ex["chars"][1:])


def test_bad_descriptions_name_the_nearest_valid_choice(tmp_path):
    (tmp_path / "t.csv").write_text("user,f1,label\na,1,0\na,2,1\n")
    with pytest.raises(DatasetError, match=r"no label column 'lable' \(did you mean 'label'\?\)"):
        load_dataset(
            {"kind": "csv", "path": str(tmp_path / "t.csv"), "options": {"label": "lable"}}
        )
    with pytest.raises(DatasetError, match=r"unknown key 'usr' \(did you mean 'user'\?\)"):
        load_dataset({"kind": "csv", "path": str(tmp_path / "t.csv"), "options": {"usr": "a"}})
    with pytest.raises(DatasetError, match=r"unknown key 'opts' \(did you mean 'options'\?\)"):
        load_dataset({"kind": "csv", "path": "x.csv", "opts": {}})
    (tmp_path / "nousers.csv").write_text("f1,label\n1,0\n2,1\n")
    with pytest.raises(DatasetError, match="no user ids: give a user column, or partition"):
        load_dataset(
            {"kind": "csv", "path": str(tmp_path / "nousers.csv"), "options": {"user": None}}
        )
    (tmp_path / "bad.csv").write_text("user,f1,label\na,x,0\n")
    with pytest.raises(DatasetError, match="column 'f1' holds 'x', not a number"):
        load_dataset({"kind": "csv", "path": str(tmp_path / "bad.csv")})
    with pytest.raises(DatasetError, match="cannot import 'no_such_module'"):
        load_dataset({"kind": "no_such_module:Reader"})


def test_configs_refuse_unknown_keys_with_their_path_and_nearest_name():
    with pytest.raises(ValueError, match=r"config: unknown key 'dataa' \(did you mean 'data'\?\)"):
        SimulationConfig.from_dict({"dataa": {}})
    with pytest.raises(
        ValueError,
        match=r"profiles: unknown key 'step_time' \(did you mean "
        r"'step_time_s'\?\)",
    ):
        SimulationConfig.from_dict({"profiles": {"step_time": 2}})
    with pytest.raises(
        ValueError,
        match=r"codec: unknown key 'quantiser' \(did you mean "
        r"'quantizer'\?\)",
    ):
        SimulationConfig(codec={"quantiser": "int4"})
    with pytest.raises(ValueError, match="local DP noise needs a clip_norm"):
        SimulationConfig(codec={"quantizer": "int2", "noise_multiplier": 0.5})


def test_any_codec_the_protocol_supports_is_a_config_codec():
    pipeline = pipeline_of(
        {
            "quantizer": "int1",
            "rotate": True,
            "sparsifier": "randk",
            "fraction": 0.1,
            "clip_norm": 1.0,
            "noise_multiplier": 0.2,
        }
    )
    assert pipeline.codec.bits == 1 and pipeline.codec.rotate and pipeline.noise_multiplier == 0.2
    assert pipeline_of("int4").codec.quantizer == "int4"
    assert pipeline_of("default").codec.sparsifier == "topk"


def test_roc_auc_matches_its_pairwise_definition():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.integers(0, 2, 60)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(scores, labels) == pytest.approx(pairs)


def test_trivial_baselines_fit_on_training_examples_only():
    task = Task("classification", {"x": InputSpec((1,))}, 3)
    train = [{"x": np.zeros(1), "targets": np.int64(c)} for c in (2, 2, 1)]
    held = [{"x": np.zeros(1), "targets": np.int64(c)} for c in (1, 1, 2, 0)]
    name, m = trivial_baseline(task, train, held)
    assert name == "majority class" and m["class"] == 2 and m["accuracy"] == 0.25
    reg = Task("regression", {"x": InputSpec((1,))}, 1)
    name, m = trivial_baseline(
        reg,
        [{"targets": np.float32(v)} for v in (1, 3)],
        [{"targets": np.float32(v)} for v in (0, 4)],
    )
    assert name == "mean predictor" and m["mse"] == 4.0 and m["mae"] == 2.0


def test_devices_splitting_a_user_split_its_held_out_examples_too():
    users = [[{"u": 0, "i": i} for i in range(6)], [{"u": 1, "i": i} for i in range(2)]]
    heldout = [[{"u": 0, "h": i} for i in range(4)], [{"u": 1, "h": 0}]]
    data = TaskData(None, None, "t", users, heldout, [], [], [])
    devices = assign_devices(data, 4)
    assert len(devices) == 4
    held_of_user0 = sorted(e["h"] for train, held in devices for e in held if train[0]["u"] == 0)
    assert held_of_user0 == [0, 1, 2, 3]  # dealt out, not copied
    for train, held in devices:
        assert {e["u"] for e in train} == {e["u"] for e in held} or not held


def test_csv_rows_order_by_a_time_column_and_string_labels_become_classes(tmp_path):
    (tmp_path / "v.csv").write_text(
        "when;who;a;b;outcome\n"
        "2026-03-01T10:00;p1;1;0;sick\n2026-01-01T10:00;p1;2;0;well\n"
        "2026-02-01T10:00;p1;3;1;well\n2026-01-05T00:00;p2;4;1;sick\n2026-01-06T00:00;p2;5;0;well\n"
    )
    d = load_dataset(
        {
            "kind": "csv",
            "path": str(tmp_path / "v.csv"),
            "options": {
                "user": "who",
                "label": "outcome",
                "time": "when",
                "delimiter": ";",
                "standardize": False,
            },
        }
    )
    assert d.task().classes == ("sick", "well") and d.task().features == 2
    assert [e["x"][0] for e in d.examples("p1", "train")] == [2.0, 3.0]  # January, February
    assert [(e["x"][0], e["targets"]) for e in d.examples("p1", "heldout")] == [(1.0, 0)]
    assert [e["x"][0] for e in d.examples("p2", "heldout")] == [5.0]


def test_readers_and_configs_do_not_load_torch():
    from ..fresh_imports import loaded_after_importing

    readers = ["fleet.datasets.builtin", "fleet.datasets.tabular", "fleet.datasets.text"]
    configs = ["fleet.datasets.summary", "fleet.config", "fleet.data", "fleet.metrics"]
    assert loaded_after_importing(readers + configs, ("torch",)) == []


def test_parquet_reads_like_csv_or_says_what_it_needs(tmp_path):
    spec = {"kind": "parquet", "path": str(tmp_path / "t.parquet")}
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        (tmp_path / "t.parquet").write_bytes(b"PAR1")
        with pytest.raises(DatasetError, match="needs pyarrow"):
            load_dataset(spec)
        return
    pq.write_table(
        pa.table({"user": ["a", "a", "b", "b"], "f": [1.0, 2.0, 3.0, 4.0], "label": [0, 1, 0, 1]}),
        tmp_path / "t.parquet",
    )
    d = load_dataset(spec)
    assert d.users() == ["a", "b"] and len(d.examples("a", "train")) == 1


def test_inspect_measures_skew_and_a_held_out_split_unlike_training(tmp_path):
    from fleet.datasets.summary import summarize

    # two users with disjoint labels; the file sorted by label: each holds out its last rows
    rows = (
        ["user,f,label"]
        + [f"a,{i},{0 if i < 8 else 1}" for i in range(10)]
        + [f"b,{i},2" for i in range(10)]
    )
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    s = summarize(load_dataset({"kind": "csv", "path": str(tmp_path / "s.csv")}))
    # training labels: a {0: 8}, b {2: 8}; pooled {0: .5, 2: .5}: each user is 0.5 away
    assert s["non_iid"] == pytest.approx(0.5)
    # held out: a {1: 2}, b {2: 2} -> {1: .5, 2: .5} against {0: .5, 2: .5}
    assert s["heldout_shift"] == pytest.approx(0.5)
    shuffled = summarize(
        load_dataset(
            {
                "kind": "csv",
                "path": str(tmp_path / "s.csv"),
                "options": {"shuffle": True, "seed": 1},
            }
        )
    )
    assert shuffled["users"] == 2 and shuffled["heldout_examples"] == 4
