"""typedjson's decoder names every bad field of a document in one BadField: nested
objects, lists and maps, a class's own __post_init__ checks (Checks) beside fields that
failed to decode, and never more than BadField.LISTED of them."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from edge_sdk.protocol.errors import BadField
from edge_sdk.protocol.typedjson import Checks, bounded, decode_value


@dataclass(frozen=True)
class Leaf:
    name: str
    size: int = bounded(1, minimum=1)

    def __post_init__(self):
        with Checks(self) as check:
            check.require(self.name != "bad", "name", "must not be 'bad'")
            check.require(self.size != 13, "size", "must not be 13")


@dataclass(frozen=True)
class Tree:
    leaves: list[Leaf] = field(default_factory=list)
    index: dict[str, Leaf] = field(default_factory=dict)
    pair: tuple[int, str] = (0, "")
    ratio: float = 0.5
    low: int = 0
    high: int = 10

    def __post_init__(self):
        with Checks(self) as check:
            check.require(0 <= self.ratio <= 1, "ratio", "must be in [0, 1]")
            if check.fine("low", "high"):
                check.require(self.low <= self.high, "low", "need low <= high")


def _errors(doc) -> dict[str, str]:
    with pytest.raises(BadField) as e:
        decode_value(Tree, doc, "tree")
    assert e.value.code == "bad_field" and e.value.field == e.value.errors[0].field
    listed = [{"field": x.field, "message": x.message} for x in e.value.errors]
    assert e.value.details.get("errors", listed) == listed  # one error: {"field"} only
    return {x.field: x.message for x in e.value.errors}


def test_every_bad_field_of_nested_lists_and_maps_is_named():
    doc = {
        "leaves": [{"name": "a"}, {"name": 5}, {"name": "b", "size": 0}, {"nam": "c"}],
        "index": {"x": {"name": "bad"}, "y": {"name": "y", "size": 13}, "z": "no"},
        "pair": [1, 2],
        "ratio": 2.0,
    }
    assert _errors(doc) == {
        "tree.leaves[1].name": "must be a string, got an integer",
        "tree.leaves[2].size": "out of range, must be in [1, 9007199254740991]",
        "tree.leaves[3].nam": "unknown key; did you mean 'name'?",
        "tree.leaves[3].name": "required key missing",
        "tree.index.x.name": "must not be 'bad'",
        "tree.index.y.size": "must not be 13",
        "tree.index.z": "must be an object, got a string",
        "tree.pair[1]": "must be a string, got an integer",
        # Tree's own check still runs for the fields that decoded
        "tree.ratio": "must be in [0, 1]",
    }


def test_a_class_check_runs_beside_fields_that_failed_but_says_nothing_of_them():
    # high failed to decode: the cross-field check on low/high is not made with a default
    assert _errors({"leaves": [], "high": "x", "low": 50, "ratio": -1}) == {
        "tree.high": "must be an integer, got a string",
        "tree.ratio": "must be in [0, 1]",
    }
    # both decode: the cross-field check is made
    assert _errors({"leaves": [], "high": 1, "low": 50}) == {"tree.low": "need low <= high"}


def test_one_bad_field_is_the_plain_error_it_always_was():
    with pytest.raises(BadField) as e:
        decode_value(Tree, {"leaves": [{"name": "a", "size": 0}]}, "tree")
    assert e.value.errors == (e.value,) and not e.value.truncated
    assert e.value.details == {"field": "tree.leaves[0].size"}
    assert str(e.value).startswith("tree.leaves[0].size: out of range")


def test_a_document_of_many_bad_fields_is_cut_at_the_listed_number():
    with pytest.raises(BadField) as e:
        decode_value(Tree, {"leaves": [{"name": i} for i in range(10**5)]}, "tree")
    assert len(e.value.errors) == BadField.LISTED and e.value.truncated
    assert e.value.errors[-1].field == f"tree.leaves[{BadField.LISTED - 1}].name"
    assert str(e.value).endswith(f"(stopped looking after {BadField.LISTED})")
    with pytest.raises(BadField) as e:  # unknown keys too (each costs a nearest-name search)
        decode_value(Tree, {"leaves": []} | {f"k{i}": 0 for i in range(10**5)}, "tree")
    assert len(e.value.errors) == BadField.LISTED and e.value.truncated


def test_joined_errors_move_under_a_prefix_together():
    joined = BadField.joined([BadField("a", "x"), BadField("b.c", "y")])
    moved = joined.under("root")
    assert [(e.field, e.message) for e in moved.errors] == [("root.a", "x"), ("root.b.c", "y")]
    assert moved.field == "root.a" and str(moved) == "2 bad fields: root.a: x; root.b.c: y"


def test_checks_keep_a_later_crash_from_hiding_an_earlier_refusal():
    with pytest.raises(BadField) as e, Checks() as check:
        check.require(False, "size", "must be a number")
        _ = "size" + 1  # a later check tripping over the bad value
    assert e.value.field == "size"
    with pytest.raises(TypeError), Checks():  # with nothing refused, a crash is a crash
        _ = "size" + 1
