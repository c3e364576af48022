"""The secure-aggregation steps over HTTP: typed JSON messages (base64 for keys and
ciphertexts, decimal text for shares), raw uint32 bytes for masked inputs; the service
runs the protocol on its thread."""

from __future__ import annotations

from aiohttp import web

from edge_sdk.protocol.messages import (
    SecAggKeys,
    SecAggReveal,
    SecAggShares,
    SecAggView,
    parse_bounded_int,
)

from .app_state import DEVICE, METRICS, SERVICE, read_message, run_service


def _round_id(request: web.Request) -> int:
    return parse_bounded_int(request.query.get("round_id", ""), "query.round_id")


def _view(view: dict) -> web.Response:
    """The service's view (bytes as bytes) as a SecAggView reply."""
    return web.json_response(SecAggView(**view).to_json())


async def secagg_state(request: web.Request) -> web.Response:
    return _view(
        await run_service(
            request.app,
            request.app[SERVICE].secagg_state,
            request[DEVICE],
            request.match_info["task_id"],
            _round_id(request),
        )
    )


async def secagg_keys(request: web.Request) -> web.Response:
    msg = await read_message(request, SecAggKeys)
    return _view(
        await run_service(
            request.app,
            request.app[SERVICE].secagg_advertise,
            request[DEVICE],
            request.match_info["task_id"],
            msg.round_id,
            msg.c_public,
            msg.s_public,
        )
    )


async def secagg_shares(request: web.Request) -> web.Response:
    msg = await read_message(request, SecAggShares)
    return _view(
        await run_service(
            request.app,
            request.app[SERVICE].secagg_share,
            request[DEVICE],
            request.match_info["task_id"],
            msg.round_id,
            msg.shares,
        )
    )


async def secagg_masked(request: web.Request) -> web.Response:
    round_id = _round_id(request)
    data = await request.read()
    request.app[METRICS].bytes_in.inc(len(data))
    return _view(
        await run_service(
            request.app,
            request.app[SERVICE].secagg_masked_input,
            request[DEVICE],
            request.match_info["task_id"],
            round_id,
            data,
        )
    )


async def secagg_reveal(request: web.Request) -> web.Response:
    msg = await read_message(request, SecAggReveal)
    return _view(
        await run_service(
            request.app,
            request.app[SERVICE].secagg_reveal,
            request[DEVICE],
            request.match_info["task_id"],
            msg.round_id,
            msg.shares(),
        )
    )
