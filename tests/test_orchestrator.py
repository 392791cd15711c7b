"""Bringing a graph of real services up: order, concurrency and failures.

Every wait is on a lifecycle event or a line a child printed. Concurrency is
proved by children that can only become ready together (a FIFO rendezvous),
order by the sequence of the events and their monotonic timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path

import pytest

from helpers import (
    exits_on,
    fifo_reader,
    fifo_writer,
    long_running,
    oneshot,
    run,
    script,
)
from overture.lifecycle import Transition
from stacks import (
    MISSING,
    S,
    assert_in_time_order,
    listening,
    service,
    stack,
)

pytestmark = pytest.mark.usefixtures("token")


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


def test_a_cancelled_up_spawns_nothing_more(tmp_path: Path) -> None:
    """An `up` cancelled in the middle of its burst (Ctrl-C) starts no more services."""
    services = {f"s{i:02d}": service(long_running(), ready="ready") for i in range(20)}

    async def scenario() -> int:
        async with stack(tmp_path, services) as s:
            s.orchestrator.burst_slice = 0  # the loop's turn after every service
            up = asyncio.create_task(s.up())
            await s.reached("s00", S.STARTING)
            up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await up
            runtimes = s.orchestrator.runtimes.values()
            return sum(1 for r in runtimes if r.runner is not None)

    assert run(scenario()) < len(services)
