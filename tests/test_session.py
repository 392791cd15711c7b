"""The foreground session (`overture up` without the CLI): rollback and exit."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    long_running,
    oneshot,
    run,
)
from overture.graph import Graph
from overture.run import Session, UpOptions
from stacks import (
    MISSING,
    S,
    listening,
    project,
    service,
)

pytestmark = pytest.mark.usefixtures("token")


# The foreground session (run.py).


def session(tmp_path: Path, services: dict[str, Any], **options: Any) -> Session:
    config = project(tmp_path, services)
    return Session(config, Graph.from_project(config), UpOptions(live=False, **options))


def test_rollback_stops_what_started_in_reverse_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failure during up rolls everything back, dependents first; exit code 1."""
    services = {
        "db": listening(long_running),
        "api": listening(long_running, depends_on={"db": "healthy"}),
        "broken": service([MISSING], depends_on={"db": "healthy"}),
    }
    foreground = session(tmp_path, services)

    assert run(foreground.run()) == 1

    events = list(foreground.bus.history)
    runtimes = foreground.orchestrator.runtimes
    assert {name: r.state for name, r in runtimes.items()} == dict.fromkeys(
        services, S.STOPPED
    )
    rollback = "rollback: a selected service could not start"
    stops = [e for e in events if e.event in ("stop", "reset")]
    assert {e.service: e.reason for e in stops} == dict.fromkeys(services, rollback)
    api_stopped = events.index(
        next(e for e in events if e.service == "api" and e.target is S.STOPPED)
    )
    db_stopping = events.index(
        next(e for e in events if e.service == "db" and e.target is S.STOPPING)
    )
    assert api_stopped < db_stopping
    assert f"broken failed: cannot start '{MISSING}'" in capsys.readouterr().out


def test_keep_going_keeps_what_started_until_a_signal(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With keep_going a failure rolls nothing back; SIGINT then stops it all: 130."""
    services = {
        "good": listening(long_running),
        "broken": service([MISSING]),
    }
    foreground = session(tmp_path, services, keep_going=True)

    # The handshake: the summary line says everything settled and runs.
    message = foreground.printer.message

    def interrupt_after_summary(text: str) -> None:
        message(text)
        if text.startswith("up: "):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(foreground.printer, "message", interrupt_after_summary)

    assert run(foreground.run()) == 128 + signal.SIGINT

    good = [e for e in foreground.bus.history if e.service == "good"]
    assert [e.target for e in good] == [
        S.WAITING,
        S.STARTING,
        S.READY,
        S.STOPPING,
        S.STOPPED,
    ]
    assert good[-2].reason == "interrupted"
    out = capsys.readouterr().out
    assert "up: 1 failed, 1 ready; Ctrl-C to stop" in out
    assert "SIGINT: stopping everything (again to kill)" in out


def test_a_stack_of_oneshots_ends_by_itself_with_0(tmp_path: Path) -> None:
    """When every service completed, the session ends on its own with exit code 0."""
    services = {
        "first": service(oneshot(0), ready=None, oneshot=True),
        "second": service(
            oneshot(0), ready=None, oneshot=True, depends_on={"first": "completed"}
        ),
    }
    foreground = session(tmp_path, services)

    assert run(foreground.run()) == 0
    completed = [e.service for e in foreground.bus.history if e.target is S.COMPLETED]
    assert completed == ["first", "second"]
