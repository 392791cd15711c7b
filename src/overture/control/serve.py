"""Serving the API with uvicorn, on sockets the daemon already listens on.

Everything here imports FastAPI, starlette or uvicorn, which take about half
a second to import; the daemon imports this module in a thread once the
services are on their way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import Iterator

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from overture.control.api import create_app
from overture.control.auth import Listener
from overture.control.auth import tag as _tag

__all__ = ["Server", "create_app", "serve", "tag"]


class Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the daemon and says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, refusing a malformed request in JSON.

    Every other error of the API is `{"error": ...}`; a request that h11
    cannot parse (a NUL or a form feed in a header, a broken request line)
    gets the same shape, with h11's reason instead of uvicorn's plain text.
    """

    def send_400_response(self, msg: str) -> None:
        # Called from uvicorn's `except h11.RemoteProtocolError` block.
        problem = sys.exception()
        why = f": {problem}" if isinstance(problem, h11.RemoteProtocolError) else ""
        body = json.dumps({"error": f"invalid HTTP request{why}"}).encode()
        head = h11.Response(
            status_code=400,
            headers=[
                (b"content-type", b"application/json"),
                (b"connection", b"close"),
            ],
            reason=b"Bad Request",
        )
        for event in (head, h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()


def tag(app: ASGIApp, kind: str) -> ASGIApp:
    """`app` with each request marked with its listener (unix, loopback, remote)."""
    return _tag(app, Listener(kind))


async def serve(app: ASGIApp, sock: socket.socket) -> tuple[Server, asyncio.Task[None]]:
    """Serve `app` on `sock`; return once it listens (or raise why it could not)."""
    config = uvicorn.Config(
        app,
        http=_Protocol,
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = Server(config)
    task = asyncio.create_task(server.serve([sock]), name="api server")
    listening = asyncio.create_task(server.listening.wait())
    await asyncio.wait([listening, task], return_when=asyncio.FIRST_COMPLETED)
    listening.cancel()
    if task.done():
        task.result()  # raises what stopped it
    return server, task
