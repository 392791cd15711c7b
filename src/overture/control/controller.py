"""What a user may ask of a running project: the operations behind the API.

Each operation goes through the orchestrator's public calls with the same
dependency rules as the command line: starting a service starts what it
needs; stopping one stops what depends on it first; a restart stops the
service and its running dependents, then brings the same set back. Each
returns once every service it touched has settled, with the reason and the
last output lines of any that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator

from overture.control import schema
from overture.control.metrics import Metrics
from overture.errors import OvertureError
from overture.graph import Graph
from overture.lifecycle import HAS_PROCESS, NO_PROCESS, ServiceState
from overture.orchestrator import Orchestrator

S = ServiceState

FAILURE_LINES = 10
"""Output lines shown with a service that failed."""


class ShuttingDown(OvertureError):
    """The daemon is stopping and takes no new operations."""


class Controller:
    def __init__(self, orchestrator: Orchestrator, metrics: Metrics) -> None:
        self.orchestrator = orchestrator
        self.graph: Graph = orchestrator.graph
        self.metrics = metrics
        self.closing = False
        self.prestarted: set[str] = set()
        """Started by the daemon ahead of `up -d`'s first request."""
        self.prestarting: asyncio.Future[list[str]] | None = None
        """That start, until the request takes its outcome."""
        self._busy = 0
        self._watchers: list[asyncio.Event] = []
        """Set when an operation ends: `wait_idle` looks again."""

    # What the API shows

    def require(self, name: str) -> None:
        """Raise `UsageError` (naming the valid ones) unless `name` exists."""
        self.graph.dependencies(name)

    def service(self, name: str) -> schema.Service:
        self.require(name)
        runtime = self.orchestrator.runtimes.get(name)
        last = runtime.lifecycle.last if runtime else None
        probe = runtime.last_probe if runtime else None
        # Restarts by the policy are the runtime's count; by request, ours.
        restarts = self.metrics.of(name).user_restarts
        return schema.Service(
            name=name,
            state=runtime.state if runtime else S.STOPPED,
            pid=runtime.pid if runtime and runtime.state in HAS_PROCESS else None,
            uptime=self.metrics.uptime(name),
            restarts=restarts + (runtime.restarts if runtime else 0),
            last_probe=None if probe is None else schema.Probe.model_validate(probe),
            reason=last.reason if last else None,
            since=last.at if last else None,
            depends_on=sorted(self.graph.dependencies(name)),
        )

    def services(self, names: Iterable[str] | None = None) -> list[schema.Service]:
        """Every service (or `names`), in start order."""
        order = self.graph.select().order if names is None else names
        return [self.service(name) for name in order]

    def graph_view(self) -> schema.GraphView:
        order = self.graph.select().order
        nodes = [schema.Node(name=n, state=self._state(n)) for n in order]
        edges = [
            schema.Edge(
                service=name,
                dependency=dep,
                condition=how.condition,
                required=how.required,
                on_failure=how.on_failure,
            )
            for name, dep, how in self.graph.edges(order)
        ]
        return schema.GraphView(nodes=nodes, edges=edges)

    def logs(self, names: list[str], lines: int) -> schema.Logs:
        """The last `lines` lines of `names` (every service if empty), by time."""
        for name in names:
            self.require(name)
        records = [
            record
            for name in names or self.graph.names
            for record in self.orchestrator.outputs.of(name).tail
        ]
        records.sort(key=lambda record: record.at)
        kept = records[-lines:] if lines else []
        return schema.Logs(lines=[schema.LogLine.model_validate(r) for r in kept])

    def _state(self, name: str) -> ServiceState:
        runtime = self.orchestrator.runtimes.get(name)
        return runtime.state if runtime else S.STOPPED

    # Operations

    async def up(
        self,
        services: list[str],
        profile: str | None = None,
        group: str | None = None,
        keep_going: bool = False,
    ) -> schema.Outcome:
        """Start a selection; without `keep_going`, a failure rolls it back."""
        selection = self.graph.select(services, profile, group)
        with self._operation():
            return await self._bring_up(selection.order, rollback=not keep_going)

    async def start(self, name: str) -> schema.Outcome:
        """Start `name` and what it needs; a failure stays for inspection."""
        self.require(name)
        with self._operation():
            order = self.graph.select([name]).order
            return await self._bring_up(order, rollback=False)

    async def stop(self, name: str) -> schema.Outcome:
        """Stop `name` and, first, every service that depends on it."""
        self.require(name)
        with self._operation():
            touched = self._with_dependents([name])
            await self.orchestrator.down([name], reason="stop requested")
            return self._outcome(self.graph.order(touched), [])

    async def restart(self, name: str) -> schema.Outcome:
        """Stop `name` and its running dependents, then start them again."""
        self.require(name)
        with self._operation():
            again = {name} | {
                n
                for n in self._with_dependents([name])
                if n in self.orchestrator.active
            }
            self.metrics.of(name).user_restarts += 1
            await self.orchestrator.down([name], reason="restart requested")
            order = self.graph.select(sorted(again)).order
            return await self._bring_up(order, rollback=False)

    async def down(
        self, names: list[str], reason: str = "down requested"
    ) -> schema.Outcome:
        """Stop `names` (every service if empty) and their dependents."""
        for name in names:
            self.require(name)
        with self._operation():
            touched = self._with_dependents(names or self.graph.names)
            await self.orchestrator.down(names or None, reason=reason)
            return self._outcome(self.graph.order(touched), [])

    async def wait_idle(self) -> None:
        """Until nothing runs, nothing is about to, and no operation is under way.

        Checked here after each transition rather than with
        `Orchestrator.idle`, whose wait resolves at once when the first
        service it looks at is idle (see `_bring_up`).
        """
        changed = asyncio.Event()
        unsubscribe = self.orchestrator.bus.subscribe(lambda _: changed.set())
        self._watchers.append(changed)
        try:
            while not self._idle():
                changed.clear()
                await changed.wait()
        finally:
            unsubscribe()
            self._watchers.remove(changed)

    def _idle(self) -> bool:
        if self._busy:
            return False
        runtimes = self.orchestrator.runtimes
        return all(
            runtimes[name].state in NO_PROCESS and not runtimes[name].retry_pending
            for name in self.orchestrator.active
        )

    # Internals

    @contextlib.contextmanager
    def _operation(self) -> Iterator[None]:
        if self.closing:
            raise ShuttingDown(
                "the daemon is shutting down; it takes no new operations"
            )
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            for watcher in self._watchers:
                watcher.set()

    async def _bring_up(self, order: Iterable[str], rollback: bool) -> schema.Outcome:
        order = list(order)
        # What the daemon started ahead of `up -d`'s request counts as
        # started by that request: its outcome is this request's, and its
        # rollback covers it. It is not started a second time.
        ahead, self.prestarting = self.prestarting, None
        prestarted, self.prestarted = self.prestarted, set()
        before = set(self.orchestrator.active) - prestarted
        if ahead is not None:
            await asyncio.shield(ahead)
        # Services already up are left out: `up` would send them no event.
        todo = [
            n
            for n in order
            if n not in prestarted and self._state(n) not in (S.READY, S.DEGRADED)
        ]
        await self.orchestrator.up(todo)
        # Read each failure before a rollback resets it to stopped.
        failed = [
            self._failure(n) for n in order if self._state(n) in (S.FAILED, S.BLOCKED)
        ]
        if failed and rollback:
            started = [n for n in order if n not in before]
            await self.orchestrator.down(
                started, reason="rollback: a selected service could not start"
            )
        return self._outcome(order, failed, rolled_back=bool(failed and rollback))

    def _failure(self, name: str) -> schema.Failure:
        runtime = self.orchestrator.runtimes[name]
        last = runtime.lifecycle.last
        logs = [] if runtime.state is S.BLOCKED else list(runtime.output.tail)
        return schema.Failure(
            name=name,
            state=runtime.state,
            reason=last.reason if last else "",
            logs=[record.line for record in logs[-FAILURE_LINES:]],
        )

    def _outcome(
        self,
        order: Iterable[str],
        failed: list[schema.Failure],
        rolled_back: bool = False,
    ) -> schema.Outcome:
        return schema.Outcome(
            ok=not failed,
            services=self.services(order),
            failed=failed,
            rolled_back=rolled_back,
        )

    def _with_dependents(self, names: Iterable[str]) -> set[str]:
        found: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            if name not in found:
                found.add(name)
                todo.extend(self.graph.dependents(name))
        return found
