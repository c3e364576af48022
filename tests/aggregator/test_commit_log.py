"""The serve log's line per committed version: the funnel since the previous commit."""

from __future__ import annotations

import logging

from aggregator.commit_log import CommitLog, funnel_difference, funnel_text


def _funnel(checked_in, selected, reported, accepted, rejected=None, dropped=None):
    return {
        "checked_in": checked_in,
        "selected": selected,
        "reported": reported,
        "accepted": accepted,
        "rejected": rejected or {},
        "dropped": dropped or {},
    }


def test_each_line_counts_since_the_previous_commit_with_late_apart(caplog):
    log = CommitLog(logging.getLogger("test.rounds"))
    first = _funnel(12, 10, 9, 8, {"late": 1})
    second = _funnel(
        52, 42, 39, 36, {"late": 3, "bad_signature": 1}, {"round_full": 2, "deadline": 1}
    )
    with caplog.at_level(logging.INFO, logger="test.rounds"):
        one = log.committed("kb", 11, first, {"mean_loss": 3.4567}, now=100.0)
        two = log.committed("kb", 12, second, {"mean_loss": 3.21}, now=104.1)
        log.committed("other", 1, first, {}, now=104.2)  # tasks are apart
    assert one == (
        "task kb v11: 12 checked in, 10 assigned, 9 uploaded, 8 accepted, 1 late, "
        "0 rejected (since created); loss 3.46"
    )
    assert two == (
        "task kb v12: 40 checked in, 32 assigned, 30 uploaded, 28 accepted, 2 late, "
        "1 rejected, 3 dropped; loss 3.21, 4.1 s"
    )
    assert [r.getMessage() for r in caplog.records][:2] == [one, two]
    assert caplog.records[2].getMessage().startswith("task other v1: 12 checked in")


def test_a_funnel_difference_keeps_only_reasons_that_moved():
    before = _funnel(5, 4, 4, 3, {"late": 1}, {"deadline": 2})
    after = _funnel(9, 7, 6, 5, {"late": 1, "norm": 1}, {"deadline": 2})
    assert funnel_difference(after, before) == _funnel(4, 3, 2, 2, {"norm": 1}, {})
    assert (
        funnel_text(_funnel(0, 0, 0, 0))
        == "0 checked in, 0 assigned, 0 uploaded, 0 accepted, 0 late, 0 rejected"
    )
