"""The `overture` command, run as a real process against a small overture.toml.

A foreground `up` is synced on its output: the `up:` summary line says every
service settled, and only then does a test send its signal.
"""

from __future__ import annotations

import json
import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psutil
import pytest

from helpers import (
    double_forker,
    exits_on,
    free_port,
    gone,
    ignores_sigterm,
    long_running,
    oneshot,
    serving,
    tagged,
)
from overture.control.daemon import REPEAT_WINDOW
from overture.runners.process import MARKER

pytestmark = pytest.mark.usefixtures("token")


# A config file from Python values.


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(value)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def write_config(
    directory: Path,
    services: dict[str, dict[str, Any]],
    profiles: dict[str, list[str]] | None = None,
) -> Path:
    lines = []
    for name, table in services.items():
        lines.append(f"[services.{_key(name)}]")
        lines += [f"{_key(k)} = {_toml(v)}" for k, v in table.items()]
        lines.append("")
    if profiles:
        lines.append("[profiles]")
        lines += [f"{_key(k)} = {_toml(v)}" for k, v in profiles.items()]
    path = directory / "overture.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def listening(
    child: Callable[..., list[str]], *args: Any, **fields: Any
) -> dict[str, Any]:
    """A service running `child(*args, port=...)`, ready once it listens there."""
    port = free_port()
    return {"command": child(*args, port=port), "ready": {"tcp": port}, **fields}


def quick_stack() -> dict[str, dict[str, Any]]:
    """db <- api <- web, each quick to start."""
    return {
        "db": listening(long_running),
        "api": listening(long_running, depends_on={"db": "healthy"}),
        "web": listening(long_running, depends_on={"api": "healthy"}),
    }


# Running the command.


def environment() -> dict[str, str]:
    """This environment, as a user's shell would have it: buffered, no colour."""
    ignored = {"FORCE_COLOR", "PYTHONUNBUFFERED"}
    env = {k: v for k, v in os.environ.items() if k not in ignored}
    env["NO_COLOR"] = "1"
    return env


def overture(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `overture ARGS` in `cwd` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "overture", *args],
        check=False,
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


class Up:
    """A foreground `overture up --no-live`, its output read line by line."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.stderr_path = cwd / "stderr.txt"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "overture", "up", "--no-live", *args],
                cwd=cwd,
                env=environment(),
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self.process.stdout,), daemon=True
        )
        self._reader.start()

    def _read(self, stdout: IO[bytes]) -> None:
        for raw in stdout:
            self._queue.put(raw.decode(errors="replace").rstrip("\n"))
        self._queue.put(None)
        stdout.close()

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """The first line (from now on) containing `text`; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line with {text!r} in {timeout}s:\n{self.output}")
            if line is None:
                self._queue.put(None)
                pytest.fail(f"output ended before {text!r}:\n{self.output}")
            self.lines.append(line)
            if text in line:
                return line

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout: float = 30) -> int:
        """Its exit code, once it has exited and its output is read."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"overture did not exit in {timeout}s:\n{self.output}")
        self._reader.join(timeout)
        while (line := self._queue.get_nowait()) is not None:
            self.lines.append(line)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def pid_of(self, service: str) -> int:
        """The pid of `service`'s process: the child of `up` with its marker."""
        for child in psutil.Process(self.process.pid).children():
            if child.environ().get(MARKER) == service:
                return child.pid
        raise AssertionError(f"{service} has no process:\n{self.output}")


def assert_nothing_left(token: str) -> None:
    left = [p.pid for p in tagged(token) if not gone(p.pid, within=5.0)]
    assert left == [], "processes left behind"


def transitions(output: str) -> list[tuple[str, str, str]]:
    """(service, from, to) of each transition line, in order."""
    pattern = re.compile(r"^overture\s+\| ([\w.-]+) (\w+) -> (\w+): ", re.M)
    return pattern.findall(output)


def index(found: list[tuple[str, str, str]], service: str, target: str) -> int:
    return next(i for i, (s, _, t) in enumerate(found) if (s, t) == (service, target))


# Exit codes of `up`.


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)]
)
def test_signal_after_up_stops_everything(
    tmp_path: Path, token: str, signum: signal.Signals, code: int
) -> None:
    """SIGINT or SIGTERM after `up:` stops all in reverse order; exit 128 + signal."""
    write_config(tmp_path, quick_stack())
    up = Up(tmp_path)
    summary = up.wait_for("up: ")
    assert "3 ready" in summary
    pids = [up.pid_of(name) for name in ("db", "api", "web")]
    assert set(pids) <= {p.pid for p in tagged(token)}, "the tag reaches them"

    up.send(signum)

    assert up.finish() == code, up.output + up.stderr
    assert f"{signum.name}: stopping everything" in up.output
    found = transitions(up.output)
    assert index(found, "web", "stopped") < index(found, "api", "stopping")
    assert index(found, "api", "stopped") < index(found, "db", "stopping")
    assert all(gone(pid) for pid in pids)
    assert_nothing_left(token)


def test_signal_stops_everything_after_the_output_pipe_closed(
    tmp_path: Path, token: str
) -> None:
    """With nobody left reading its output, `up` still stops all on SIGTERM."""
    write_config(tmp_path, quick_stack())
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "overture", "up", "--no-live"],
        cwd=tmp_path,
        env=environment(),
        stdout=write_end,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    seen, deadline = b"", time.monotonic() + 30
    while b"| up: " not in seen:
        assert time.monotonic() < deadline, f"no 'up:' line in 30s: {seen!r}"
        if select.select([read_end], [], [], 1)[0]:
            chunk = os.read(read_end, 65536)
            assert chunk, f"output ended before 'up:': {seen!r}"
            seen += chunk
    pids = [c.pid for c in psutil.Process(process.pid).children() if c.pid]
    os.close(read_end)  # the reader goes away, as a killed `| tee` would

    process.send_signal(signal.SIGTERM)

    try:
        code = process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("overture ignored SIGTERM once its output pipe was closed")
    assert code == 143
    assert all(gone(pid) for pid in pids)
    assert_nothing_left(token)


def test_second_sigint_kills_at_once(tmp_path: Path, token: str) -> None:
    """A second SIGINT during a long graceful stop kills every group at once."""
    services = {"stubborn": listening(ignores_sigterm, stop={"timeout": "60s"})}
    write_config(tmp_path, services)
    up = Up(tmp_path)
    up.wait_for("up: ")
    began = time.monotonic()

    up.send(signal.SIGINT)
    first = time.monotonic()
    up.wait_for("stubborn ready -> stopping: interrupted")
    # The second press comes after the window in which a repeat counts as a
    # forwarded copy of the first: this pause is the input, not a wait.
    time.sleep(max(0.0, REPEAT_WINDOW - (time.monotonic() - first)) + 0.1)
    up.send(signal.SIGINT)

    assert up.finish() == 130
    assert time.monotonic() - began < 30, "the 60s grace period was waited out"
    assert "SIGINT again: killing every process group" in up.output
    assert "stubborn stopping -> stopped: SIGTERM sent, killed by SIGKILL" in up.output
    assert_nothing_left(token)


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [
        (signal.SIGINT, 130, "the same request, forwarded (again to kill)"),
        (signal.SIGTERM, 143, "SIGTERM again: still stopping gracefully"),
    ],
)
def test_a_stop_signal_delivered_twice_still_stops_gracefully(
    tmp_path: Path, token: str, signum: signal.Signals, code: int, said: str
) -> None:
    """A signal to the process group reaches Overture and a wrapper that
    forwards it (`uv run` without a terminal): the copy must not kill."""
    write_config(tmp_path, quick_stack())
    up = Up(tmp_path)
    up.wait_for("up: ")
    pids = [up.pid_of(name) for name in ("db", "api", "web")]

    up.send(signum)
    up.wait_for(f"{signum.name}: stopping everything")
    up.send(signum)  # the forwarded copy, milliseconds later

    assert up.finish() == code, up.output + up.stderr
    assert said in up.output
    assert "killing every process group" not in up.output
    for name in ("db", "api", "web"):
        assert re.search(rf"{name} stopping -> stopped: .*\(clean\)", up.output)
    assert "SIGKILL" not in up.output
    assert all(gone(pid) for pid in pids)
    assert_nothing_left(token)


def test_failing_service_rolls_back_and_exits_1(tmp_path: Path, token: str) -> None:
    """A service that fails during up rolls back what started; exit code 1."""
    services = {
        "db": listening(long_running),
        "migrate": {
            "command": oneshot(3, "migration failed"),
            "oneshot": True,
            "depends_on": {"db": "healthy"},
        },
        "api": listening(long_running, depends_on={"migrate": "completed"}),
    }
    write_config(tmp_path, services)
    up = Up(tmp_path)

    assert up.finish() == 1, up.output + up.stderr
    assert "migrate failed: exited with 3" in up.output
    assert "api blocked: dependency migrate failed" in up.output
    assert (
        "db ready -> stopping: rollback: a selected service could not start"
        in up.output
    )
    assert "up: " not in up.output
    assert_nothing_left(token)


def test_stack_of_oneshots_exits_0(tmp_path: Path, token: str) -> None:
    """When every service has completed, up ends by itself with exit code 0."""
    services = {
        "first": {"command": oneshot(0, "first done"), "oneshot": True},
        "second": {
            "command": oneshot(0, "second done"),
            "oneshot": True,
            "depends_on": {"first": "completed"},
        },
    }
    write_config(tmp_path, services)
    up = Up(tmp_path)

    assert up.finish() == 0, up.output + up.stderr
    assert re.search(r"^first +\| first done$", up.output, re.M)
    assert re.search(r"^second +\| second done$", up.output, re.M)
    found = transitions(up.output)
    assert index(found, "first", "completed") < index(found, "second", "starting")
    assert_nothing_left(token)


def test_crash_after_up_exits_1(tmp_path: Path, token: str) -> None:
    """A service that crashes once everything is up makes `up` exit 1, not 0."""
    write_config(tmp_path, {"svc": listening(exits_on, signal.SIGUSR1, 3)})
    up = Up(tmp_path)
    up.wait_for("up: ")

    os.kill(up.pid_of("svc"), signal.SIGUSR1)

    up.wait_for("svc ready -> failed: exited with 3")
    assert up.finish() == 1
    assert_nothing_left(token)


def test_service_output_reaches_a_pipe_at_once(tmp_path: Path, token: str) -> None:
    """A line a running service prints shows up on `up`'s piped stdout at once."""
    child = serving(
        "signal.signal(signal.SIGUSR1, lambda *_: print('poked', flush=True))",
        port := free_port(),
    )
    write_config(tmp_path, {"svc": {"command": child, "ready": {"tcp": port}}})
    up = Up(tmp_path)
    up.wait_for("up: ")

    os.kill(up.pid_of("svc"), signal.SIGUSR1)

    try:
        up.wait_for("| poked", timeout=2)
    finally:
        up.send(signal.SIGINT)
        up.finish()
        assert_nothing_left(token)


def test_double_forked_daemon_is_gone_after_up_ends(tmp_path: Path, token: str) -> None:
    """A daemon a service double-forked does not outlive `up`."""
    pidfile = tmp_path / "daemon.pid"
    write_config(tmp_path, {"forks": listening(double_forker, pidfile)})
    up = Up(tmp_path)
    up.wait_for("up: ")
    daemon = int(pidfile.read_text())
    assert os.getsid(daemon) != up.pid_of("forks")

    up.send(signal.SIGINT)

    assert up.finish() == 130
    assert gone(daemon)
    assert_nothing_left(token)


# Config and usage errors.


def test_bad_config_exits_2(tmp_path: Path) -> None:
    """An unknown key is a config error: exit 2, the file, line and a suggestion."""
    (tmp_path / "overture.toml").write_text('[services.api]\ncomand = ["true"]\n')
    result = overture(tmp_path, "up", "--no-live")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "overture.toml:2:" in result.stderr
    assert "unknown key 'comand'; did you mean 'command'?" in result.stderr


def test_dependency_cycle_exits_2(tmp_path: Path) -> None:
    """A dependency cycle is a config error with exit code 2, spelt out."""
    write_config(
        tmp_path,
        {
            "a": {"command": ["true"], "depends_on": ["b"]},
            "b": {"command": ["true"], "depends_on": ["a"]},
        },
    )
    result = overture(tmp_path, "check")
    assert result.returncode == 2
    assert "dependency cycle: a -> b -> a" in result.stderr


def test_missing_config_exits_2(tmp_path: Path) -> None:
    """Without a config file, up exits 2 and says what to do."""
    result = overture(tmp_path, "up", "--no-live")
    assert result.returncode == 2
    assert "no overture.toml" in result.stderr


def test_unknown_service_exits_2(tmp_path: Path) -> None:
    """Naming a service that does not exist is a usage error: exit 2."""
    write_config(tmp_path, quick_stack())
    result = overture(tmp_path, "up", "--no-live", "wbe")
    assert result.returncode == 2
    assert "unknown service 'wbe' (did you mean 'web'?)" in result.stderr


@pytest.mark.parametrize("args", [["up", "--bogus"], [], ["frobnicate"]])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    """A bad option, no command or an unknown command exit with 2."""
    assert overture(tmp_path, *args).returncode == 2


# check and graph.


def test_check_says_ok(tmp_path: Path) -> None:
    """`check` validates the config and sums it up in one line, exit 0."""
    write_config(tmp_path, quick_stack(), profiles={"front": ["web"]})
    result = overture(tmp_path, "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "overture.toml: ok (3 services, 1 profiles)\n"


def test_check_with_file_option(tmp_path: Path) -> None:
    """`-f FILE` reads that config from anywhere."""
    config = write_config(tmp_path, quick_stack())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = overture(elsewhere, "-f", str(config), "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("overture.toml: ok (3 services")


def test_graph_tree(tmp_path: Path) -> None:
    """`graph` draws each root with its dependencies and their conditions."""
    write_config(tmp_path, quick_stack())
    result = overture(tmp_path, "graph")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("web\n└── api (healthy)\n    └── db (healthy)\n")


def test_graph_json_of_a_selection(tmp_path: Path) -> None:
    """`graph --format json api` shows api and what it needs, in start order."""
    write_config(tmp_path, quick_stack())
    result = overture(tmp_path, "graph", "--format", "json", "api")
    assert result.returncode == 0, result.stderr
    graph = json.loads(result.stdout)
    assert graph["nodes"] == [
        {"name": "db", "requested": False},
        {"name": "api", "requested": True},
    ]
    assert [(e["from"], e["to"], e["condition"]) for e in graph["edges"]] == [
        ("api", "db", "healthy")
    ]


def test_help_lists_the_commands(tmp_path: Path) -> None:
    """`--help` exits 0 and names the core commands."""
    result = overture(tmp_path, "--help")
    assert result.returncode == 0
    for command in ("up", "check", "graph"):
        assert re.search(rf"\b{command}\b", result.stdout)
