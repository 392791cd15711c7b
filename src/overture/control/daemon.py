"""The daemon: one project's orchestrator and its control API, in one loop.

A `Daemon` owns the orchestrator, the event streams and metrics built on its
bus, and one uvicorn server per listener (the unix socket, and a TCP port if
asked), all on the running event loop. It holds the project lock through the
guard, so only one daemon runs per project, and keeps a record of itself in
`.overture/daemon.json`. How it runs (in the terminal or detached) and what it
prints is decided by `overture.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from overture import __version__
from overture.config.model import Project
from overture.control import schema
from overture.control.controller import Controller
from overture.control.listen import (
    bind_tcp,
    bind_unix,
    is_loopback,
    parse_listen,
    url_of,
)
from overture.control.metrics import Metrics
from overture.control.paths import DaemonPaths
from overture.control.streams import EventFeed, Fanout
from overture.graph import Graph
from overture.guard import Guard
from overture.lifecycle import HAS_PROCESS, ServiceState, Transition
from overture.observe.events import EventBus
from overture.observe.output import LogLine, OutputStore
from overture.orchestrator import Orchestrator

if TYPE_CHECKING:
    from overture.control.api import Backend
    from overture.control.serve import Server

S = ServiceState

TOKEN_ENV = "OVERTURE_TOKEN"
"""A bearer token to use instead of a generated one."""

REPEAT_WINDOW = 0.5
"""Seconds after the signal that began the stop in which a SIGINT is the same
request, not a second Ctrl-C: a signal sent to the whole process group also
reaches a wrapper that forwards it, so Overture gets it twice (`timeout`
forwards at once; `uv run` without a terminal, 0.20 s later, measured with
uv 0.13.9)."""


@dataclass
class DaemonOptions:
    listen: str | None = None
    """`[HOST:]PORT` of a TCP listener (the dashboard); None: the socket only."""
    allow_remote: bool = False
    """Accept a non-loopback `listen` address (every call then needs the token)."""
    socket_mode: int = 0o600


class Daemon:
    """Start with `async with`; `exited` resolves when it is asked to end."""

    def __init__(
        self,
        project: Project,
        graph: Graph,
        options: DaemonOptions | None = None,
        message: Callable[[str], None] = print,
    ) -> None:
        self.project = project
        self.options = options or DaemonOptions()
        self.message = message
        self.paths = DaemonPaths(project.root)
        self.bus = EventBus()
        self.outputs = OutputStore(project.state_dir / "logs")
        self.orchestrator = Orchestrator(project, graph, self.bus, self.outputs)
        self.metrics = Metrics()
        self.bus.subscribe(self.metrics.observe)
        self.events = EventFeed(self.bus)
        self.lines: Fanout[LogLine] = Fanout()
        self.outputs.listeners.append(self.lines.publish)
        self.controller = Controller(self.orchestrator, self.metrics)
        self.guard = Guard(project.state_dir)
        self.token: str | None = None
        self.url: str | None = None
        self.notes: list[str] = []
        """What the guard found of a crashed run, for the user."""
        self.exited: asyncio.Future[signal.Signals | None] | None = None
        """Resolves with the signal that asked the daemon to end, or None."""
        self._servers: list[tuple[Server, asyncio.Task[None]]] = []
        self.api_ready: asyncio.Task[None] | None = None
        """Done once the API answers on every listener (or failed to)."""
        self._pids: dict[str, int | None] = {}
        self._signalled = 0.0
        """When the signal that began the stop came (monotonic)."""
        self._began = time.monotonic()

    # Start and stop

    async def __aenter__(self) -> Daemon:
        loop = asyncio.get_running_loop()
        self.exited = loop.create_future()

        # The lock first: from here on, the socket and records are ours.
        self.guard.acquire()
        try:
            self.notes = self.guard.clean_stale()
            listeners = self._bind()
            self.guard.start_watchdog()
            self.bus.subscribe(self._record_pid)
            self._write_record()
        except BaseException:
            await self._close()
            raise
        # The API starts beside the services: importing FastAPI and uvicorn
        # takes about half a second, which the services need not wait for.
        # Clients that connect meanwhile wait in the socket's backlog.
        self.api_ready = asyncio.create_task(self._start_api(listeners), name="api")
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)
        return self

    async def _start_api(self, listeners: list[tuple[socket.socket, str]]) -> None:
        try:
            # Imported in a thread: the loop keeps spawning and probing.
            serve = await asyncio.to_thread(
                importlib.import_module, "overture.control.serve"
            )
            app = serve.create_app(self._backend())
            for sock, kind in listeners:
                server, task = await serve.serve(serve.tag(app, kind), sock)
                self._servers.append((server, task))
        except BaseException:
            for sock, _ in listeners:
                sock.close()
            raise

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await self._close()

    def _bind(self) -> list[tuple[socket.socket, str]]:
        """The listening sockets, each with its kind: unix, loopback or remote."""
        options = self.options
        if options.listen is None:
            return [(bind_unix(self.paths.socket, options.socket_mode), "unix")]
        host, port = parse_listen(options.listen, options.allow_remote)
        tcp = bind_tcp(host, port)
        try:
            socket_file = bind_unix(self.paths.socket, options.socket_mode)
        except BaseException:
            tcp.close()
            raise
        self.url = url_of(tcp)
        self.token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(32)
        _write_private(self.paths.token, self.token + "\n")
        kind = "loopback" if is_loopback(host) else "remote"
        return [(socket_file, "unix"), (tcp, kind)]

    def _backend(self) -> Backend:
        from overture.control.api import Backend

        return Backend(
            controller=self.controller,
            events=self.events,
            lines=self.lines,
            metrics=self.metrics,
            health=self.health,
            shutdown=self.shutdown,
            token=self.token,
        )

    async def _close(self) -> None:
        """End the streams, stop the servers, remove the files, drop the lock."""
        self.controller.closing = True
        if self.api_ready is not None and not self.api_ready.done():
            self.api_ready.cancel()
            with contextlib.suppress(BaseException):
                await self.api_ready
        self.events.fanout.close()
        self.lines.close()
        for server, _ in self._servers:
            server.should_exit = True
        for _, task in self._servers:
            with contextlib.suppress(Exception):
                await task
        self._servers.clear()
        for path in (self.paths.socket, self.paths.record, self.paths.token):
            path.unlink(missing_ok=True)
        self.outputs.close()
        self.guard.release()

    def _write_record(self) -> None:
        record = {
            "pid": os.getpid(),
            "socket": str(self.paths.socket),
            "url": self.url,
            "started": time.time(),
            "version": __version__,
        }
        _write_private(self.paths.record, json.dumps(record) + "\n")

    # While it runs

    def health(self) -> schema.Health:
        return schema.Health(
            status="stopping" if self.controller.closing else "ok",
            pid=os.getpid(),
            version=__version__,
            root=str(self.project.root),
            uptime=time.monotonic() - self._began,
            socket=str(self.paths.socket),
            url=self.url,
        )

    async def shutdown(self) -> schema.Outcome:
        """Stop every service, then end the daemon (the API's `/shutdown`)."""
        outcome = await self.controller.down([], reason="daemon shutting down")
        self.controller.closing = True
        self.request_exit(None)
        return outcome

    def request_exit(self, signum: signal.Signals | None) -> None:
        if self.exited is not None and not self.exited.done():
            self.exited.set_result(signum)

    def _on_signal(self, signum: signal.Signals) -> None:
        # The stop first, then the words: printing may fail (a closed pipe).
        now = time.monotonic()
        if self.exited is not None and not self.exited.done():
            self._signalled = now
            self.request_exit(signum)
            again = " (again to kill)" if signum is signal.SIGINT else ""
            self.message(f"{signum.name}: stopping everything{again}")
        elif signum is signal.SIGTERM:
            # A service manager sends SIGTERM, waits, then kills on its own;
            # a repeat (the group's and a wrapper's copy) must not cut the
            # graceful stop short.
            self.message("SIGTERM again: still stopping gracefully (a SIGINT kills)")
        elif now - self._signalled < REPEAT_WINDOW:
            self.message(
                f"SIGINT again {now - self._signalled:.2f}s after the first: "
                "the same request, forwarded (again to kill)"
            )
        else:
            self.orchestrator.kill_all()
            self.message("SIGINT again: killing every process group")

    def _record_pid(self, transition: Transition) -> None:
        """Keep the guard's run record in step with each service's process."""
        name = transition.service
        runtime = self.orchestrator.runtimes.get(name)
        pid = runtime.pid if runtime and transition.target in HAS_PROCESS else None
        if self._pids.get(name) != pid:
            self._pids[name] = pid
            self.guard.record(name, pid)


def _write_private(path: os.PathLike[str], text: str) -> None:
    """Write `text` to a file only its owner can read (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(fd, 0o600)  # it may have existed with another mode
        file.write(text)
