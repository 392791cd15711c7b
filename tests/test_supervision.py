"""Supervision: restart policies, live probes, containment, and the guard.

Real children and real probes; every wait is on a lifecycle event.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from helpers import free_port, script, tcp_listener
from overture.lifecycle import ServiceState, Transition
from stacks import Stack, stack

S = ServiceState


def long_running() -> list[str]:
    """Prints `ready`, then waits; SIGTERM ends it."""
    return script(
        "import signal\nprint('ready', flush=True)\nwhile True: signal.pause()"
    )


def reached(service: str, state: ServiceState) -> Callable[[Transition], bool]:
    return lambda e: e.service == service and e.target is state


def test_crash_loop_backs_off_and_opens_the_circuit(tmp_path: Path) -> None:
    """A crash loop restarts with growing delays, then stays failed: circuit open."""
    restart = {
        "policy": "on-failure",
        "max": 3,
        "initial_delay": "50ms",
        "factor": 2,
        "jitter": 0,
    }

    async def scenario() -> Stack:
        services = {
            "crash": {"command": script("raise SystemExit(3)"), "restart": restart}
        }
        async with stack(tmp_path, services) as recorder:
            await recorder.up()  # ready at once: it has no ready probe
            await recorder.until(lambda e: "circuit open" in e.reason)
        return recorder

    recorder = asyncio.run(scenario())
    failures = [e for e in recorder.of("crash") if e.target is S.FAILED]
    retries = [e for e in recorder.of("crash") if e.event == "retry"]
    assert len(failures) == 4 and len(retries) == 3
    assert "circuit open: 3 restarts" in failures[-1].reason
    assert "exited with 3" in failures[0].reason
    delays = [
        r.monotonic - f.monotonic for f, r in zip(failures, retries, strict=False)
    ]
    assert delays[0] >= 0.05 and delays[1] >= 0.1 and delays[2] >= 0.2
    assert delays[0] < delays[1] < delays[2]


def test_a_user_stop_is_never_restarted_by_policy(tmp_path: Path) -> None:
    """`always` restarts an exit, but never a service the user stopped."""

    async def scenario() -> Stack:
        services = {"svc": {"command": long_running(), "restart": {"policy": "always"}}}
        async with stack(tmp_path, services) as recorder:
            await recorder.up()
            await recorder.orchestrator.down(["svc"])
            assert recorder.orchestrator.runtimes["svc"].retry_pending is False
        return recorder

    recorder = asyncio.run(scenario())
    assert recorder.path("svc")[-2:] == ["stopping", "stopped"]
    assert "retry" not in [e.event for e in recorder.of("svc")]


def _http_server(port: int) -> list[str]:
    return script(
        f"""
        import http.server
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.end_headers()
            def log_message(self, *args):
                pass
        server = http.server.HTTPServer(("127.0.0.1", {port}), Handler)
        print("ready", flush=True)
        server.serve_forever()
        """
    )


def test_http_live_probe_fails_a_hung_process(tmp_path: Path) -> None:
    """A process that stops answering goes ready -> degraded -> failed."""
    port = free_port()
    service = {
        "command": _http_server(port),
        "ready": {"http": f"http://127.0.0.1:{port}/"},
        "live": {
            "http": f"http://127.0.0.1:{port}/",
            "interval": "100ms",
            "timeout": "200ms",
            "failure_threshold": 3,
        },
        "stop": {"timeout": "300ms"},
    }

    async def scenario() -> Stack:
        async with stack(tmp_path, {"web": service}) as recorder:
            await recorder.up()
            pid = recorder.pid("web")
            os.kill(pid, signal.SIGSTOP)  # hung: the port accepts, nothing answers
            await recorder.until(reached("web", S.FAILED))
            await recorder.down()
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        return recorder

    recorder = asyncio.run(scenario())
    assert recorder.path("web")[:5] == [
        "waiting",
        "starting",
        "ready",
        "degraded",
        "failed",
    ]
    failed = next(e for e in recorder.of("web") if e.target is S.FAILED)
    assert "live http probe failed" in failed.reason
    assert "3 times in a row" in failed.reason


def test_dependency_restart_is_propagated_per_on_failure(tmp_path: Path) -> None:
    """ignore, degrade, restart and stop each react as configured to a restart."""
    port = free_port()
    restart = {"policy": "on-failure", "initial_delay": "50ms", "jitter": 0}
    services: dict[str, Any] = {
        "base": {
            "command": tcp_listener(port),
            "ready": {"tcp": port},
            "restart": restart,
        }
    }
    for policy in ("ignore", "degrade", "restart", "stop"):
        services[policy] = {
            "command": long_running(),
            "depends_on": {"base": {"condition": "healthy", "on_failure": policy}},
        }

    async def scenario() -> Stack:
        async with stack(tmp_path, services) as recorder:
            assert await recorder.up() == []
            pid = recorder.pid("base")
            mark = len(recorder.events)
            os.kill(pid, signal.SIGKILL)
            await recorder.until(reached("stop", S.STOPPED))
            await recorder.until(
                lambda e: (
                    e.service == "restart"
                    and e.target is S.READY
                    and recorder.events.index(e) > mark
                )
            )
            await recorder.until(
                lambda e: e.service == "degrade" and e.event == "recover"
            )
            del recorder.events[:mark]
            await recorder.down()
        return recorder

    recorder = asyncio.run(scenario())
    after = {
        name: recorder.path(name) for name in ("ignore", "degrade", "restart", "stop")
    }
    assert after["ignore"] == ["stopping", "stopped"]  # only the final down
    assert after["degrade"][:2] == ["degraded", "ready"]
    assert after["restart"][:5] == [
        "stopping",
        "stopped",
        "waiting",
        "starting",
        "ready",
    ]
    assert after["stop"] == ["stopping", "stopped"]
    base_ready = next(e for e in recorder.of("base") if e.target is S.READY)
    restart_starting = next(e for e in recorder.of("restart") if e.target is S.STARTING)
    assert restart_starting.monotonic >= base_ready.monotonic
    degraded = recorder.of("degrade")[0]
    assert degraded.reason == "dependency base failed"


def _config(tmp_path: Path, body: str) -> None:
    (tmp_path / "overture.toml").write_text(textwrap.dedent(body))


_STARTED: list[subprocess.Popen[str]] = []
"""Every `overture up` a test started; killed at teardown if a test failed."""


def _start_up(tmp_path: Path, *options: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "overture", "up", "--no-live", *options],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _STARTED.append(process)
    assert process.stdout is not None
    for line in process.stdout:  # the handshake: the summary line
        if "up:" in line:
            return process
    raise AssertionError(f"overture up exited with {process.wait()}")


def _stack(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    forker = textwrap.dedent(
        f"""
        import os, signal, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                open({str(pidfile)!r}, "w").write(str(os.getpid()))
                while True: signal.pause()
            os._exit(0)
        print("ready", flush=True)
        while True: signal.pause()
        """
    )
    (tmp_path / "forker.py").write_text(forker)
    _config(
        tmp_path,
        f"""
        [services.a]
        command = ["{sys.executable}", "forker.py"]
        ready = {{ log = "ready" }}
        [services.b]
        command = ["sleep", "600"]
        depends_on = ["a"]
        """,
    )


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _is_watchdog(process: psutil.Process) -> bool:
    try:
        return "overture-watchdog" in " ".join(process.cmdline())
    except psutil.Error:  # a zombie has no command line
        return False


def test_sigkill_of_overture_leaves_no_children(tmp_path: Path) -> None:
    """Overture killed with SIGKILL: its watchdog stops every child it left."""
    _stack(tmp_path)
    overture = _start_up(tmp_path)
    children = _descendants(overture.pid)
    grandchild = psutil.Process(int((tmp_path / "grandchild.pid").read_text()))
    watched = [c for c in children if not _is_watchdog(c)]
    assert len(watched) >= 2
    overture.kill()
    overture.communicate()
    _, alive = psutil.wait_procs([*watched, grandchild], timeout=10)
    assert alive == []


def test_next_up_cleans_a_stale_run(tmp_path: Path) -> None:
    """A run whose Overture and watchdog both died is cleaned by the next up."""
    _stack(tmp_path)
    first = _start_up(tmp_path)
    children = _descendants(first.pid)
    for process in children:  # the watchdog first, then Overture
        if _is_watchdog(process):
            process.kill()
    first.kill()
    first.communicate()
    survivors = [c for c in children if c.is_running() and c.status() != "zombie"]
    assert survivors, "the children outlive a crash without the watchdog"

    second = _start_up(tmp_path)
    second.send_signal(signal.SIGINT)
    second.communicate(timeout=30)
    _, alive = psutil.wait_procs(survivors, timeout=10)
    assert alive == []
    assert second.returncode == 130


@pytest.fixture(autouse=True)
def _no_leftovers() -> Any:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # a graceful down of what it started
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
        elif process.stdout is not None:
            process.stdout.close()
    after = [
        p for p in psutil.Process().children(recursive=True) if p.pid not in before
    ]
    psutil.wait_procs(after, timeout=5)


def test_abort_on_failure_stops_everything_when_a_service_fails(tmp_path: Path) -> None:
    """--abort-on-failure: a failure after `up:` stops the stack and exits 1."""
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    (tmp_path / "late.py").write_text(
        f"open({str(fifo)!r}).read()\nraise SystemExit(4)\n"
    )
    _config(
        tmp_path,
        f"""
        [services.steady]
        command = ["sleep", "600"]
        [services.late]
        command = ["{sys.executable}", "late.py"]
        """,
    )
    overture = _start_up(tmp_path, "--abort-on-failure")
    children = [c for c in _descendants(overture.pid) if not _is_watchdog(c)]
    fifo.write_text("go")
    output, _ = overture.communicate(timeout=30)
    assert overture.returncode == 1
    assert "late failed (--abort-on-failure)" in output
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []


def test_exit_code_from_a_one_shot_test_runner(tmp_path: Path) -> None:
    """--exit-code-from: the run ends with the one-shot's own exit code."""
    port = free_port()
    (tmp_path / "db.py").write_text(tcp_listener(port)[2])
    _config(
        tmp_path,
        f"""
        [services.db]
        command = ["{sys.executable}", "db.py"]
        ready = {{ tcp = {port} }}
        [services.tests]
        command = ["{sys.executable}", "-c", "raise SystemExit(7)"]
        oneshot = true
        depends_on = {{ db = "healthy" }}
        """,
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "overture",
            "up",
            "--no-live",
            "--exit-code-from",
            "tests",
        ],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 7, result.stdout + result.stderr
    assert "db stopping -> stopped" in result.stdout
