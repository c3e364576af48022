"""What every handler shares: the app's typed state and the parsing of request bodies
(errors as BadRequest, which the error middleware renders)."""
from __future__ import annotations

import json

import aiohttp
from aiohttp import web

from .errors import BadRequest
from .metrics import Metrics
from .server_config import ServerConfig
from .service import AggregatorService
from .store import Device

SERVICE = web.AppKey("service", AggregatorService)
METRICS = web.AppKey("metrics", Metrics)
CONFIG = web.AppKey("config", ServerConfig)
PEERS = web.AppKey("peers", aiohttp.ClientSession)  # forwards calls to a task's leader
DEVICE = web.RequestKey("device", Device)


async def _json(request: web.Request) -> dict:
    try:
        doc = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the body must be JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    return doc


def _field(doc: dict, name: str, kind, required: bool = True):
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise BadRequest(f"field {name!r} must be {getattr(kind, '__name__', kind)}")
    return value
