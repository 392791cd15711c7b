"""Serving the API with uvicorn, on sockets the daemon already listens on.

Everything here imports FastAPI, starlette or uvicorn, which take about half
a second to import; the daemon imports this module in a thread once the
services are on their way.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

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


def tag(app: ASGIApp, kind: str) -> ASGIApp:
    """`app` with each request marked with its listener (unix, loopback, remote)."""
    return _tag(app, Listener(kind))


async def serve(app: ASGIApp, sock: socket.socket) -> tuple[Server, asyncio.Task[None]]:
    """Serve `app` on `sock`; return once it listens (or raise why it could not)."""
    config = uvicorn.Config(
        app,
        http="h11",
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
