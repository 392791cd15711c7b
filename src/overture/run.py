"""Running a project's daemon: in the terminal (`up`) or detached (`up -d`).

Both run the same `Daemon`, so `overture status` and the API work from any
other terminal either way. In the terminal, `up` starts its selection, shows
the live view, streams the output, and ends on a signal, on `overture down`,
or when nothing runs any more; the first SIGINT or SIGTERM starts a graceful
down of everything, a second one sends SIGKILL to every remaining process
group at once. Detached, the daemon starts with nothing running, takes its
work from the API (`up -d` sends the selection), writes what the terminal
would have shown to `.overture/logs/daemon.log`, and ends on `overture down`
or a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from overture.config.model import Project
from overture.control import schema
from overture.control.daemon import Daemon, DaemonOptions
from overture.errors import UsageError
from overture.graph import Graph
from overture.lifecycle import ServiceState, Transition
from overture.observe.printer import Printer

log = logging.getLogger("overture")


@dataclass
class UpOptions:
    services: list[str] = field(default_factory=list)
    profile: str | None = None
    group: str | None = None
    keep_going: bool = False
    log_format: str = "human"
    live: bool | None = None
    """Show the live state table; None means when stdout is a terminal."""
    abort_on_failure: bool = False
    """Stop everything and exit 1 as soon as any service fails."""
    exit_code_from: str | None = None
    """Stop everything when this service exits, and exit with its code."""
    daemon: DaemonOptions = field(default_factory=DaemonOptions)


def _log_transition(t: Transition) -> None:
    log.info(
        "service=%s event=%s from=%s to=%s reason=%r",
        t.service,
        t.event,
        t.source,
        t.target,
        t.reason,
    )


@contextlib.contextmanager
def _event_log(project: Project) -> Iterator[None]:
    """Lifecycle events and warnings as key=value lines in .overture/logs/."""
    directory = project.state_dir / "logs"
    directory.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(directory / "overture.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


class _PrinterHandler(logging.Handler):
    """Overture's own warnings reach the terminal through the printer."""

    def __init__(self, printer: Printer) -> None:
        super().__init__(logging.WARNING)
        self.printer = printer

    def emit(self, record: logging.LogRecord) -> None:
        self.printer.message(record.getMessage())


class _Run:
    """A daemon with its printer, event log and warnings wired up."""

    def __init__(
        self,
        project: Project,
        graph: Graph,
        options: DaemonOptions,
        printer: Printer,
    ) -> None:
        self.project = project
        self.printer = printer
        self.daemon = Daemon(project, graph, options, message=printer.message)
        self.orchestrator = self.daemon.orchestrator
        self.bus = self.daemon.bus
        self.outputs = self.daemon.outputs
        self.bus.subscribe(_log_transition)
        self.bus.subscribe(printer.transition)
        self.outputs.listeners.append(printer.line)

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[Daemon]:
        warnings = _PrinterHandler(self.printer)
        log.addHandler(warnings)
        try:
            with _event_log(self.project):
                async with self.daemon as daemon:
                    for note in daemon.notes:
                        self.printer.message(note)
                    yield daemon
        finally:
            log.removeHandler(warnings)

    def _where(self) -> str:
        """How to reach the daemon. Never the token: output may end in a log."""
        daemon = self.daemon
        text = f"daemon pid {os.getpid()} on {daemon.paths.socket}"
        if daemon.url is not None:
            text += f"; dashboard {daemon.url} (`overture dashboard` adds the token)"
        return text


class Session(_Run):
    """One `up` in the terminal, from selection to exit code."""

    def __init__(self, project: Project, graph: Graph, options: UpOptions) -> None:
        self.options = options
        self.selection = graph.select(options.services, options.profile, options.group)
        watched = options.exit_code_from
        if watched is not None and watched not in self.selection.names:
            valid = ", ".join(sorted(self.selection.names))
            raise UsageError(
                f"--exit-code-from {watched!r} is not in the selection; "
                f"selected services: {valid}"
            )
        printer = Printer(list(self.selection.order), fmt=options.log_format)
        super().__init__(project, graph, options.daemon, printer)

    def _show_live(self) -> bool:
        if self.options.live is not None:
            return self.options.live
        return self.options.log_format == "human" and sys.stdout.isatty()

    async def run(self) -> int:
        async with self._running() as daemon:
            return await self._run(daemon)

    async def _run(self, daemon: Daemon) -> int:
        assert daemon.exited is not None
        exited, options = daemon.exited, self.options

        # Start: wait for every selected service to settle, or for the end.
        up = asyncio.ensure_future(
            daemon.controller.up(
                options.services, options.profile, options.group, options.keep_going
            )
        )
        with self._live("starting"):
            await _first(up, exited)
        if exited.done():
            up.cancel()
            await self._down(exited)
            return _exit_code(exited.result())

        outcome = up.result()
        self._report_failures(outcome.failed)
        if outcome.rolled_back:
            return 1

        # Run: stream the output until the end, until nothing runs any more,
        # or until a service ends the run (--abort-on-failure, --exit-code-from).
        self.printer.message(f"{self._summary()}; Ctrl-C to stop")
        _return_free_memory()
        self.printer.message(self._where())
        idle = asyncio.ensure_future(daemon.controller.wait_idle())
        ending = self._ending()
        await _first(idle, exited, ending)
        idle.cancel()
        failed_while_up = bool(outcome.failed or self.orchestrator.failed())
        await self._down(exited, ending)
        if exited.done():
            return _exit_code(exited.result())
        if options.exit_code_from is not None:
            return self._exit_code_of(options.exit_code_from)
        return 1 if failed_while_up or ending.done() else 0

    def _ending(self) -> asyncio.Future[str]:
        """Resolves with a reason when a service's end should end the run."""
        ending: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        watched, abort = self.options.exit_code_from, self.options.abort_on_failure

        def check(name: str, state: ServiceState) -> None:
            if ending.done():
                return
            if name == watched and state in (
                ServiceState.COMPLETED,
                ServiceState.FAILED,
            ):
                ending.set_result(f"{name} exited (--exit-code-from)")
            elif abort and state is ServiceState.FAILED:
                ending.set_result(f"{name} failed (--abort-on-failure)")

        for name, runtime in self.orchestrator.runtimes.items():
            check(name, runtime.state)
        unsubscribe = self.bus.subscribe(lambda t: check(t.service, t.target))
        ending.add_done_callback(lambda _: unsubscribe())
        return ending

    def _exit_code_of(self, name: str) -> int:
        runtime = self.orchestrator.runtimes.get(name)
        process = runtime.runner.process if runtime and runtime.runner else None
        code = process.returncode if process is not None else None
        if code is None:
            return 1
        return 128 - code if code < 0 else code

    async def _down(
        self,
        exited: asyncio.Future[signal.Signals | None],
        ending: asyncio.Future[str] | None = None,
    ) -> None:
        if ending is not None and ending.done():
            reason = ending.result()
        elif not exited.done():
            reason = "nothing left to run"
        elif exited.result() is None:
            reason = "daemon shutting down"
        else:
            reason = "interrupted"
        with self._live("stopping"):
            await self.orchestrator.down(reason=reason)

    @contextlib.contextmanager
    def _live(self, title: str) -> Iterator[None]:
        if not self._show_live():
            yield
            return
        from overture.view import LiveView

        self.printer.quiet_transitions = True
        try:
            with LiveView(self.orchestrator.runtimes, title):
                yield
        finally:
            self.printer.quiet_transitions = False

    def _summary(self) -> str:
        states: dict[str, int] = {}
        for runtime in self.orchestrator.runtimes.values():
            states[runtime.state.value] = states.get(runtime.state.value, 0) + 1
        counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        return f"up: {counts}"

    def _report_failures(self, failed: list[schema.Failure]) -> None:
        for failure in failed:
            self.printer.message(f"{failure.name} {failure.state}: {failure.reason}")
            for line in failure.logs[-5:]:
                self.printer.message(f"  {failure.name} | {line}")


class Background(_Run):
    """The detached daemon of `up -d`: it runs what the API asks until told to end."""

    def __init__(
        self,
        project: Project,
        graph: Graph,
        options: DaemonOptions,
        log_format: str = "human",
    ) -> None:
        printer = Printer(list(graph.select().order), fmt=log_format, colour=False)
        super().__init__(project, graph, options, printer)
        self.prestart: tuple[str, ...] = ()
        """What `up -d` will ask for: started before the API has loaded."""

    async def run(self, ready: Callable[[], None] | None = None) -> int:
        """Serve until a signal or `/shutdown`; `ready` is called once it listens."""
        async with self._running() as daemon:
            assert daemon.exited is not None
            assert daemon.api_ready is not None
            # The services need not wait for the API's import; `up -d`'s
            # request then finds them on their way and waits for them.
            starting = None
            if self.prestart:
                starting = asyncio.ensure_future(self.orchestrator.up(self.prestart))
                daemon.controller.prestarted = set(self.prestart)
                daemon.controller.prestarting = starting
            await daemon.api_ready  # `up -d` talks to the API next
            self.printer.message(f"started: {self._where()}")
            if ready is not None:
                ready()
            signum = await daemon.exited
            if starting is not None and not starting.done():
                starting.cancel()
            reason = "daemon shutting down" if signum is None else "interrupted"
            await self.orchestrator.down(reason=reason)
            self.printer.message("stopped")
        return 0


def _return_free_memory() -> None:
    """Give the start burst's freed heap back to the system (glibc only).

    Spawning and probing hundreds of services leaves free memory at the top
    of the heap that the allocator would otherwise keep for the whole run.
    """
    import ctypes

    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # absent on musl
    if trim is not None:
        trim(0)


async def _first(*futures: asyncio.Future[Any]) -> None:
    """Wait until one of `futures` is done."""
    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)


def _exit_code(signum: signal.Signals | None) -> int:
    """128 + the signal that ended the run (as a shell reports it); 0 for a request."""
    return 0 if signum is None else 128 + signum
