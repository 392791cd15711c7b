"""The process runner: output, exit, the stop sequence, and orphans."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from helpers import (
    adopting_orphans,
    alive,
    double_forker,
    exits_on,
    gone,
    ignores_sigterm,
    long_running,
    run,
    script,
    send_signal,
    tagged_env,
    talker,
)
from overture.runners.process import (
    MARKER,
    ProcessRunner,
    kill_orphans,
)


@pytest.fixture
def subreaper() -> Iterator[None]:
    """This process adopts orphaned descendants for the test's duration."""
    with adopting_orphans():
        yield


class Lines:
    """Collects a runner's lines; `wait_for` resolves on the first match."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._waiters: list[tuple[str, asyncio.Future[str]]] = []

    def __call__(self, stream: str, line: str) -> None:
        self.lines.append((stream, line))
        for text, future in self._waiters:
            if text in line and not future.done():
                future.set_result(line)

    async def wait_for(self, text: str) -> str:
        for _, line in self.lines:
            if text in line:
                return line
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.append((text, future))
        async with asyncio.timeout(10):
            return await future


def runner(
    argv: list[str], token: str, lines: Lines, name: str = "svc"
) -> ProcessRunner:
    return ProcessRunner(name, argv, env=tagged_env(token), on_line=lines)


# Output and exit.


def test_stdout_and_stderr_lines_and_exit_code(token: str) -> None:
    """Lines from both streams arrive, a last line without newline too, and the code."""

    async def scenario() -> tuple[int, list[tuple[str, str]]]:
        lines = Lines()
        child = runner(talker(3), token, lines)
        child.start()
        code = await child.exited
        await child.output_closed(timeout=5)
        return code, lines.lines

    code, lines = run(scenario())
    assert code == 3
    assert [line for line in lines if line[0] == "stdout"] == [
        ("stdout", "out one"),
        ("stdout", "out last, no newline"),
    ]
    assert [line for line in lines if line[0] == "stderr"] == [("stderr", "err one")]


def test_child_gets_its_own_session_and_the_marker(token: str) -> None:
    """The child leads its own session and group and carries the service marker."""

    async def scenario() -> tuple[int, int, int, dict[str, str]]:
        lines = Lines()
        child = runner(long_running(), token, lines, name="web")
        pid = child.start()
        await lines.wait_for("ready")
        info = (pid, os.getsid(pid), os.getpgid(pid), psutil.Process(pid).environ())
        await child.stop(signal.SIGTERM, timeout=10)
        await child.output_closed(timeout=5)
        return info

    pid, sid, pgid, environ = run(scenario())
    assert sid == pid
    assert pgid == pid
    assert environ[MARKER] == "web"


def test_killed_child_reports_negative_signal(token: str) -> None:
    """A child killed by a signal resolves `exited` with minus that signal."""

    async def scenario() -> int:
        lines = Lines()
        child = runner(long_running(), token, lines)
        pid = child.start()
        await lines.wait_for("ready")
        os.kill(pid, signal.SIGKILL)
        code = await child.exited
        await child.output_closed(timeout=5)
        return code

    assert run(scenario()) == -signal.SIGKILL


def test_missing_program_raises_oserror(token: str) -> None:
    """A command that does not exist fails to start with the OS's reason."""

    async def scenario() -> None:
        child = runner(["/nonexistent/overture-test"], token, Lines())
        child.start()

    with pytest.raises(FileNotFoundError):
        run(scenario())


# The stop sequence.


def test_stop_by_signal(token: str) -> None:
    """A child that obeys SIGTERM stops within the grace period, not forced."""

    async def scenario() -> tuple[int | None, bool, bool]:
        lines = Lines()
        child = runner(long_running(), token, lines)
        child.start()
        await lines.wait_for("ready")
        outcome = await child.stop(signal.SIGTERM, timeout=10)
        await child.output_closed(timeout=5)
        return outcome.returncode, outcome.forced, child.signal_group(signal.SIGTERM)

    returncode, forced, signalled_again = run(scenario())
    assert returncode == -signal.SIGTERM
    assert not forced
    assert not signalled_again, "the group should be gone"


def test_stop_command_runs_before_the_signal(token: str) -> None:
    """The stop command runs first; a child it stops never sees the signal."""

    async def scenario() -> tuple[int | None, bool]:
        lines = Lines()
        # SIGUSR1 (sent by the stop command) exits 0; SIGTERM would exit 9.
        child = runner(
            script(
                """
                import os, signal
                signal.signal(signal.SIGUSR1, lambda *_: os._exit(0))
                signal.signal(signal.SIGTERM, lambda *_: os._exit(9))
                print("ready", flush=True)
                while True:
                    signal.pause()
                """
            ),
            token,
            lines,
        )
        pid = child.start()
        await lines.wait_for("ready")
        outcome = await child.stop(
            signal.SIGTERM, timeout=10, command=send_signal(pid, signal.SIGUSR1)
        )
        await child.output_closed(timeout=5)
        return outcome.returncode, outcome.forced

    assert run(scenario()) == (0, False)


def test_stop_command_that_does_not_stop_is_followed_by_the_signal(token: str) -> None:
    """When the stop command leaves the child running, the signal still follows."""

    async def scenario() -> tuple[int | None, bool]:
        lines = Lines()
        child = runner(exits_on(signal.SIGTERM, 7), token, lines)
        child.start()
        await lines.wait_for("ready")
        outcome = await child.stop(
            signal.SIGTERM, timeout=10, command=script("print('no-op')")
        )
        await child.output_closed(timeout=5)
        return outcome.returncode, outcome.forced

    assert run(scenario()) == (7, False)


def test_sigkill_after_the_grace_period(
    token: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A child ignoring SIGTERM is SIGKILLed after the timeout, and the log says so."""

    async def scenario() -> tuple[int, int | None, bool, float, bool]:
        lines = Lines()
        child = runner(ignores_sigterm(), token, lines, name="stubborn")
        pid = child.start()
        await lines.wait_for("ready")
        outcome = await child.stop(signal.SIGTERM, timeout=0.5)
        await child.output_closed(timeout=5)
        ignored = ("stdout", "ignored SIGTERM") in lines.lines
        return pid, outcome.returncode, outcome.forced, outcome.elapsed, ignored

    with caplog.at_level(logging.WARNING, logger="overture.runner"):
        pid, returncode, forced, elapsed, ignored = run(scenario())

    assert ignored, "the child should have received SIGTERM first"
    assert forced
    assert returncode == -signal.SIGKILL
    assert elapsed >= 0.5
    assert gone(pid)
    assert (
        "service=stubborn ignored SIGTERM for 0.5s; sending SIGKILL to its group"
        in caplog.messages
    )


def test_stop_of_an_exited_child_is_immediate(token: str) -> None:
    """Stopping a child that has already exited returns its code, not forced."""

    async def scenario() -> tuple[int | None, bool]:
        child = runner(talker(4), token, Lines())
        child.start()
        await child.exited
        outcome = await child.stop(signal.SIGTERM, timeout=10)
        await child.output_closed(timeout=5)
        return outcome.returncode, outcome.forced

    assert run(scenario()) == (4, False)


def test_stop_before_start_is_a_no_op() -> None:
    """A runner that never started stops at once with nothing to report."""

    async def scenario() -> tuple[int | None, bool]:
        child = ProcessRunner("idle", ["true"], env={}, on_line=Lines())
        outcome = await child.stop(signal.SIGTERM, timeout=10)
        await child.output_closed(timeout=5)
        return outcome.returncode, outcome.forced

    assert run(scenario()) == (None, False)


def test_kill_during_a_stop_ends_it_at_once(token: str) -> None:
    """`kill` while a stop waits out a long grace period ends the stop at once."""

    async def scenario() -> tuple[int | None, bool, float]:
        lines = Lines()
        child = runner(ignores_sigterm(), token, lines)
        child.start()
        await lines.wait_for("ready")
        stopping = asyncio.create_task(child.stop(signal.SIGTERM, timeout=60))
        await lines.wait_for("ignored SIGTERM")
        child.kill()
        outcome = await stopping
        await child.output_closed(timeout=5)
        return outcome.returncode, outcome.forced, outcome.elapsed

    returncode, forced, elapsed = run(scenario())
    assert returncode == -signal.SIGKILL
    assert not forced, "the kill, not the grace period, ended it"
    assert elapsed < 30


# Orphans.


def test_stop_takes_the_whole_group(token: str) -> None:
    """A grandchild in the service's group goes with it."""

    async def scenario() -> int:
        lines = Lines()
        child = runner(
            script(
                f"""
                import signal, subprocess
                grandchild = subprocess.Popen({long_running()!r})
                print(f"ready grandchild={{grandchild.pid}}", flush=True)
                while True:
                    signal.pause()
                """
            ),
            token,
            lines,
        )
        child.start()
        line = await lines.wait_for("ready grandchild=")
        await child.stop(signal.SIGTERM, timeout=10)
        await child.output_closed(timeout=5)
        return int(line.rsplit("=", 1)[1])

    grandchild = run(scenario())
    assert gone(grandchild)


def test_double_forked_daemon_is_adopted_and_killed(
    token: str, subreaper: None, tmp_path: Path
) -> None:
    """With a subreaper, a daemon that left the group is ours, and a stop kills it."""

    async def scenario() -> tuple[int, int, bool]:
        lines = Lines()
        child = runner(double_forker(tmp_path / "daemon.pid"), token, lines)
        pid = child.start()
        await lines.wait_for("ready")
        daemon = int((tmp_path / "daemon.pid").read_text())
        outside = os.getpgid(daemon) != pid
        parent = psutil.Process(daemon).ppid()
        await child.stop(signal.SIGTERM, timeout=10)
        await child.output_closed(timeout=5)
        return daemon, parent, outside

    daemon, parent, outside = run(scenario())
    assert outside, "the daemon should have left the service's group"
    assert parent == os.getpid()
    assert not psutil.pid_exists(daemon), "killed and reaped"


def test_kill_orphans_takes_only_the_named_service(
    token: str, subreaper: None, tmp_path: Path
) -> None:
    """`kill_orphans` kills its service's marked children but `spare`, no others."""

    async def scenario() -> tuple[list[int], list[int], int, bool]:
        lines = Lines()
        child = runner(double_forker(tmp_path / "daemon.pid"), token, lines, "one")
        leader = child.start()
        await lines.wait_for("ready")
        daemon = int((tmp_path / "daemon.pid").read_text())
        other = kill_orphans("two")
        killed = kill_orphans("one", spare=leader)
        leader_alive = alive(leader)
        await child.stop(signal.SIGTERM, timeout=10)
        await child.output_closed(timeout=5)
        return other, killed, daemon, leader_alive

    other, killed, daemon, leader_alive = run(scenario())
    assert other == []
    assert killed == [daemon]
    assert leader_alive
    assert gone(daemon)


def test_stop_right_after_start_finds_the_child(token: str) -> None:
    """A stop before the loop turns once still signals and reaps the child."""

    async def scenario() -> tuple[int | None, bool]:
        child = runner(long_running(), token, Lines())
        pid = child.start()
        outcome = await child.stop(signal.SIGTERM, timeout=10)
        return outcome.returncode, gone(pid)

    returncode, exited = run(scenario())
    assert returncode == -signal.SIGTERM
    assert exited
