"""Bringing a graph of real services up and down, and the foreground session.

Every wait is on a lifecycle event or a line a child printed. Concurrency is
proved by children that can only become ready together (a FIFO rendezvous),
order by the sequence of the events and their monotonic timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from helpers import (
    adopting_orphans,
    children_tagged,
    double_forker,
    exits_on,
    fifo_reader,
    fifo_writer,
    free_port,
    gone,
    ignores_sigterm,
    long_running,
    oneshot,
    run,
    script,
    serving,
)
from overture.config.model import Project
from overture.graph import Graph
from overture.lifecycle import ServiceState, Transition
from overture.observe.output import LogLine
from overture.orchestrator import Orchestrator
from overture.run import Session, UpOptions

S = ServiceState
T = TypeVar("T")
MISSING = "/nonexistent/overture-test-program"


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every test's children are tagged, and none may outlive the test."""
    with children_tagged(monkeypatch) as token:
        yield token


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
    """A service running `child(*args, port=...)`, ready once it listens there.

    Ready probes here are tcp: a log probe can miss a line printed right
    after the spawn (see test_log_probe_sees_a_line_printed_at_once).
    """
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


# Up: order and concurrency.


def test_chain_starts_in_dependency_order(tmp_path: Path) -> None:
    """In a chain, each service starts only after its dependency is ready."""

    async def scenario() -> None:
        services = {
            "db": listening(long_running),
            "api": listening(long_running, depends_on={"db": "healthy"}),
            "web": listening(long_running, depends_on={"api": "healthy"}),
        }
        async with stack(tmp_path, services) as s:
            assert await s.up() == []

            for name in services:
                assert s.path(name) == ["waiting", "starting", "ready"]
            db_ready, api_start = s.at("db", S.READY), s.at("api", S.STARTING)
            api_ready, web_start = s.at("api", S.READY), s.at("web", S.STARTING)
            assert s.index("db", S.READY) < s.index("api", S.STARTING)
            assert s.index("api", S.READY) < s.index("web", S.STARTING)
            assert db_ready.monotonic <= api_start.monotonic
            assert api_ready.monotonic <= web_start.monotonic
            assert api_start.reason == "dependencies met"
            assert s.at("db", S.STARTING).reason == "no dependencies"
            assert s.at("db", S.READY).reason.startswith("tcp probe passed after ")
            assert_in_time_order(s.events)

    run(scenario())


def test_diamond_starts_branches_concurrently(tmp_path: Path) -> None:
    """Both branches of a diamond run at once; the top waits for both."""
    fifo = tmp_path / "rendezvous"
    os.mkfifo(fifo)

    async def scenario() -> None:
        # left and right can only become ready together: each blocks opening
        # the FIFO until the other has opened its end.
        services = {
            "base": listening(long_running),
            "left": listening(
                fifo_reader, fifo, depends_on={"base": "healthy"}, startup_timeout=10
            ),
            "right": listening(
                fifo_writer, fifo, depends_on={"base": "healthy"}, startup_timeout=10
            ),
            "top": listening(
                long_running, depends_on={"left": "healthy", "right": "healthy"}
            ),
        }
        async with stack(tmp_path, services) as s:
            assert await s.up() == []

            base_ready = s.at("base", S.READY).monotonic
            left, right = s.at("left", S.STARTING), s.at("right", S.STARTING)
            assert base_ready <= left.monotonic
            assert base_ready <= right.monotonic
            # Each branch was starting before the other was ready.
            assert right.monotonic < s.at("left", S.READY).monotonic
            assert left.monotonic < s.at("right", S.READY).monotonic
            top = s.index("top", S.STARTING)
            assert top > s.index("left", S.READY)
            assert top > s.index("right", S.READY)
            assert_in_time_order(s.events)

    run(scenario())


def test_started_condition_needs_no_readiness(tmp_path: Path) -> None:
    """A `started` dependent launches while its dependency is still starting."""
    fifo = tmp_path / "rendezvous"
    os.mkfifo(fifo)

    async def scenario() -> None:
        # slow becomes ready only once app has run and opened the FIFO.
        services = {
            "slow": listening(fifo_reader, fifo, startup_timeout=10),
            "app": listening(fifo_writer, fifo, depends_on={"slow": "started"}),
        }
        async with stack(tmp_path, services) as s:
            assert await s.up() == []
            assert s.index("app", S.STARTING) < s.index("slow", S.READY)

    run(scenario())


def test_log_probe_sees_a_line_printed_at_once(tmp_path: Path) -> None:
    """A ready line printed while the loop is still busy spawning is not missed."""
    address = str(tmp_path / "printed.sock")
    child = script(
        f"""
        import signal, socket
        print("ready", flush=True)
        socket.socket(socket.AF_UNIX).connect({address!r})  # "it is printed"
        while True:
            signal.pause()
        """
    )

    async def scenario() -> list[str]:
        services = {"quick": service(child, ready="^ready$", startup_timeout="1s")}
        async with stack(tmp_path, services) as s:
            loop = asyncio.get_running_loop()
            printed = socket.socket(socket.AF_UNIX)
            printed.bind(address)
            printed.listen()
            printed.settimeout(10)

            # Stands for a loop busy starting other services: holds it from
            # just after the spawn until the child has printed its line.
            def hold_until_printed() -> None:
                printed.accept()[0].close()

            def after_spawn(transition: Transition) -> None:
                if transition.target is S.STARTING:
                    loop.call_soon(loop.call_soon, hold_until_printed)

            s.orchestrator.bus.subscribe(after_spawn)
            with printed:
                return await s.up()

    assert run(scenario()) == []


# Up: failures.


def test_startup_timeout_fails_and_kills(tmp_path: Path) -> None:
    """A service not ready within its startup timeout fails, and its process goes."""

    async def scenario() -> None:
        services = {
            "slow": service(
                long_running("booting"), ready="^never$", startup_timeout="300ms"
            ),
            "app": listening(long_running, depends_on={"slow": "healthy"}),
        }
        async with stack(tmp_path, services) as s:
            assert await s.up() == ["slow", "app"]
            failed = s.at("slow", S.FAILED)
            assert (
                failed.reason == "not ready after 0.3s: no line matched '^never$' yet"
            )
            assert failed.monotonic - s.at("slow", S.STARTING).monotonic >= 0.3
            runner = s.orchestrator.runtimes["slow"].runner
            assert runner is not None
            assert await runner.exited == -signal.SIGKILL
            assert s.path("app") == ["waiting", "blocked"]
            assert s.at("app", S.BLOCKED).reason == "dependency slow failed"

    run(scenario())


def test_failed_dependency_blocks_dependents_transitively(tmp_path: Path) -> None:
    """A failed required dependency blocks its dependents and theirs; none starts."""

    async def scenario() -> None:
        services = {
            "broken": service([MISSING]),
            "mid": listening(long_running, depends_on={"broken": "healthy"}),
            "top": listening(long_running, depends_on={"mid": "healthy"}),
            "other": listening(long_running),
        }
        async with stack(tmp_path, services) as s:
            assert await s.up() == ["broken", "mid", "top"]
            assert s.at("broken", S.FAILED).reason == (
                f"cannot start '{MISSING}': No such file or directory"
            )
            assert s.path("mid") == ["waiting", "blocked"]
            assert s.at("mid", S.BLOCKED).reason == "dependency broken failed"
            assert s.path("top") == ["waiting", "blocked"]
            assert s.at("top", S.BLOCKED).reason == "dependency mid blocked"
            assert s.path("other") == ["waiting", "starting", "ready"]

    run(scenario())


def test_started_dependency_that_cannot_spawn_blocks(tmp_path: Path) -> None:
    """A `started` dependent does not start when its dependency cannot run at all."""

    async def scenario() -> None:
        services = {
            "broken": service([MISSING]),
            "app": listening(long_running, depends_on={"broken": "started"}),
        }
        async with stack(tmp_path, services) as s:
            assert await s.up() == ["broken", "app"]
            assert s.path("app") == ["waiting", "blocked"]

    run(scenario())


def test_optional_dependency_failure_blocks_nothing(tmp_path: Path) -> None:
    """A failed optional dependency is waited for, then its dependent starts."""

    async def scenario() -> None:
        optional = {"condition": "healthy", "required": False}
        services = {
            "extra": service(oneshot(2), ready="^never$"),
            "app": listening(long_running, depends_on={"extra": optional}),
        }
        async with stack(tmp_path, services) as s:
            assert await s.up() == ["extra"]
            assert s.at("extra", S.FAILED).reason == "exited with 2"
            assert s.path("app") == ["waiting", "starting", "ready"]
            assert s.index("extra", S.FAILED) < s.index("app", S.STARTING)

    run(scenario())


def test_completed_condition_waits_for_exit_zero(tmp_path: Path) -> None:
    """A `completed` dependent starts after the one-shot exits 0, not when ready."""

    async def scenario() -> None:
        services = {
            "migrate": listening(exits_on, signal.SIGUSR1, 0, oneshot=True),
            "app": listening(long_running, depends_on={"migrate": "completed"}),
        }
        async with stack(tmp_path, services) as s:
            up = asyncio.create_task(s.up())
            await s.reached("migrate", S.READY)
            os.kill(s.pid("migrate"), signal.SIGUSR1)
            assert await up == []

            assert s.path("migrate") == ["waiting", "starting", "ready", "completed"]
            assert s.at("migrate", S.COMPLETED).reason == "exited with 0"
            assert s.index("migrate", S.COMPLETED) < s.index("app", S.STARTING)
            assert s.path("app") == ["waiting", "starting", "ready"]

    run(scenario())


def test_oneshot_exiting_non_zero_blocks_dependents(tmp_path: Path) -> None:
    """A one-shot that exits non-zero fails, and blocks what needs it completed."""

    async def scenario() -> None:
        services = {
            "migrate": service(oneshot(3), ready=None, oneshot=True),
            "app": listening(long_running, depends_on={"migrate": "completed"}),
        }
        async with stack(tmp_path, services) as s:
            assert await s.up() == ["migrate", "app"]
            assert s.at("migrate", S.FAILED).reason == "exited with 3"
            assert s.path("app") == ["waiting", "blocked"]
            assert s.at("app", S.BLOCKED).reason == "dependency migrate failed"

    run(scenario())


def test_exit_of_a_ready_service_fails_it(tmp_path: Path) -> None:
    """A ready service that exits, or is killed, is failed with the exit's reason."""

    async def scenario() -> None:
        services = {
            "quits": listening(exits_on, signal.SIGUSR1, 7),
            "killed": listening(long_running),
        }
        async with stack(tmp_path, services) as s:
            assert await s.up() == []
            os.kill(s.pid("quits"), signal.SIGUSR1)
            os.kill(s.pid("killed"), signal.SIGKILL)
            quits = await s.reached("quits", S.FAILED)
            killed = await s.reached("killed", S.FAILED)
            assert (quits.source, quits.reason) == (S.READY, "exited with 7")
            assert (killed.source, killed.reason) == (S.READY, "killed by SIGKILL")

    run(scenario())


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

    with adopting_orphans():
        daemon = run(scenario())
    assert gone(daemon)


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

    with adopting_orphans():
        daemon = run(scenario())
    assert gone(daemon)


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

    with adopting_orphans():
        daemon = run(scenario())
    survived = not gone(daemon, within=1.0)
    if survived:
        os.kill(daemon, signal.SIGKILL)  # not left for the next test
    assert not survived


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
