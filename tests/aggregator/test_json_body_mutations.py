"""Hypothesis mutations of every JSON request body (a value replaced by any JSON value, a
key dropped or added, the text's bytes cut or altered), posted with valid device and
admin credentials to a real server on 127.0.0.1: never a 5xx, and the server stays up."""

from __future__ import annotations

import base64
import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.config import TaskSettings
from edge_sdk.clock import FakeClock
from edge_sdk.protocol import generate_signing_key, public_key_of

from .fleet import ADMIN, SECRET, ThreadedServer

KEY = base64.b64encode(public_key_of(generate_signing_key())).decode()
BODIES = {
    "/v1/enroll": {"population": "keyboard", "secret": SECRET, "public_key": KEY},
    "/v1/checkin": {"task_id": "kb", "eligibility": {"not_charging": 1}, "sdk_version": "0.1"},
    "/v1/tasks/kb/failures": {"reason": "not_charging"},
    "/v1/tasks/kb/evaluations": {"model_version": 0, "sums": {"count": 3, "loss_sum": 1.5}},
    "/v1/tasks/kb/uploads": {"size": 100, "sha256": "0" * 64},
    "/v1/tasks/kb/secagg/keys": {"round_id": 1, "c_public": KEY, "s_public": KEY},
    "/v1/tasks/kb/secagg/shares": {"round_id": 1, "shares": {"0": KEY}},
    "/v1/tasks/kb/secagg/reveal": {"round_id": 1, "reveal": {"0": ["b", "12345"]}},
    "/v1/admin/tasks": {
        "task_id": "new",
        "bundle_dir": "/nonexistent",
        "settings": {"mode": "async", "async_": {"buffer_size": 2}},
    },
    "/v1/admin/tasks/kb/versions/0/heldout": {"metrics": {"accuracy": 0.5}},
}

# values that broke the server before (issue 18) are drawn as often as all the others
HOSTILE = [
    "",
    "\ud800",
    "²",
    "9" * 40,
    "pässwörd",
    "\x00",
    KEY,
    "kb",
    "b",
    "s",
    10**30,
    -1,
    2**53,
    1e308,
    -0.0,
    True,
    None,
    [[[[[]]]]],
    {"": None},
    ["b", "9" * 400],
]
SPECIAL = st.sampled_from(HOSTILE)
JSON_VALUES = SPECIAL | st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**40), 10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | SPECIAL,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server on 127.0.0.1 in a background thread, with a task and a device."""
    from model_zoo.zoo import build_bundle

    tmp = tmp_path_factory.mktemp("mutations")
    bundle = build_bundle("mlp", tmp / "mlp")
    with ThreadedServer(tmp / "data", FakeClock(), rate_per_s=1e6, burst=10**6) as srv:
        srv.service.create_task("kb", str(bundle), TaskSettings())
        device = srv.service.enroll("keyboard", SECRET, public_key_of(generate_signing_key()))
        yield (
            srv.url,
            {
                "Authorization": f"Bearer {device['token']}",
                "X-Admin-Token": ADMIN,
                "Content-Type": "application/json",
            },
        )


@st.composite
def mutated(draw, doc):
    """doc with one value replaced, one key dropped or one key added, at any depth."""
    doc = json.loads(json.dumps(doc))
    node = doc
    while isinstance(node, dict) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node)))
        if not isinstance(node[key], dict) or not node[key]:
            break
        node = node[key]
    action = draw(st.sampled_from(["replace", "drop", "add"]))
    if action == "add" or not node:
        node[draw(st.text(max_size=12))] = draw(JSON_VALUES)
    else:
        key = draw(st.sampled_from(sorted(node)))
        if action == "drop":
            del node[key]
        else:
            node[key] = draw(JSON_VALUES)
    return doc


def _text(doc) -> bytes:
    return json.dumps(doc, ensure_ascii=True).encode()


@st.composite
def damaged(draw, doc):
    """doc's text with a byte range cut out or overwritten."""
    data = bytearray(_text(doc))
    start = draw(st.integers(0, len(data) - 1))
    end = draw(st.integers(start, min(len(data), start + 8)))
    data[start:end] = draw(st.binary(max_size=8))
    return bytes(data)


def _body(path):
    return st.one_of(mutated(BODIES[path]).map(_text), damaged(BODIES[path]))


@pytest.mark.parametrize("path", sorted(BODIES))
def test_no_mutation_of_a_json_body_gets_a_server_error(server, path):
    url, headers = server

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_body(path))
    def post(body):
        r = requests.post(url + path, data=body, headers=headers, timeout=30)
        assert r.status_code < 500, (path, body[:300], r.text[:300])

    post()
    assert requests.get(url + "/v1/status", timeout=30).status_code == 200


def _leaf_paths(doc, prefix=()):
    for key, value in doc.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from _leaf_paths(value, prefix + (key,))


@pytest.mark.parametrize("path", sorted(BODIES))
def test_every_hostile_value_at_every_field_is_answered_below_500(server, path):
    url, headers = server
    for where in _leaf_paths(BODIES[path]):
        for value in HOSTILE:
            doc = json.loads(json.dumps(BODIES[path]))
            node = doc
            for key in where[:-1]:
                node = node[key]
            node[where[-1]] = value
            r = requests.post(url + path, data=_text(doc), headers=headers, timeout=30)
            assert r.status_code < 500, (path, where, value, r.text[:300])
