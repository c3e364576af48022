"""A hostile campaign against a real `edge-fl serve` subprocess, with valid device and
admin credentials: hypothesis mutations of valid signed updates (header fields, tensor
values, chunk scales, raw bytes) and of every JSON body, query and header a device or an
operator sends. No answer is a 5xx, the server never dies, every committed model stays
finite, and after the campaign the server restarts on its data dir with its ledger
holding exactly the updates it acknowledged as accepted."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import sqlite3
import zlib

import numpy as np
import pytest
import requests
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_sdk.bundle import Bundle
from edge_sdk.protocol import (
    DEFAULT_CODEC,
    CodecSpec,
    UpdateMeta,
    UpdatePipeline,
    decode_parameters,
    encode_update,
    generate_signing_key,
    public_key_of,
)
from edge_sdk.protocol.message import UPDATE_MAGIC, DecodeLimits, _frame, _unframe

from .fleet import ADMIN, SECRET, ServerProcess, free_port

CAMPAIGN = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
ADMIN_HEADERS = {"X-Admin-Token": ADMIN}


class Campaign:
    """The server under attack, its devices, and what it acknowledged."""

    def __init__(self, server: ServerProcess, bundle: Bundle):
        self.server, self.bundle = server, bundle
        self.http = requests.Session()
        self.devices: list[dict] = []
        self.accepted_keys: set[tuple[str, str]] = set()  # (device, idempotency key)
        self.sent = 0

    @property
    def url(self) -> str:
        return self.server.url

    def enroll(self) -> dict:
        key = generate_signing_key()
        r = self.http.post(
            self.url + "/v1/enroll",
            json={
                "population": "keyboard",
                "secret": SECRET,
                "public_key": base64.b64encode(public_key_of(key)).decode(),
            },
        )
        assert r.status_code == 201, r.text
        return r.json() | {"key": key}

    def device_call(self, device: dict, method: str, path: str, **kw) -> requests.Response:
        headers = {"Authorization": f"Bearer {device['token']}"} | kw.pop("headers", {})
        r = self.http.request(method, self.url + path, headers=headers, timeout=30, **kw)
        self.check_alive(r, method, path)
        return r

    def check_alive(self, r: requests.Response, method: str, path: str) -> None:
        assert r.status_code < 500, (method, path, r.status_code, r.text[:400])
        assert self.server.proc.poll() is None, "the server died"

    def assignment_version(self, device: dict) -> int:
        r = self.device_call(device, "POST", "/v1/checkin", json={"task_id": "kb"})
        doc = r.json() if r.status_code == 200 else {}
        return doc.get("assignment", {}).get("model_version", 0)

    def upload(self, device: dict, data: bytes) -> requests.Response:
        self.sent += 1
        r = self.device_call(
            device,
            "POST",
            "/v1/tasks/kb/updates",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if r.status_code == 200 and r.json().get("status") == "accepted":
            meta = _unframe(data, UPDATE_MAGIC, DecodeLimits()).header["meta"]
            self.accepted_keys.add((meta["device_id"], meta["idempotency_key"]))
        return r


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    from model_zoo.zoo import build_bundle

    tmp = tmp_path_factory.mktemp("campaign")
    bundle = Bundle.load(build_bundle("mlp", tmp / "mlp"))
    server = ServerProcess(tmp / "data", free_port())
    server.start(rate_per_s=1e6, burst=10**6)
    c = Campaign(server, bundle)
    r = c.http.post(
        c.url + "/v1/admin/tasks",
        headers=ADMIN_HEADERS,
        json={
            "task_id": "kb",
            "bundle_dir": str(bundle.path),
            "settings": {
                "mode": "async",
                "async": {"concurrency": 64, "buffer_size": 3, "max_staleness": 10_000},
            },
        },
    )
    assert r.status_code == 201, r.text
    c.devices = [c.enroll() for _ in range(6)]
    try:
        yield c
    finally:
        server.stop()


# -- updates ------------------------------------------------------------------------------
def _valid_update(
    c: Campaign,
    device: dict,
    codec: CodecSpec,
    value: float | None,
    seed: int,
    num_examples: int = 5,
) -> bytes:
    rng = np.random.default_rng(seed)
    specs = c.bundle.parameter_specs
    delta = {
        s.name: (
            np.full(s.shape, value, np.float32)
            if value is not None
            else rng.normal(0, 0.01, s.shape).astype(np.float32)
        )
        for s in specs
    }
    meta = UpdateMeta(
        "kb",
        c.bundle.model_id,
        c.assignment_version(device),
        device["device_id"],
        f"campaign-{c.sent}-{seed}",
        num_examples,
    )
    return encode_update(
        delta, specs, meta, UpdatePipeline(codec), signing_key=device["key"], rng=rng
    )


def _reframe(
    data: bytes, key: bytes, header: dict | None = None, body: bytes | None = None
) -> bytes:
    """The same update with its header or (decompressed) body replaced, re-signed by the
    device: what an enrolled, hostile device can send."""
    frame = _unframe(data, UPDATE_MAGIC, DecodeLimits())
    raw = zstandard.ZstdDecompressor().decompress(bytes(frame.body))
    return _frame(
        UPDATE_MAGIC,
        frame.header if header is None else header,
        [raw if body is None else body],
        key,
    )


HOSTILE_NUMBERS = st.sampled_from(
    [
        0,
        -1,
        1,
        2**31,
        2**53 + 1,
        2**63,
        10**15,
        10**30,
        1e400,
        -1e400,
        float("nan"),
        1e38,
        3.5,
        True,
        None,
        "5",
        [],
        {},
    ]
)
HOSTILE_TEXT = st.sampled_from(
    ["", ".", "../../x", "a//b", "\ud800", "é" * 300, "x" * 5000, "kb", "\x00", "<script>"]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | HOSTILE_NUMBERS
    | HOSTILE_TEXT,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
META_FIELDS = [f.name for f in dataclasses.fields(UpdateMeta)]
HEADER_FIELDS = META_FIELDS + ["meta", "codec", "seed", "local_dp", "extra"]


def _dumps(value) -> str:
    """JSON as a hostile client writes it: NaN, Infinity and lone surrogates included."""
    return json.dumps(value, allow_nan=True, ensure_ascii=True)


@CAMPAIGN
@given(
    field=st.sampled_from(HEADER_FIELDS),
    value=JSON_VALUES | HOSTILE_NUMBERS | HOSTILE_TEXT,
    device_index=st.integers(0, 5),
    default_codec=st.booleans(),
    seed=st.integers(0, 2**20),
)
def test_mutated_update_headers_never_get_a_server_error(
    campaign, field, value, device_index, default_codec, seed
):
    device = campaign.devices[device_index]
    data = _valid_update(
        campaign, device, DEFAULT_CODEC if default_codec else CodecSpec(), None, seed
    )
    header = _unframe(data, UPDATE_MAGIC, DecodeLimits()).header
    if field in META_FIELDS:
        header = header | {"meta": header["meta"] | {field: value}}
    else:
        header = header | {field: value}
    header = json.loads(_dumps(header))  # NaN/Infinity survive as floats
    campaign.upload(device, _reframe(data, device["key"], header=header))


@CAMPAIGN
@given(
    value=st.sampled_from([1e38, -1e38, 3e38, float("inf"), float("nan"), 1e30, 65504.0]),
    device_index=st.integers(0, 5),
    seed=st.integers(0, 2**20),
    examples=st.sampled_from([1, 5, 10**9, 2**31 - 1]),
)
def test_huge_or_non_finite_values_never_reach_the_model(
    campaign, value, device_index, seed, examples
):
    device = campaign.devices[device_index]
    data = _valid_update(campaign, device, CodecSpec(), 0.01, seed, examples)
    body = np.full(
        sum(int(np.prod(s.shape)) for s in campaign.bundle.parameter_specs), value, "<f4"
    ).tobytes()
    r = campaign.upload(device, _reframe(data, device["key"], body=body))
    assert 400 <= r.status_code < 500, r.text  # non-finite, or far above any norm bound


@CAMPAIGN
@given(
    scale=st.sampled_from([3e38, 1e30, float("inf"), float("nan"), -1.0, 1e-45]),
    device_index=st.integers(0, 5),
    seed=st.integers(0, 2**20),
)
def test_hostile_chunk_scales_never_reach_the_model(campaign, scale, device_index, seed):
    """Default codec: every kept value is 0.5, so every chunk's scale is float32(0.5);
    those scales are replaced by hostile ones and the update re-signed."""
    device = campaign.devices[device_index]
    data = _valid_update(campaign, device, DEFAULT_CODEC, 0.5, seed)
    frame = _unframe(data, UPDATE_MAGIC, DecodeLimits())
    raw = zstandard.ZstdDecompressor().decompress(bytes(frame.body))
    hostile = raw.replace(np.float32(0.5).tobytes(), np.float32(scale).tobytes())
    assert hostile != raw, "no chunk scale found: the codec's layout changed"
    r = campaign.upload(device, _reframe(data, device["key"], body=hostile))
    if scale != 1e-45:  # a tiny scale is a valid (tiny) update
        assert 400 <= r.status_code < 500, r.text


@CAMPAIGN
@given(data=st.data(), device_index=st.integers(0, 5), default_codec=st.booleans())
def test_damaged_updates_never_get_a_server_error(campaign, data, device_index, default_codec):
    device = campaign.devices[device_index]
    message = bytearray(
        _valid_update(
            campaign,
            device,
            DEFAULT_CODEC if default_codec else CodecSpec(),
            None,
            data.draw(st.integers(0, 2**20)),
        )
    )
    for _ in range(data.draw(st.integers(1, 8))):
        message[data.draw(st.integers(0, len(message) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(message)))
    campaign.upload(device, bytes(message[:cut]))


# -- JSON bodies, queries and headers ------------------------------------------------------
DEVICE_JSON = [
    "/v1/checkin",
    "/v1/tasks/kb/failures",
    "/v1/tasks/kb/evaluations",
    "/v1/tasks/kb/uploads",
    "/v1/tasks/kb/secagg/keys",
    "/v1/tasks/kb/secagg/shares",
    "/v1/tasks/kb/secagg/masked",
    "/v1/tasks/kb/secagg/reveal",
]
ADMIN_JSON = ["/v1/admin/tasks", "/v1/admin/tasks/kb/versions/0/heldout"]
RAW_BODIES = st.sampled_from(
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b"9" * 5000,
        b'{"task_id": ' + b"9" * 5000 + b"}",
        b'{"reason": "\\ud800"}',
        b'{"task_id": NaN}',
        b'{"task_id": Infinity, "x": -Infinity}',
        b"\xff\xfe\x00",
        b'{"population": "keyboard", "secret": "\xc3\xa9\xc3\xa9", "public_key": "AAAA"}',
        b'{"secret": "\\u00e9", "population": "keyboard", "public_key": "' + b"A" * 44 + b'"}',
        b"",
        b"null",
        b"[]",
        b'"x"',
        b"1e400",
    ]
)


@CAMPAIGN
@given(
    path=st.sampled_from(DEVICE_JSON + ADMIN_JSON + ["/v1/enroll"]),
    body=st.one_of(
        JSON_VALUES.map(lambda v: _dumps(v).encode()),
        RAW_BODIES,
        st.dictionaries(
            st.sampled_from(
                [
                    "task_id",
                    "reason",
                    "size",
                    "sha256",
                    "model_version",
                    "sums",
                    "population",
                    "secret",
                    "public_key",
                    "round",
                    "metrics",
                    "settings",
                    "bundle_dir",
                    "shares",
                    "c_public",
                    "s_public",
                ]
            ),
            JSON_VALUES,
            max_size=5,
        ).map(lambda d: _dumps(d).encode()),
    ),
    charset=st.sampled_from(["utf-8", "bogus-42", "latin-1", "utf-16", None]),
    device_index=st.integers(0, 5),
)
def test_hostile_json_bodies_never_get_a_server_error(campaign, path, body, charset, device_index):
    content_type = "application/json" + (f"; charset={charset}" if charset else "")
    headers = {"Content-Type": content_type} | (
        ADMIN_HEADERS if path.startswith("/v1/admin") else {}
    )
    campaign.device_call(campaign.devices[device_index], "POST", path, data=body, headers=headers)


@CAMPAIGN
@given(
    version=st.sampled_from(["²", "9" * 30, "-1", "0x10", "1e3", "", "٣", "0" * 400, "1"]),
    admin=st.booleans(),
)
def test_hostile_queries_never_get_a_server_error(campaign, version, admin):
    path = "/v1/admin/tasks/kb/model" if admin else "/v1/tasks/kb/model"
    campaign.device_call(
        campaign.devices[0],
        "GET",
        path,
        params={"version": version},
        headers=ADMIN_HEADERS if admin else {},
    )


@pytest.mark.parametrize("token", [b"\xff\xfe", "é".encode(), b"Bearer", b"x" * 10_000, b""])
@pytest.mark.parametrize("path", ["/v1/checkin", "/v1/tasks/kb/model", "/v1/uploads/abc"])
def test_hostile_bearer_tokens_never_get_a_server_error(campaign, token, path):
    method = "GET" if "model" in path or "uploads" in path else "POST"
    r = campaign.http.request(
        method, campaign.url + path, headers={"Authorization": b"Bearer " + token}, timeout=30
    )
    campaign.check_alive(r, method, path)
    assert r.status_code in (400, 401, 429)


def test_gzip_bomb_is_not_inflated(campaign):
    bomb = zlib.compress(b"\0" * (64 << 20), 9)
    r = campaign.device_call(
        campaign.devices[0],
        "POST",
        "/v1/tasks/kb/updates",
        data=bomb,
        headers={"Content-Encoding": "deflate", "Content-Type": "application/octet-stream"},
    )
    assert 400 <= r.status_code < 500


# -- after the campaign ------------------------------------------------------------------
def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_after_the_campaign_the_model_is_finite_and_a_restart_keeps_every_count(campaign):
    c = campaign
    for path in ("/metrics", "/v1/status"):
        r = c.http.get(c.url + path, timeout=30)
        c.check_alive(r, "GET", path)
        assert r.status_code == 200
    _strict_json(c.http.get(c.url + "/v1/status").text)  # no NaN or Infinity
    assert c.sent > 100 and c.accepted_keys, "the campaign must have sent valid updates too"

    c.server.stop()
    c.server.start(rate_per_s=1e6, burst=10**6)
    doc = _strict_json(c.http.get(c.url + "/v1/admin/tasks/kb", headers=ADMIN_HEADERS).text)
    assert doc.get("state", "ok") != "failed", doc
    for entry in doc["versions"]:
        r = c.http.get(
            c.url + "/v1/admin/tasks/kb/model",
            headers=ADMIN_HEADERS,
            params={"version": entry["version"]},
        )
        assert r.status_code == 200
        params = decode_parameters(r.content, c.bundle.parameter_specs)[1]
        assert all(
            np.isfinite(p).all() and math.isfinite(float(np.abs(p).max())) for p in params.values()
        )
    with sqlite3.connect(c.server.data_dir / "aggregator.db") as db:
        counted = [
            tuple(row)
            for row in db.execute(
                "SELECT device_id, idempotency_key FROM updates UNION ALL "
                "SELECT device_id, idempotency_key FROM ledger"
            )
        ]
    assert len(counted) == len(set(counted))  # exactly once
    assert set(counted) == c.accepted_keys  # every acknowledged update, nothing else
