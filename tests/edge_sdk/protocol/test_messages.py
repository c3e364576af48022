from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_sdk.protocol import BadField, ProtocolError
from edge_sdk.protocol import messages as m

KEY = bytes(range(32))

EXAMPLES = [
    m.EnrollRequest("keyboard", "pässwörd", KEY),
    m.EnrollReply("dev-1", "tok"),
    m.CheckInRequest("kb", {"not_charging": 3}, "0.1"),
    m.CheckInRequest(),
    m.CheckInReply(
        assignment=m.TrainingAssignment(
            "kb", 3, 2, 60.5, "ab" * 32, m.AssignedPlan(epochs=1), {"clip": 1.0, "frac_bits": 20}
        )
    ),
    m.CheckInReply(evaluation=m.EvaluationAssignment("kb", 2, 60.0, "ab" * 32)),
    m.CheckInReply(retry_at=100.0, retry_after_s=40.0),
    m.UploadAck("accepted", 12.0, 0, 3),
    m.UploadAck("duplicate", aggregated_into=4),
    m.UploadBegin(2**30, "0" * 64),
    m.UploadSession("u1", 10, 20),
    m.EvaluationReport(3, m.MetricSums(loss_sum=2.5, count=10.0)),
    m.EvaluationAck("recorded"),
    m.FailureReport("not_charging"),
    m.SecAggKeys(4, KEY, KEY[::-1]),
    m.SecAggShares(4, {0: b"x" * 60, 7: b"y"}),
    m.SecAggReveal(4, {1: ("b", "123"), 2: ("s", "9" * 157)}),
    m.SecAggView("sharing", 1.0, index=2, threshold=2, peers={0: (KEY, KEY)}),
    m.SecAggView("failed", 1.0, reason="only 1 device advertised keys"),
    m.TaskCreate("kb", "/bundles/kb", {"mode": "async"}),
    m.HeldoutReport({"accuracy": 0.5}),
    m.HeldoutAck("duplicate"),
    m.ErrorBody(m.ErrorDetail("bad_field", "enroll.secret: must be a string")),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda x: type(x).__name__)
def test_every_message_round_trips_through_json(message):
    import json

    doc = json.loads(json.dumps(message.to_json()))
    assert type(message).from_json(doc) == message


@pytest.mark.parametrize(
    "doc,path",
    [
        ({"secret": "s", "public_key": "AA=="}, "enroll.population"),
        ({"population": "", "secret": "s", "public_key": "AA=="}, "enroll.population"),
        ({"population": "p", "secret": "s", "public_key": "AA=="}, "enroll.public_key"),
        ({"population": "p", "secret": "s", "public_key": "not base64!"}, "enroll.public_key"),
        ({"population": "p", "secret": "s", "public_key": "ÿÿÿÿ"}, "enroll.public_key"),
        ({"population": "p", "secret": None, "public_key": "AA=="}, "enroll.secret"),
        ({"population": "p", "secret": "s", "public_key": "AA==", "extra": 1}, "enroll.extra"),
    ],
)
def test_a_bad_field_is_named_by_its_path(doc, path):
    with pytest.raises(BadField) as e:
        m.EnrollRequest.from_json(doc)
    # the first bad field is `field`; a document with several lists them all in `errors`
    assert e.value.field == path and e.value.details["field"] == path
    assert set(e.value.details) <= {"field", "errors"}
    assert isinstance(e.value, ProtocolError) and e.value.code == "bad_field"


@pytest.mark.parametrize(
    "cls,doc,path",
    [
        (m.UploadBegin, {"size": True, "sha256": "0" * 64}, "upload_begin.size"),
        (m.UploadBegin, {"size": 2**40 + 1, "sha256": "0" * 64}, "upload_begin.size"),
        (m.UploadBegin, {"size": 0, "sha256": "0" * 64}, "upload_begin.size"),
        (m.UploadBegin, {"size": 1.0, "sha256": "0" * 64}, "upload_begin.size"),
        (m.UploadBegin, {"size": 1, "sha256": "A" * 64}, "upload_begin.sha256"),
        (m.UploadBegin, {"size": 1, "sha256": "0" * 64 + "\n"}, "upload_begin.sha256"),
        (
            m.EvaluationReport,
            {"model_version": -1, "sums": {"count": 1}},
            "evaluation_report.model_version",
        ),
        (
            m.EvaluationReport,
            {"model_version": 2**53, "sums": {"count": 1}},
            "evaluation_report.model_version",
        ),
        (m.EvaluationReport, {"model_version": 1, "sums": {}}, "evaluation_report.sums"),
        (
            m.EvaluationReport,
            {"model_version": 1, "sums": {"count": -1}},
            "evaluation_report.sums.count",
        ),
        (
            m.EvaluationReport,
            {"model_version": 1, "sums": {"counts": 1}},
            "evaluation_report.sums.counts",
        ),
        (m.SecAggShares, {"round_id": 1, "shares": {"-1": "AA=="}}, "secagg_shares.shares.-1"),
        (m.SecAggShares, {"round_id": 1, "shares": {"1": 5}}, "secagg_shares.shares.1"),
        (m.SecAggReveal, {"round_id": 1, "reveal": {"1": ["b"]}}, "secagg_reveal.reveal.1"),
        (m.SecAggReveal, {"round_id": 1, "reveal": {"1": ["c", "1"]}}, "secagg_reveal.reveal.1[0]"),
        (
            m.SecAggReveal,
            {"round_id": 1, "reveal": {"1": ["b", "9" * 158]}},
            "secagg_reveal.reveal.1[1]",
        ),
        (
            m.SecAggReveal,
            {"round_id": 1, "reveal": {"1": ["b", "-5"]}},
            "secagg_reveal.reveal.1[1]",
        ),
        (m.CheckInReply, {}, "checkin_reply"),
        (
            m.CheckInReply,
            {
                "retry_at": 1.0,
                "evaluation": {
                    "task_id": "kb",
                    "model_version": 1,
                    "deadline": 2.0,
                    "model_id": "m",
                },
            },
            "checkin_reply",
        ),
        (m.HeldoutReport, {"metrics": {"x" * 65: 1.0}}, "heldout.metrics"),
        (m.HeldoutReport, {"metrics": {str(i): 1.0 for i in range(33)}}, "heldout.metrics"),
        (m.FailureReport, {"reason": "x" * 257}, "failure.reason"),
        (m.FailureReport, ["reason"], "failure"),
    ],
)
def test_types_ranges_and_shapes_are_checked(cls, doc, path):
    with pytest.raises(BadField) as e:
        cls.from_json(doc)
    assert e.value.field == path


def test_replies_ignore_unknown_keys_requests_refuse_them():
    ack = m.UploadAck.from_json({"status": "accepted", "version": 3, "added_later": [1]})
    assert ack == m.UploadAck("accepted", version=3)
    with pytest.raises(BadField, match="unknown key; did you mean 'task_id'"):
        m.CheckInRequest.from_json({"task": "kb"})


def test_none_valued_optional_fields_are_left_out():
    assert m.CheckInReply(retry_at=5.0).to_json() == {"retry_at": 5.0}
    assert "secagg" not in m.TrainingAssignment("kb", 1, 0, 1.0, "m", m.AssignedPlan()).to_json()


@given(st.integers(0, 2**53 - 1))
def test_bounded_ints_parse_their_decimal_text(n):
    assert m.parse_bounded_int(str(n), "q") == n


@pytest.mark.parametrize(
    "text",
    ["", "²", "１", "-1", "+1", " 1", "1 ", "1.0", "9" * 17, "9007199254740992", "0x10", "1_000"],
)
def test_bounded_ints_refuse_everything_else(text):
    with pytest.raises(BadField):
        m.parse_bounded_int(text, "query.version")


@dataclasses.dataclass(frozen=True)
class Inner:
    k: int = 1

    def __post_init__(self):
        if self.k > 5:
            raise ValueError("k must be <= 5")


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner
    names: list[str] = dataclasses.field(default_factory=list)


def test_any_dataclass_decodes_with_nested_types_and_post_init_errors():
    assert m.decode_value(Outer, {"inner": {"k": 2}, "names": ["a"]}, "o") == Outer(Inner(2), ["a"])
    with pytest.raises(BadField) as e:
        m.decode_value(Outer, {"inner": {"k": 9}}, "o")
    assert e.value.field == "o.inner" and "k must be <= 5" in str(e.value)
    with pytest.raises(BadField) as e:
        m.decode_value(Outer, {"inner": {}, "names": [1]}, "o")
    assert e.value.field == "o.names[0]"
