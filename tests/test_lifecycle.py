"""The lifecycle state machine: its table, its transitions, its refusals."""

from __future__ import annotations

import itertools
import time
from collections import deque

import pytest

from overture.lifecycle import (
    TRANSITIONS,
    IllegalTransition,
    Lifecycle,
    ServiceState,
    Transition,
)

S = ServiceState

ALLOWED = [
    (event, source, target)
    for event, pairs in sorted(TRANSITIONS.items())
    for source, target in pairs
]
ILLEGAL = [
    (event, state)
    for event, pairs in sorted(TRANSITIONS.items())
    for state in S
    if state not in {source for source, _ in pairs}
]


def path_to(state: ServiceState) -> list[str]:
    """The shortest list of events that leads from stopped to `state`."""
    paths: dict[ServiceState, list[str]] = {S.STOPPED: []}
    todo = deque([S.STOPPED])
    while todo:
        here = todo.popleft()
        for event, pairs in sorted(TRANSITIONS.items()):
            for source, target in pairs:
                if source is here and target not in paths:
                    paths[target] = [*paths[here], event]
                    todo.append(target)
    return paths[state]


def machine_in(state: ServiceState) -> tuple[Lifecycle, list[Transition]]:
    """A lifecycle of service 'x' driven to `state`, and its (emptied) record."""
    seen: list[Transition] = []
    lifecycle = Lifecycle("x", seen.append)
    for event in path_to(state):
        lifecycle.send(event, "set-up")
    assert lifecycle.state is state
    seen.clear()
    return lifecycle, seen


def test_table_matches_the_design() -> None:
    """The table holds exactly the transitions the design lists."""
    assert {e: set(p) for e, p in TRANSITIONS.items()} == {
        "start": {
            (S.STOPPED, S.WAITING),
            (S.FAILED, S.WAITING),
            (S.BLOCKED, S.WAITING),
            (S.COMPLETED, S.WAITING),
        },
        "deps_met": {(S.WAITING, S.STARTING)},
        "block": {(S.WAITING, S.BLOCKED)},
        "became_ready": {(S.STARTING, S.READY)},
        "degrade": {(S.READY, S.DEGRADED)},
        "recover": {(S.DEGRADED, S.READY)},
        "fail": {(S.STARTING, S.FAILED), (S.READY, S.FAILED), (S.DEGRADED, S.FAILED)},
        "complete": {
            (S.STARTING, S.COMPLETED),
            (S.READY, S.COMPLETED),
            (S.DEGRADED, S.COMPLETED),
        },
        "retry": {(S.FAILED, S.WAITING)},
        "stop": {
            (S.WAITING, S.STOPPING),
            (S.STARTING, S.STOPPING),
            (S.READY, S.STOPPING),
            (S.DEGRADED, S.STOPPING),
        },
        "stop_done": {(S.STOPPING, S.STOPPED)},
        "reset": {
            (S.FAILED, S.STOPPED),
            (S.BLOCKED, S.STOPPED),
            (S.COMPLETED, S.STOPPED),
        },
    }


def test_every_state_is_reachable_and_can_stop() -> None:
    """Every state can be reached from stopped, and every state leads back to it."""
    for state in S:
        lifecycle, _ = machine_in(state)
        for event in ("stop", "stop_done", "reset"):
            if lifecycle.allowed(event):
                lifecycle.send(event, "tear-down")
                break
        if lifecycle.state is S.STOPPING:
            lifecycle.send("stop_done", "tear-down")
        assert lifecycle.state is S.STOPPED, state


@pytest.mark.parametrize(("event", "source", "target"), ALLOWED)
def test_allowed_transition_emits_one_record(
    event: str, source: ServiceState, target: ServiceState
) -> None:
    """Each allowed transition moves the state and emits exactly one full record."""
    lifecycle, seen = machine_in(source)
    before_wall, before_mono = time.time(), time.monotonic()

    returned = lifecycle.send(event, "because", pid=42)

    assert lifecycle.state is target
    assert seen == [returned]
    record = seen[0]
    assert (record.service, record.event, record.source, record.target) == (
        "x",
        event,
        source,
        target,
    )
    assert record.reason == "because"
    assert record.details == {"pid": 42}
    assert before_wall <= record.at <= time.time()
    assert before_mono <= record.monotonic <= time.monotonic()
    assert lifecycle.last is record
    assert record.as_dict() == {
        "service": "x",
        "event": event,
        "from": source.value,
        "to": target.value,
        "reason": "because",
        "at": record.at,
        "details": {"pid": 42},
    }


@pytest.mark.parametrize(("event", "state"), ILLEGAL)
def test_illegal_transition_raises_and_changes_nothing(
    event: str, state: ServiceState
) -> None:
    """An event the state does not allow raises, keeps the state, emits nothing."""
    lifecycle, seen = machine_in(state)
    last = lifecycle.last

    with pytest.raises(IllegalTransition) as caught:
        lifecycle.send(event, "nope")

    assert str(caught.value) == (
        f"service 'x' can't handle event '{event}' in state {state.value}"
    )
    assert (caught.value.service, caught.value.event) == ("x", event)
    assert caught.value.state is state
    assert lifecycle.state is state
    assert seen == []
    assert lifecycle.last is last


def test_illegal_transition_message_sample() -> None:
    """The message reads like h11's: service, event and state, spelt out."""
    lifecycle, _ = machine_in(S.READY)
    with pytest.raises(
        IllegalTransition,
        match=r"^service 'x' can't handle event 'deps_met' in state ready$",
    ):
        lifecycle.send("deps_met", "again")


def test_unknown_event_is_illegal() -> None:
    """An event the machine has never heard of is refused like an illegal one."""
    lifecycle, seen = machine_in(S.STOPPED)
    with pytest.raises(
        IllegalTransition,
        match=r"^service 'x' can't handle event 'explode' in state stopped$",
    ):
        lifecycle.send("explode", "why not")
    assert seen == []


@pytest.mark.parametrize("state", list(S))
def test_allowed_agrees_with_the_table(state: ServiceState) -> None:
    """`allowed` answers yes exactly for the events the table allows in a state."""
    lifecycle, _ = machine_in(state)
    expected = {e for e, pairs in TRANSITIONS.items() if state in dict(pairs)}
    assert {e for e in TRANSITIONS if lifecycle.allowed(e)} == expected


def test_without_listener_the_record_is_still_returned() -> None:
    """A lifecycle with no listener still returns and remembers each record."""
    lifecycle = Lifecycle("solo")
    record = lifecycle.send("start", "requested")
    assert lifecycle.last is record
    assert (record.source, record.target) == (S.STOPPED, S.WAITING)


def test_as_dict_omits_empty_details() -> None:
    """A record without details has no `details` key in its dict form."""
    record = Lifecycle("x").send("start", "requested")
    assert "details" not in record.as_dict()


def test_a_full_lifecycle_in_order() -> None:
    """Start, ready, degrade, recover, stop: the records follow one another."""
    seen: list[Transition] = []
    lifecycle = Lifecycle("api", seen.append)
    for event in ("start", "deps_met", "became_ready", "degrade", "recover", "stop"):
        lifecycle.send(event, event)
    lifecycle.send("stop_done", "exited")

    states = [S.STOPPED] + [t.target for t in seen]
    assert states == [
        S.STOPPED,
        S.WAITING,
        S.STARTING,
        S.READY,
        S.DEGRADED,
        S.READY,
        S.STOPPING,
        S.STOPPED,
    ]
    assert all(a.target is b.source for a, b in itertools.pairwise(seen))
    assert [t.monotonic for t in seen] == sorted(t.monotonic for t in seen)
