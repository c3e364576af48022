"""The secure-aggregation steps over HTTP: JSON with base64 for keys and ciphertexts,
raw uint32 bytes for masked inputs; the service runs the protocol."""
from __future__ import annotations

import base64
import binascii

from aiohttp import web

from .errors import BadRequest
from .app_state import DEVICE, METRICS, SERVICE, _field, _json


def _b64(value, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise BadRequest(f"{what} must be base64") from None


def _index_map(doc: dict, name: str) -> dict:
    value = _field(doc, name, dict)
    try:
        return {int(k): v for k, v in value.items()}
    except ValueError:
        raise BadRequest(f"the keys of {name!r} are device indices (integers)") from None


def _round_id(request: web.Request, doc: dict | None = None) -> int:
    value = doc.get("round_id") if doc is not None else request.query.get("round_id")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRequest("round_id is a required integer") from None


def _secure_view(view: dict) -> web.Response:
    doc = dict(view)
    if "peers" in doc:
        doc["peers"] = {str(x): [base64.b64encode(c).decode(), base64.b64encode(s).decode()]
                        for x, (c, s) in doc["peers"].items()}
    if "shares" in doc:
        doc["shares"] = {str(x): base64.b64encode(b).decode() for x, b in doc["shares"].items()}
    return web.json_response(doc)


async def secagg_state(request: web.Request) -> web.Response:
    return _secure_view(request.app[SERVICE].secagg_state(
        request[DEVICE], request.match_info["task_id"], _round_id(request)))


async def secagg_keys(request: web.Request) -> web.Response:
    doc = await _json(request)
    return _secure_view(request.app[SERVICE].secagg_advertise(
        request[DEVICE], request.match_info["task_id"], _round_id(request, doc),
        _b64(doc.get("c_public"), "c_public"), _b64(doc.get("s_public"), "s_public")))


async def secagg_shares(request: web.Request) -> web.Response:
    doc = await _json(request)
    shares = {x: _b64(b, "a share") for x, b in _index_map(doc, "shares").items()}
    return _secure_view(request.app[SERVICE].secagg_share(
        request[DEVICE], request.match_info["task_id"], _round_id(request, doc), shares))


async def secagg_masked(request: web.Request) -> web.Response:
    data = await request.read()
    request.app[METRICS].bytes_in.inc(len(data))
    return _secure_view(request.app[SERVICE].secagg_masked_input(
        request[DEVICE], request.match_info["task_id"], _round_id(request), data))


async def secagg_reveal(request: web.Request) -> web.Response:
    doc = await _json(request)
    reveal = {}
    for x, item in _index_map(doc, "reveal").items():
        if not (isinstance(item, list) and len(item) == 2 and item[0] in ("b", "s")
                and isinstance(item[1], str) and item[1].isdigit()):
            raise BadRequest('a reveal is ["b" or "s", decimal share]')
        reveal[x] = (item[0], int(item[1]))
    return _secure_view(request.app[SERVICE].secagg_reveal(
        request[DEVICE], request.match_info["task_id"], _round_id(request, doc), reveal))
