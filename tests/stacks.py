"""A graph of real services under an orchestrator, for the tests: `stack`.

`Stack` records every transition and every output line, and waits on them:
tests wait for an event or a printed line, never for time to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from helpers import free_port
from overture.config.model import Project
from overture.graph import Graph
from overture.lifecycle import ServiceState, Transition
from overture.observe.output import LogLine
from overture.orchestrator import Orchestrator

S = ServiceState
T = TypeVar("T")
MISSING = "/nonexistent/overture-test-program"


def service(
    command: list[str], ready: str | int | None = None, **fields: Any
) -> dict[str, Any]:
    """A service table: `command` and a ready probe (log pattern or tcp port)."""
    table: dict[str, Any] = {"command": command, **fields}
    if isinstance(ready, str):
        table["ready"] = {"log": ready}
    elif isinstance(ready, int):
        table["ready"] = {"tcp": ready}
    return table


def listening(
    child: Callable[..., list[str]], *args: Any, **fields: Any
) -> dict[str, Any]:
    """A service running `child(*args, port=...)`, ready once it listens there."""
    port = free_port()
    return service(child(*args, port=port), ready=port, **fields)


def project(tmp_path: Path, services: dict[str, Any]) -> Project:
    return Project.model_validate({"root": tmp_path, "services": services})


class Stack:
    """An orchestrator over `services`, with every transition recorded."""

    def __init__(self, tmp_path: Path, services: dict[str, Any]) -> None:
        self.project = project(tmp_path, services)
        self.orchestrator = Orchestrator(self.project, Graph.from_project(self.project))
        self.events: list[Transition] = []
        self.lines: list[LogLine] = []
        self._changed = asyncio.Event()
        self.orchestrator.bus.subscribe(self._record)
        self.orchestrator.outputs.listeners.append(self._line)

    def _record(self, transition: Transition) -> None:
        self.events.append(transition)
        self._changed.set()

    def _line(self, record: LogLine) -> None:
        self.lines.append(record)
        self._changed.set()

    async def _until(self, found: Callable[[], T | None], timeout: float = 20) -> T:
        async with asyncio.timeout(timeout):
            while (result := found()) is None:
                self._changed.clear()
                await self._changed.wait()
        return result

    async def until(self, match: Callable[[Transition], bool]) -> Transition:
        """The first transition that `match`es, once it has happened."""
        return await self._until(
            lambda: next((e for e in self.events if match(e)), None)
        )

    def of(self, name: str) -> list[Transition]:
        """Every transition of `name`, in order."""
        return [e for e in self.events if e.service == name]

    async def reached(self, name: str, state: ServiceState) -> Transition:
        """The first transition of `name` into `state`, once it has happened."""
        return await self._until(lambda: self.find(name, state))

    async def printed(self, name: str, text: str) -> LogLine:
        def found() -> LogLine | None:
            return next(
                (r for r in self.lines if r.service == name and text in r.line),
                None,
            )

        return await self._until(found)

    def find(self, name: str, state: ServiceState) -> Transition | None:
        return next(
            (e for e in self.events if e.service == name and e.target is state), None
        )

    def at(self, name: str, state: ServiceState) -> Transition:
        """The first transition of `name` into `state`; it must have happened."""
        found = self.find(name, state)
        assert found is not None, f"{name} never became {state}: {self.path(name)}"
        return found

    def index(self, name: str, state: ServiceState) -> int:
        return self.events.index(self.at(name, state))

    def path(self, name: str) -> list[str]:
        return [e.target.value for e in self.events if e.service == name]

    def pid(self, name: str) -> int:
        pid = self.orchestrator.runtimes[name].pid
        assert pid is not None
        return pid

    async def up(self) -> list[str]:
        return await self.orchestrator.up(self.project.services)

    async def down(self, reason: str = "test down") -> None:
        async with asyncio.timeout(30):
            await self.orchestrator.down(reason=reason)


@contextlib.asynccontextmanager
async def stack(tmp_path: Path, services: dict[str, Any]) -> AsyncIterator[Stack]:
    """A `Stack` that is brought down (or killed) however the test ends."""
    stack = Stack(tmp_path, services)
    try:
        yield stack
    finally:
        try:
            await stack.down("test over")
        except TimeoutError:
            stack.orchestrator.kill_all()
        # The runtime never waits for a child's output to reach end of file,
        # so a pipe may still be open when the loop closes (a ResourceWarning,
        # an error here). Wait for it, bounded.
        for runtime in stack.orchestrator.runtimes.values():
            if runtime.runner is not None and runtime.runner.process is not None:
                await runtime.runner.output_closed(timeout=5)
        stack.orchestrator.outputs.close()


def assert_in_time_order(events: list[Transition]) -> None:
    """Events are published in the order of their monotonic timestamps."""
    assert [e.monotonic for e in events] == sorted(e.monotonic for e in events)
