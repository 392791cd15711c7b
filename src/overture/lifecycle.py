"""The lifecycle of one service, as an explicit state machine.

Every state, every event and every allowed transition is declared here and
nowhere else. The machine is pure: it holds the current state, refuses an
event that is not allowed in it, and hands exactly one `Transition` record to
its listener per transition. All I/O (spawning, probing, signalling) happens
in the orchestrator around it, which keeps the machine synchronous and cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from statemachine import State, StateMachine
from statemachine.exceptions import TransitionNotAllowed


class ServiceState(StrEnum):
    STOPPED = "stopped"
    WAITING = "waiting"
    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"
    STOPPING = "stopping"
    FAILED = "failed"
    BLOCKED = "blocked"
    COMPLETED = "completed"


_S = ServiceState

HAS_PROCESS = frozenset({_S.STARTING, _S.READY, _S.DEGRADED, _S.STOPPING})
"""States in which the service's runner holds its process."""
NO_PROCESS = frozenset({_S.STOPPED, _S.FAILED, _S.BLOCKED, _S.COMPLETED})
"""States with no process, that do not change without a new cause."""
SETTLED_STATES = frozenset({_S.READY, _S.DEGRADED} | NO_PROCESS)
"""States an `up` waits for."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One lifecycle event: the only record of a state change."""

    service: str
    event: str
    source: ServiceState
    target: ServiceState
    reason: str
    at: float = field(default_factory=time.time)
    monotonic: float = field(default_factory=time.monotonic)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "event": self.event,
            "from": self.source.value,
            "to": self.target.value,
            "reason": self.reason,
            "at": self.at,
            **({"details": self.details} if self.details else {}),
        }


class IllegalTransition(Exception):
    """An event was sent to a service in a state that does not allow it."""

    def __init__(self, service: str, event: str, state: ServiceState) -> None:
        self.service = service
        self.event = event
        self.state = state
        super().__init__(
            f"service {service!r} can't handle event {event!r} in state {state}"
        )


class _Lifecycle(StateMachine):
    stopped = State(ServiceState.STOPPED.value, initial=True)
    waiting = State(ServiceState.WAITING.value)
    starting = State(ServiceState.STARTING.value)
    ready = State(ServiceState.READY.value)
    degraded = State(ServiceState.DEGRADED.value)
    stopping = State(ServiceState.STOPPING.value)
    failed = State(ServiceState.FAILED.value)
    blocked = State(ServiceState.BLOCKED.value)
    completed = State(ServiceState.COMPLETED.value)

    # Asked to run: wait for the dependencies' conditions.
    start = (
        stopped.to(waiting)
        | failed.to(waiting)
        | blocked.to(waiting)
        | completed.to(waiting)
    )
    # Every dependency met its condition: the runner launches the service.
    deps_met = waiting.to(starting)
    # A required dependency failed: this service will not start.
    block = waiting.to(blocked)
    # The ready probe passed (or there is none).
    became_ready = starting.to(ready)
    # The live probe failed, or a dependency failed under `degrade`.
    degrade = ready.to(degraded)
    recover = degraded.to(ready)
    # Startup timeout, unexpected exit, live failure threshold.
    fail = starting.to(failed) | ready.to(failed) | degraded.to(failed)
    # A one-shot service exited 0.
    complete = starting.to(completed) | ready.to(completed) | degraded.to(completed)
    # The restart policy brings a failed service back after its backoff.
    retry = failed.to(waiting)
    # Asked to stop while it may have a process.
    stop = (
        waiting.to(stopping)
        | starting.to(stopping)
        | ready.to(stopping)
        | degraded.to(stopping)
    )
    # Its process group is gone.
    stop_done = stopping.to(stopped)
    # Asked to stop while nothing runs: forget the failure, block or result.
    reset = failed.to(stopped) | blocked.to(stopped) | completed.to(stopped)


class Lifecycle:
    """The state machine of one service, and the listener its events go to."""

    __slots__ = ("_last", "_listener", "_machine", "_state", "service")

    def __init__(
        self, service: str, listener: Callable[[Transition], None] | None = None
    ) -> None:
        self.service = service
        self._listener = listener
        self._machine = _Lifecycle()
        self._state = ServiceState(self._machine.current_state_value)
        """The machine's state, read once per transition: asked for often."""
        self._last: Transition | None = None

    @property
    def state(self) -> ServiceState:
        return self._state

    @property
    def last(self) -> Transition | None:
        """The most recent transition, with its reason."""
        return self._last

    def allowed(self, event: str) -> bool:
        return any(e.id == event for e in self._machine.allowed_events)

    def send(self, event: str, reason: str, **details: Any) -> Transition:
        """Apply `event`; raise `IllegalTransition` if the state refuses it."""
        source = self._state
        try:
            self._machine.send(event)
        except TransitionNotAllowed:
            raise IllegalTransition(self.service, event, source) from None
        self._state = ServiceState(self._machine.current_state_value)
        record = Transition(
            service=self.service,
            event=event,
            source=source,
            target=self._state,
            reason=reason,
            details=details,
        )
        self._last = record
        if self._listener is not None:
            self._listener(record)

        return record


def _table() -> dict[str, list[tuple[ServiceState, ServiceState]]]:
    table: dict[str, list[tuple[ServiceState, ServiceState]]] = {}
    for state in _Lifecycle.states:
        for transition in state.transitions:
            pair = (
                ServiceState(transition.source.id),
                ServiceState(transition.target.id),
            )
            table.setdefault(str(transition.event), []).append(pair)
    return table


TRANSITIONS = _table()
"""Every event and the (source, target) pairs it allows: the table, as data."""
