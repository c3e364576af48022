"""Deadlines on every connection, so a slow or silent client holds a connection for a
bounded time, never for ever.

aiohttp bounds header sizes and closes idle keep-alive connections, but has no deadline
for reading a request's headers: a client dripping one header byte a second (slowloris)
keeps its connection, and a socket, open. `ConnectionGuard` sits between the transport
and aiohttp's protocol, passes every call through unchanged, and closes the connection
when a deadline passes:

    idle     from the connection's start until its first byte     idle_timeout_s
    headers  from a request's first byte to the blank line        header_timeout_s
             ending its headers
    body     from then until the body is read                     body_timeout_s
             (enforced by the body middleware, which answers 408)

While the app handles a request (and writes its answer) no read deadline runs; after it,
aiohttp's keep-alive timeout (`idle_timeout_s`) closes a connection that stays silent,
and the next byte starts the next request's header deadline. The app tells the guard
where a request is through `request_started` / `request_finished` (the middleware calls
them; a request served without a guard, as in tests that run aiohttp's own sites, skips
them).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import AsyncIterator

from aiohttp import web

from .server_config import ServerConfig

__all__ = ["ConnectionGuard", "guard_of", "serve"]


class ConnectionGuard(asyncio.Protocol):
    """One connection: aiohttp's protocol (`inner`) behind the deadlines above."""

    def __init__(self, inner: asyncio.Protocol, header_timeout_s: float, idle_timeout_s: float):
        self.inner, self.header_timeout_s, self.idle_timeout_s = (
            inner,
            header_timeout_s,
            idle_timeout_s,
        )
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._in_request = False  # the app is reading, handling or answering a request
        self._awaiting_headers = False  # a request's first byte came, its headers not yet
        self._tail = b""  # the last bytes received while awaiting headers

    # -- what the app tells the guard ---------------------------------------------------------
    def request_started(self) -> None:
        """The app has the request (if the blank line was not seen, e.g. a client ending
        lines with a bare LF, this ends the header deadline); the body deadline is the
        middleware's."""
        self._in_request, self._awaiting_headers = True, False
        self._disarm()

    def request_finished(self) -> None:
        self._in_request = False

    # -- asyncio.Protocol, passed through -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._arm(self.idle_timeout_s)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._in_request and data:
            first = not self._awaiting_headers  # the first byte of a request
            if first:
                self._awaiting_headers, self._tail = True, b""
            # the blank line ending the headers: from here the request is the app's, however
            # long a busy event loop takes to start handling it
            if data.find(b"\r\n\r\n") >= 0 or (self._tail + data[:3]).find(b"\r\n\r\n") >= 0:
                self._in_request, self._awaiting_headers = True, False
                self._disarm()
            else:
                if first:  # headers that came whole with their first byte need no timer
                    self._arm(self.header_timeout_s)
                self._tail = (self._tail + data[-3:])[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.transport = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- the deadline -------------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.transport is not None and not self._in_request:
            self.transport.close()


def guard_of(request: web.BaseRequest) -> ConnectionGuard | None:
    """The guard of the connection a request came on (None: served without one)."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, ConnectionGuard) else None


@contextlib.asynccontextmanager
async def serve(
    app: web.Application, config: ServerConfig, sock: socket.socket
) -> AsyncIterator[web.AppRunner]:
    """Serve `app` on the bound socket `sock`, every connection guarded, until the block
    exits (then connections close and the app's cleanup runs)."""
    runner = web.AppRunner(
        app,
        keepalive_timeout=config.idle_timeout_s,
        # request line and each header field; aiohttp also caps their count
        max_line_size=8190,
        max_field_size=8190,
        # after an answer that left a body unread (413, 408, 401...), discard what still
        # comes for at most this long, so the client can read the answer, then close
        lingering_time=min(2.0, config.header_timeout_s),
    )
    await runner.setup()
    server = runner.server
    assert server is not None
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: ConnectionGuard(server(), config.header_timeout_s, config.idle_timeout_s),
        sock=sock,
        backlog=1024,
    )
    try:
        yield runner
    finally:
        listener.close()
        await runner.cleanup()
        await listener.wait_closed()
