"""Bringing real services down: order, signals, stop commands and orphans."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    adopting_orphans,
    double_forker,
    exits_on,
    free_port,
    gone,
    ignores_sigterm,
    long_running,
    oneshot,
    run,
    script,
    serving,
)
from stacks import (
    MISSING,
    S,
    assert_in_time_order,
    listening,
    service,
    stack,
)

pytestmark = pytest.mark.usefixtures("token")


# Down.


def test_down_stops_in_reverse_order(tmp_path: Path) -> None:
    """Dependents stop before their dependencies; sibling branches stop at once."""

    async def scenario() -> None:
        services = {
            "base": listening(long_running),
            "left": listening(long_running, depends_on=["base"]),
            "right": listening(long_running, depends_on=["base"]),
            "top": listening(long_running, depends_on=["left", "right"]),
        }
        async with stack(tmp_path, services) as s:
            assert await s.up() == []
            up_events = len(s.events)
            await s.down("maintenance")

            for name in services:
                assert s.path(name)[-2:] == ["stopping", "stopped"]
                assert s.at(name, S.STOPPING).reason == "maintenance"
                assert s.at(name, S.STOPPED).reason == (
                    "SIGTERM sent, killed by SIGTERM (clean)"
                )
            top_stopped = s.index("top", S.STOPPED)
            for branch in ("left", "right"):
                assert top_stopped < s.index(branch, S.STOPPING)
                assert s.index(branch, S.STOPPED) < s.index("base", S.STOPPING)
            # Both branches were stopping before either had stopped.
            assert s.index("left", S.STOPPING) < s.index("right", S.STOPPED)
            assert s.index("right", S.STOPPING) < s.index("left", S.STOPPED)
            assert_in_time_order(s.events[up_events:])
            for runtime in s.orchestrator.runtimes.values():
                assert runtime.pid is not None
                assert gone(runtime.pid)

    run(scenario())


def test_down_of_one_service_takes_its_dependents_only(tmp_path: Path) -> None:
    """Stopping a dependency stops what depends on it, and nothing else."""

    async def scenario() -> None:
        services = {
            "db": listening(long_running),
            "api": listening(long_running, depends_on=["db"]),
            "cache": listening(long_running),
        }
        async with stack(tmp_path, services) as s:
            assert await s.up() == []
            await s.orchestrator.down(["db"], reason="db maintenance")
            assert s.orchestrator.runtimes["db"].state is S.STOPPED
            assert s.orchestrator.runtimes["api"].state is S.STOPPED
            assert s.orchestrator.runtimes["cache"].state is S.READY
            assert s.index("api", S.STOPPED) < s.index("db", S.STOPPING)

    run(scenario())


def test_down_resets_failed_blocked_and_completed(tmp_path: Path) -> None:
    """Services with no process go straight back to stopped on a down."""

    async def scenario() -> None:
        services = {
            "broken": service([MISSING]),
            "blocked": listening(long_running, depends_on={"broken": "healthy"}),
            "job": service(oneshot(0), ready=None, oneshot=True),
        }
        async with stack(tmp_path, services) as s:
            await s.up()
            await s.reached("job", S.COMPLETED)
            await s.down("cleanup")
            for name, before in (
                ("broken", S.FAILED),
                ("blocked", S.BLOCKED),
                ("job", S.COMPLETED),
            ):
                last = s.at(name, S.STOPPED)
                assert (last.event, last.source, last.reason) == (
                    "reset",
                    before,
                    "cleanup",
                )

    run(scenario())


def test_exit_by_the_sent_signal_is_a_clean_stop(tmp_path: Path) -> None:
    """The stop reason calls an exit caused by the signal sent clean, others not."""

    async def scenario() -> None:
        services = {
            "term": listening(long_running),
            "usr1": listening(long_running, stop={"signal": "SIGUSR1"}),
            "int": listening(long_running, stop={"signal": "INT"}),
            "trapped": listening(exits_on, signal.SIGTERM, 143),
            "rude": listening(exits_on, signal.SIGTERM, 3),
        }
        async with stack(tmp_path, services) as s:
            assert await s.up() == []
            await s.down()
            reasons = {name: s.at(name, S.STOPPED).reason for name in services}
            assert reasons == {
                "term": "SIGTERM sent, killed by SIGTERM (clean)",
                "usr1": "SIGUSR1 sent, killed by SIGUSR1 (clean)",
                "int": "SIGINT sent, killed by SIGINT (clean)",
                "trapped": "SIGTERM sent, exited with 143 (clean)",
                "rude": "SIGTERM sent, exited with 3 (unclean)",
            }

    run(scenario())


def test_sigkill_after_the_stop_timeout_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A service ignoring SIGTERM is killed after its timeout; reason and log say so."""

    async def scenario() -> None:
        services = {
            "stubborn": listening(ignores_sigterm, stop={"timeout": "500ms"}),
        }
        async with stack(tmp_path, services) as s:
            assert await s.up() == []
            pid = s.pid("stubborn")
            await s.down()
            await s.printed("stubborn", "ignored SIGTERM")
            stopped = s.at("stubborn", S.STOPPED)
            assert stopped.reason == "killed with SIGKILL: ignored SIGTERM for 0.5s"
            assert stopped.monotonic - s.at("stubborn", S.STOPPING).monotonic >= 0.5
            assert gone(pid)

    with caplog.at_level(logging.WARNING, logger="overture.runner"):
        run(scenario())
    assert (
        "service=stubborn ignored SIGTERM for 0.5s; sending SIGKILL to its group"
        in caplog.messages
    )


def test_kill_all_during_a_stop_ends_it_at_once(tmp_path: Path) -> None:
    """`kill_all` while a stop waits out a long grace period ends the stop now."""

    async def scenario() -> None:
        services = {"stubborn": listening(ignores_sigterm, stop={"timeout": 60})}
        async with stack(tmp_path, services) as s:
            assert await s.up() == []
            down = asyncio.create_task(s.down())
            await s.printed("stubborn", "ignored SIGTERM")
            s.orchestrator.kill_all()
            await down

            stopped = s.at("stubborn", S.STOPPED)
            assert stopped.reason == "SIGTERM sent, killed by SIGKILL (unclean)"
            assert stopped.monotonic - s.at("stubborn", S.STOPPING).monotonic < 30

    run(scenario())


def stopped_by_its_command(tmp_path: Path) -> dict[str, Any]:
    """A service its stop command ends with exit 0; a SIGTERM would exit 9."""
    pidfile, port = tmp_path / "svc.pid", free_port()
    command = serving(
        f"""
        signal.signal(signal.SIGUSR1, lambda *_: os._exit(0))
        signal.signal(signal.SIGTERM, lambda *_: os._exit(9))
        with open({str(pidfile)!r}, "w") as file:
            file.write(str(os.getpid()))
        """,
        port,
    )
    # Synchronous, as a stop command should be: it returns once the service
    # has exited (a zombie until Overture reaps it).
    stopper = script(
        f"""
        import os, signal, select
        pid = int(open({str(pidfile)!r}).read())
        pidfd = os.pidfd_open(pid)
        os.kill(pid, signal.SIGUSR1)
        select.select([pidfd], [], [])
        """
    )
    return service(command, ready=port, stop={"command": stopper})


def test_stop_command_runs_first(tmp_path: Path) -> None:
    """The stop command runs before the signal; the service it stops exits 0."""

    async def scenario() -> str:
        async with stack(tmp_path, {"svc": stopped_by_its_command(tmp_path)}) as s:
            assert await s.up() == []
            await s.down()
            return s.at("svc", S.STOPPED).reason

    assert run(scenario()).endswith("exited with 0 (clean)")


def test_stop_reason_names_the_stop_command(tmp_path: Path) -> None:
    """When the stop command stops the service, the reason does not claim a signal."""

    async def scenario() -> str:
        async with stack(tmp_path, {"svc": stopped_by_its_command(tmp_path)}) as s:
            assert await s.up() == []
            await s.down()
            return s.at("svc", S.STOPPED).reason

    assert "SIGTERM" not in run(scenario())


# Orphans.


def outlived(scenario: Coroutine[Any, Any, int]) -> bool:
    """Run `scenario`, which returns a double-forked daemon's pid, with this
    process adopting orphans; True if the daemon outlived it (it is then
    killed, not left to the next test)."""
    with adopting_orphans():
        daemon = run(scenario)
    survived = not gone(daemon)
    if survived:
        os.kill(daemon, signal.SIGKILL)
    return survived


def test_double_forked_daemon_is_gone_after_down(tmp_path: Path) -> None:
    """A daemon that left the service's group does not survive a down."""
    pidfile = tmp_path / "daemon.pid"

    async def scenario() -> int:
        services = {"forks": listening(double_forker, pidfile)}
        async with stack(tmp_path, services) as s:
            assert await s.up() == []
            daemon = int(pidfile.read_text())
            assert os.getsid(daemon) != s.pid("forks")
            await s.down()
        return daemon

    assert not outlived(scenario())


def test_double_forked_daemon_is_gone_after_a_crash(tmp_path: Path) -> None:
    """A daemon whose service exits unexpectedly goes with the service."""
    pidfile = tmp_path / "daemon.pid"

    async def scenario() -> int:
        services = {"forks": listening(double_forker, pidfile)}
        async with stack(tmp_path, services) as s:
            assert await s.up() == []
            daemon = int(pidfile.read_text())
            os.kill(s.pid("forks"), signal.SIGKILL)
            await s.reached("forks", S.FAILED)
            return daemon

    assert not outlived(scenario())


def test_double_forked_daemon_is_gone_after_a_startup_timeout(tmp_path: Path) -> None:
    """A service that times out starting leaves no daemon behind."""
    pidfile = tmp_path / "daemon.pid"

    async def scenario() -> int:
        services = {
            "forks": service(
                double_forker(pidfile), ready="^never$", startup_timeout="1s"
            )
        }
        async with stack(tmp_path, services) as s:
            up = asyncio.create_task(s.up())
            await s.printed("forks", "ready daemon=")
            assert await up == ["forks"]
            runner = s.orchestrator.runtimes["forks"].runner
            assert runner is not None
            await runner.exited
            return int(pidfile.read_text())

    assert not outlived(scenario())
