"""Brings a selection of services up and down over the dependency graph.

Both directions are event-driven. A service starts the moment every one of
its dependencies meets its condition, so independent branches start
concurrently and nobody waits for a "level" to finish. A service stops the
moment none of its dependents still has a process. The orchestrator learns
about every change through the transitions of the services' state machines,
which it forwards to the event bus before reacting to them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from overture.config.model import Condition, OnFailure, Project
from overture.graph import Graph
from overture.lifecycle import (
    HAS_PROCESS,
    NO_PROCESS,
    SETTLED_STATES,
    ServiceState,
    Transition,
)
from overture.observe.events import EventBus
from overture.observe.output import OutputStore
from overture.probes.listening import ListenWatch
from overture.runtime import ServiceRuntime

log = logging.getLogger("overture.orchestrator")

S = ServiceState

# The dependency's states that satisfy each condition.
_MEETS: dict[Condition, frozenset[ServiceState]] = {
    Condition.STARTED: frozenset({S.STARTING, S.READY, S.DEGRADED, S.COMPLETED}),
    Condition.HEALTHY: frozenset({S.READY, S.COMPLETED}),
    Condition.COMPLETED: frozenset({S.COMPLETED}),
}


@dataclass(eq=False)
class _Wait:
    """Resolves when every member satisfies `done` (checked per transition)."""

    pending: set[str]
    done: Callable[[ServiceRuntime], bool]
    future: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Orchestrator:
    burst_slice = 0.05
    """Seconds `up` may spend setting up and spawning before the loop's turn."""

    def __init__(
        self,
        project: Project,
        graph: Graph,
        bus: EventBus | None = None,
        outputs: OutputStore | None = None,
    ) -> None:
        self.project = project
        self.graph = graph
        self.bus = bus or EventBus()
        self.outputs = outputs or OutputStore(project.state_dir / "logs")
        self.runtimes: dict[str, ServiceRuntime] = {}
        self.active: set[str] = set()
        """Services asked to run (by `up` or `start`) and not asked to stop."""
        self._stop_pending: dict[str, str] = {}
        """Services to stop once their dependents are down, with the reason."""
        self._waits: dict[str, list[_Wait]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting = 0
        """How many services are starting now (their ready probes poll)."""
        self._environ = dict(os.environ)
        """The environment services inherit, copied once per `up`."""
        self.listening = ListenWatch()

    def runtime(self, name: str) -> ServiceRuntime:
        runtime = self.runtimes.get(name)
        if runtime is None:
            runtime = ServiceRuntime(
                name,
                self.project.services[name],
                self.project,
                self.outputs.of(name),
                self._on_transition,
            )
            runtime.on_spawned = self._on_spawned
            runtime.project_environ = self._environ
            runtime.ready_pace = self._ready_pace
            runtime.listening = self.listening
            self.runtimes[name] = runtime
        return runtime

    # Up

    async def up(self, names: Iterable[str]) -> list[str]:
        """Start `names` (a dependency-closed selection); return those that failed.

        Returns once every one of them is settled: ready, completed, failed or
        blocked.
        """
        order = self.graph.order(names)
        # Copied now, not at construction: the guard marks the environment
        # for the watchdog after the orchestrator exists.
        self._environ.clear()
        self._environ.update(inherited_environment())
        # Each service is evaluated as soon as it exists: the first spawns
        # overlap the set-up of the rest (a state machine each, 0.3 ms).
        # Dependencies come first in the order, so they are evaluated first.
        # A long burst gives the loop a turn now and then: signals, the API
        # and exits are served meanwhile, and a cancelled `up` (Ctrl-C)
        # spawns nothing more.
        turn = time.monotonic()
        for name in order:
            runtime = self.runtime(name)
            self.active.add(name)
            self._stop_pending.pop(name, None)
            if runtime.lifecycle.allowed("start"):
                runtime.cancel_retry()
                runtime.budget.reset()
                runtime.send("start", "requested")
            self._evaluate_start(name)
            if time.monotonic() - turn >= self.burst_slice:
                await asyncio.sleep(0)
                turn = time.monotonic()
        await self._wait_for(order, _settled)
        return [n for n in order if self.runtimes[n].state in (S.FAILED, S.BLOCKED)]

    def _evaluate_start(self, name: str) -> None:
        runtime = self.runtimes[name]
        if runtime.state is not S.WAITING or name not in self.active:
            return
        pending = []
        for dep, spec in self.graph.dependencies(name).items():
            other = self.runtimes.get(dep)
            if other is None or dep not in self.active:
                if spec.required:
                    runtime.send("block", f"required dependency {dep} is not running")
                    return
                continue
            state = other.state
            if state is S.FAILED and other.retry_pending:
                pending.append(dep)  # its restart policy brings it back
            elif state in (S.FAILED, S.BLOCKED):
                if spec.required:
                    runtime.send("block", f"dependency {dep} {state.value}")
                    return
                continue
            if state not in _MEETS[spec.condition] or (
                state is S.STARTING and not other.spawned
            ):
                pending.append(dep)
        if not pending:
            deps = self.graph.dependencies(name)
            reason = "dependencies met" if deps else "no dependencies"
            runtime.launch(reason)

    # Down

    async def down(
        self, names: Iterable[str] | None = None, reason: str = "down"
    ) -> None:
        """Stop `names` (default: everything) and every service depending on them.

        Dependents stop before their dependencies; independent branches stop
        concurrently.
        """
        targets = self._with_dependents(self.runtimes if names is None else names)
        targets = {n for n in targets if self.runtimes[n].state is not S.STOPPED}
        self.active -= targets
        self._stop_pending.update(dict.fromkeys(targets, reason))
        wait = self._wait_for(targets, lambda r: r.state is S.STOPPED)
        for name in sorted(targets):
            self._evaluate_stop(name)
        await wait

    def _with_dependents(self, names: Iterable[str]) -> set[str]:
        found: set[str] = set()
        todo = [n for n in names if n in self.runtimes]
        while todo:
            name = todo.pop()
            if name not in found:
                found.add(name)
                todo.extend(
                    d for d in self.graph.dependents(name) if d in self.runtimes
                )
        return found

    def _evaluate_stop(self, name: str) -> None:
        if name not in self._stop_pending:
            return
        for dependent in self.graph.dependents(name):
            other = self.runtimes.get(dependent)
            if other is not None and other.state in HAS_PROCESS:
                return
        reason = self._stop_pending.pop(name)
        self._spawn(self.runtimes[name].stop(reason))

    def idle(self) -> asyncio.Future[None]:
        """Resolves when no active service has a process or is about to start."""
        idle = NO_PROCESS
        return self._wait_for(
            set(self.active), lambda r: r.state in idle and not r.retry_pending
        )

    def failed(self) -> list[str]:
        return [n for n, r in self.runtimes.items() if r.state is S.FAILED]

    def close(self) -> None:
        """Close the service log files (after a down)."""
        self.outputs.close()
        self.listening.close()

    def kill_all(self) -> None:
        """SIGKILL every process group now; stop sequences see the exits."""
        for runtime in self.runtimes.values():
            runtime.kill()

    # Reacting to transitions

    def _ready_pace(self) -> float:
        # 5 ms while few services start; past 25, a budget of about 5,000
        # ready checks a second in all, so probes do not starve the children.
        return max(0.005, 0.0002 * self._starting)

    def _on_transition(self, transition: Transition) -> None:
        if transition.target is S.STARTING:
            self._starting += 1
        if transition.source is S.STARTING:
            self._starting -= 1
        self.bus.publish(transition)
        for wait in self._waits.get(transition.service, ()):
            self._update_wait(wait, transition.service)
        # Reactions run from the loop, not inside the machine's send: a chain
        # of 10,000 services must not become 10,000 nested calls.
        asyncio.get_running_loop().call_soon(self._react, transition)

    def _on_spawned(self, name: str) -> None:
        """A process exists now: `started` dependents may go."""
        loop = asyncio.get_running_loop()
        for dependent in self.graph.dependents(name):
            if dependent in self.runtimes:
                loop.call_soon(self._evaluate_start, dependent)

    def _react(self, transition: Transition) -> None:
        name, target = transition.service, transition.target
        if target is S.WAITING:
            self._evaluate_start(name)  # a restart by policy
            return
        if target is S.FAILED:
            self._contain(name, transition.reason)
        elif target is S.READY:
            self._recovered(name)
        for dependent in self.graph.dependents(name):
            if dependent in self.runtimes:
                self._evaluate_start(dependent)
        if target in NO_PROCESS:
            for dependency in self.graph.dependencies(name):
                self._evaluate_stop(dependency)

    def _contain(self, failed: str, reason: str) -> None:
        """Apply each running dependent's `on_failure` for this dependency."""
        for name in self.graph.dependents(failed):
            runtime = self.runtimes.get(name)
            if runtime is None or name not in self.active:
                continue
            if runtime.state not in (S.STARTING, S.READY, S.DEGRADED):
                continue
            policy = self.graph.dependencies(name)[failed].on_failure
            why = f"dependency {failed} failed"
            if policy is OnFailure.DEGRADE:
                runtime.mark_degraded(f"dependency {failed}", why)
            elif policy is OnFailure.RESTART:
                self._spawn(self._restart_with(name, why))
            elif policy is OnFailure.STOP:
                self._spawn(self.down([name], reason=f"{why} (on_failure = stop)"))

    async def _restart_with(self, name: str, why: str) -> None:
        """Stop a dependent now; it waits for its dependency to come back."""
        runtime = self.runtimes[name]
        await runtime.stop(f"{why} (on_failure = restart)")
        if name in self.active and runtime.lifecycle.allowed("start"):
            runtime.send("start", "restarting with its dependency")

    def _recovered(self, name: str) -> None:
        for dependent in self.graph.dependents(name):
            runtime = self.runtimes.get(dependent)
            if runtime is None or dependent not in self.active:
                continue
            runtime.clear_degraded(f"dependency {name}")
            if runtime.state is S.BLOCKED:
                runtime.send("start", f"dependency {name} is ready again")

    def _wait_for(
        self, names: Iterable[str], done: Callable[[ServiceRuntime], bool]
    ) -> asyncio.Future[None]:
        wait = _Wait(set(), done)
        for name in names:
            self._waits.setdefault(name, []).append(wait)
            if not done(self.runtimes[name]):
                wait.pending.add(name)
        if not wait.pending:
            wait.future.set_result(None)
        wait.future.add_done_callback(lambda _: self._forget(wait))
        return wait.future

    def _update_wait(self, wait: _Wait, name: str) -> None:
        if wait.future.done():
            return
        if wait.done(self.runtimes[name]):
            wait.pending.discard(name)
            if not wait.pending:
                wait.future.set_result(None)
        else:
            wait.pending.add(name)

    def _forget(self, wait: _Wait) -> None:
        for waits in self._waits.values():
            if wait in waits:
                waits.remove(wait)

    def _spawn(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def inherited_environment() -> dict[str, str]:
    """Overture's environment, with its virtualenv first on PATH if it has one.

    As activating the virtualenv would: `python` in a command then means the
    interpreter Overture runs on, with the packages installed beside it, also
    when Overture was started as `.venv/bin/overture` from a plain shell.
    """
    env = dict(os.environ)
    if sys.prefix != sys.base_prefix:
        scripts = str(Path(sys.executable).parent)
        path = env.get("PATH", "")
        if path.split(os.pathsep)[0] != scripts:
            env["PATH"] = os.pathsep.join(filter(None, [scripts, path]))
        env.setdefault("VIRTUAL_ENV", sys.prefix)
    return env


def _settled(runtime: ServiceRuntime) -> bool:
    return runtime.state in SETTLED_STATES and not runtime.retry_pending
