"""The foreground `up`: start, watch, stream the logs, stop on a signal.

The first SIGINT or SIGTERM starts a graceful down of everything this run
started; a second one sends SIGKILL to every remaining process group at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

from overture.config.model import Project
from overture.graph import Graph
from overture.lifecycle import Transition
from overture.observe.events import EventBus
from overture.observe.output import OutputStore
from overture.observe.printer import Printer
from overture.orchestrator import Orchestrator

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


class Session:
    """One foreground `up`, from selection to exit code."""

    def __init__(self, project: Project, graph: Graph, options: UpOptions) -> None:
        self.options = options
        self.selection = graph.select(options.services, options.profile, options.group)
        self.bus = EventBus()
        self.outputs = OutputStore(project.state_dir / "logs")
        self.orchestrator = Orchestrator(project, graph, self.bus, self.outputs)
        self.project = project
        self.printer = Printer(list(self.selection.order), fmt=options.log_format)
        self.bus.subscribe(_log_transition)
        self.bus.subscribe(self.printer.transition)
        self.outputs.listeners.append(self.printer.line)
        self.interrupted: asyncio.Future[signal.Signals] | None = None

    def _show_live(self) -> bool:
        if self.options.live is not None:
            return self.options.live
        return self.options.log_format == "human" and sys.stdout.isatty()

    def _on_signal(self, signum: signal.Signals) -> None:
        assert self.interrupted is not None
        if not self.interrupted.done():
            self.printer.message(f"{signum.name}: stopping everything (again to kill)")
            self.interrupted.set_result(signum)
        else:
            self.printer.message(f"{signum.name} again: killing every process group")
            self.orchestrator.kill_all()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.interrupted = loop.create_future()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)
        warnings = _PrinterHandler(self.printer)
        log.addHandler(warnings)
        try:
            with _event_log(self.project):
                return await self._run()
        finally:
            log.removeHandler(warnings)
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            self.outputs.close()

    async def _run(self) -> int:
        assert self.interrupted is not None
        names = list(self.selection.order)

        # Start: wait for every selected service to settle, or for a signal.
        up = asyncio.ensure_future(self.orchestrator.up(names))
        with self._live("starting"):
            await asyncio.wait([up, self.interrupted], return_when="FIRST_COMPLETED")
        if self.interrupted.done():
            await self._down("interrupted")
            up.cancel()
            return 128 + self.interrupted.result()

        failed = up.result()
        if failed and not self.options.keep_going:
            self._report_failures(failed)
            await self._down("rollback: a selected service could not start")
            return 1
        if failed:
            self._report_failures(failed)

        # Run: stream the logs until a signal, or until nothing runs any more.
        self.printer.message(self._summary())
        idle = self.orchestrator.idle()
        await asyncio.wait([idle, self.interrupted], return_when="FIRST_COMPLETED")
        await self._down(
            "interrupted" if self.interrupted.done() else "nothing left to run"
        )
        if self.interrupted.done():
            return 128 + self.interrupted.result()
        return 1 if failed or self.orchestrator.failed() else 0

    async def _down(self, reason: str) -> None:
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
        return f"up: {counts}; Ctrl-C to stop"

    def _report_failures(self, failed: list[str]) -> None:
        for name in failed:
            runtime = self.orchestrator.runtimes[name]
            last = runtime.lifecycle.last
            reason = last.reason if last else ""
            self.printer.message(f"{name} {runtime.state}: {reason}")
            if last is not None and runtime.state.value == "failed":
                for record in list(runtime.output.tail)[-5:]:
                    self.printer.message(f"  {name} | {record.line}")
