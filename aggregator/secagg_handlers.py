"""The secure-aggregation steps over HTTP: typed JSON messages (base64 for keys and
ciphertexts, decimal text for shares), raw uint32 bytes for masked inputs; the service
runs the protocol on its thread.

Every step has the same shape (read the step's arguments from the request, call one
service method with the device and task, reply with the device's SecAggView), so each
is one row at the end of this module: the service method and the reader of its arguments."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from edge_sdk.protocol.messages import (
    SecAggKeys,
    SecAggReveal,
    SecAggShares,
    SecAggView,
    parse_bounded_int,
)

from .app_state import DEVICE, METRICS, SERVICE, read_message, run_service

Handler = Callable[[web.Request], Awaitable[web.Response]]
ReadArgs = Callable[[web.Request], Awaitable[tuple]]


def _round_id(request: web.Request) -> int:
    return parse_bounded_int(request.query.get("round_id", ""), "query.round_id")


async def _state_args(request: web.Request) -> tuple:
    return (_round_id(request),)


async def _keys_args(request: web.Request) -> tuple:
    msg = await read_message(request, SecAggKeys)
    return msg.round_id, msg.c_public, msg.s_public


async def _shares_args(request: web.Request) -> tuple:
    msg = await read_message(request, SecAggShares)
    return msg.round_id, msg.shares


async def _masked_args(request: web.Request) -> tuple:
    round_id = _round_id(request)  # checked before the body is read
    data = await request.read()
    request.app[METRICS].bytes_in.inc(len(data))
    return round_id, data


async def _reveal_args(request: web.Request) -> tuple:
    msg = await read_message(request, SecAggReveal)
    return msg.round_id, msg.shares()


def _step(step: str, method: str, read_args: ReadArgs) -> Handler:
    """The handler `secagg_<step>` (its name is the OpenAPI operationId): on the
    service's thread `service.<method>(device, task_id, *read_args(request))`, whose view
    (bytes as bytes) it replies as a SecAggView."""

    async def handler(request: web.Request) -> web.Response:
        args = await read_args(request)
        view = await run_service(
            request.app,
            getattr(request.app[SERVICE], method),
            request[DEVICE],
            request.match_info["task_id"],
            *args,
        )
        return web.json_response(SecAggView(**view).to_json())

    handler.__name__ = handler.__qualname__ = f"secagg_{step}"
    return handler


# one row a step: its name, the service method and the reader of its arguments after
# device and task id
secagg_state = _step("state", "secagg_state", _state_args)
secagg_keys = _step("keys", "secagg_advertise", _keys_args)
secagg_shares = _step("shares", "secagg_share", _shares_args)
secagg_masked = _step("masked", "secagg_masked_input", _masked_args)
secagg_reveal = _step("reveal", "secagg_reveal", _reveal_args)
