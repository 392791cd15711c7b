"""The daemon end to end: `up -d`, the CLI client and the HTTP API.

Everything is real: the daemon is spawned by `overture up -d` in a session of
its own, the client commands run as separate processes, and the API is called
over the unix socket (and TCP) with httpx, a client that shares no code with
Overture's own. Tests sync on the commands' answers and on the event stream,
never on sleeps.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import stat
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from helpers import long_running

STACK: dict[str, Any] = {
    "db": {"command": long_running("db ready"), "ready": {"log": "ready"}},
    "cache": {"command": long_running("cache ready")},
    "api": {
        "command": long_running("api ready"),
        "depends_on": {"db": "healthy", "cache": "started"},
        "ready": {"log": "ready"},
    },
    "worker": {"command": long_running("worker ready"), "depends_on": ["api"]},
}


def overture(
    root: Path, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in `root`, as a separate process, and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "overture", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_project(root: Path, services: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "overture.json").write_text(json.dumps({"services": services}))
    return root


class Project:
    """A project directory whose daemon the test drives."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / ".overture"
        self.socket = self.state / "daemon.sock"

    def api(self) -> httpx.Client:
        """An HTTP client over the daemon's unix socket."""
        transport = httpx.HTTPTransport(uds=str(self.socket))
        return httpx.Client(transport=transport, base_url="http://overture", timeout=30)

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = json.loads((self.state / "daemon.json").read_text())
        return record

    def states(self) -> dict[str, str]:
        with self.api() as api:
            return {s["name"]: s["state"] for s in api.get("/services").json()}

    def stop_daemon(self) -> None:
        """Whatever happened, leave no daemon behind (SIGKILL: the watchdog cleans)."""
        if not self.socket.exists():
            return
        if overture(self.root, "down").returncode == 0:
            return
        with contextlib.suppress(OSError, ValueError, KeyError):
            os.kill(self.record()["pid"], signal.SIGKILL)


@contextlib.contextmanager
def project(tmp_path: Path, services: dict[str, Any]) -> Iterator[Project]:
    with_daemon = Project(write_project(tmp_path / "project", services))
    try:
        yield with_daemon
    finally:
        with_daemon.stop_daemon()


def test_client_commands_say_in_one_line_that_no_daemon_runs(tmp_path: Path) -> None:
    """Without a daemon each client command prints one line and exits 1."""
    root = write_project(tmp_path, STACK)
    for command in (["status"], ["down"], ["stop", "db"], ["logs"], ["events"]):
        result = overture(root, *command)
        assert result.returncode == 1, command
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("overture: no daemon is running for")


def test_client_imports_stay_light() -> None:
    """The client commands import neither the server stack nor pydantic."""
    code = (
        "import sys, overture.cli, overture.control.commands, overture.control.launch;"
        "heavy = {'fastapi', 'uvicorn', 'httpx', 'pydantic', 'statemachine', 'rich'};"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_stack_driven_by_the_cli_and_the_api(tmp_path: Path, token: str) -> None:
    """up -d, then status, up, stop, start, restart, logs, API calls and down."""
    with project(tmp_path, STACK) as p:
        # Up: the selection and its dependencies, in the background.
        result = overture(p.root, "up", "-d", "api")
        assert result.returncode == 0, result.stderr
        assert "overture: up; daemon pid" in result.stdout
        assert stat.S_IMODE(p.socket.stat().st_mode) == 0o600
        daemon_pid = p.record()["pid"]
        assert p.states() == {
            "db": "ready",
            "cache": "ready",
            "api": "ready",
            "worker": "stopped",
        }

        # A separate process follows every event from the first one on.
        events = subprocess.Popen(
            [sys.executable, "-m", "overture", "events", "--since", "0", "--json"],
            cwd=p.root,
            stdout=subprocess.PIPE,
            text=True,
        )
        # Another one follows the output of worker (not started yet).
        follow = subprocess.Popen(
            [sys.executable, "-m", "overture", "logs", "-f", "worker"],
            cwd=p.root,
            stdout=subprocess.PIPE,
            text=True,
        )
        # And another one watches the status table.
        watch = subprocess.Popen(
            [sys.executable, "-m", "overture", "status", "--watch"],
            cwd=p.root,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert watch.stdout is not None
        title = f"\x1b[H\x1b[2Joverture: daemon pid {daemon_pid}, "
        assert watch.stdout.readline().startswith(title)
        for line in watch.stdout:  # the handshake: the first frame is drawn
            if line.startswith("worker "):
                assert line.split()[1] == "stopped"
                break

        # `up` against the running daemon adds to it.
        result = overture(p.root, "up", "worker")
        assert result.returncode == 0, result.stderr
        assert p.record()["pid"] == daemon_pid
        assert p.states()["worker"] == "ready"

        # status, as a table and as JSON.
        table = overture(p.root, "status").stdout.splitlines()
        assert table[0].split() == [
            "SERVICE",
            "STATE",
            "PID",
            "UPTIME",
            "RESTARTS",
            "PROBE",
            "REASON",
        ]
        rows = {line.split()[0]: line.split() for line in table[1:]}
        assert rows["api"][1] == "ready"
        assert rows["api"][5] == "ok"  # the log probe passed
        listed = json.loads(overture(p.root, "status", "--json").stdout)
        assert [s["name"] for s in listed] == ["cache", "db", "api", "worker"]
        assert all(isinstance(s["pid"], int) for s in listed)

        # stop: dependents first; start: dependencies first.
        result = overture(p.root, "stop", "api")
        assert result.returncode == 0, result.stderr
        assert p.states() == {
            "db": "ready",
            "cache": "ready",
            "api": "stopped",
            "worker": "stopped",
        }
        result = overture(p.root, "start", "worker")
        assert result.returncode == 0, result.stderr
        assert set(p.states().values()) == {"ready"}

        # restart: db, and the running services that depend on it, again.
        pids = {s["name"]: s["pid"] for s in listed}
        result = overture(p.root, "restart", "db")
        assert result.returncode == 0, result.stderr
        with p.api() as api:
            now = {s["name"]: s for s in api.get("/services").json()}
        assert {n: s["state"] for n, s in now.items()} == dict.fromkeys(now, "ready")
        assert now["db"]["pid"] != pids["db"]
        assert now["db"]["restarts"] == 1
        assert now["cache"]["pid"] == pids["cache"]  # not a dependent of db

        # logs: the last lines of a service.
        result = overture(p.root, "logs", "-n", "1", "db")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("db       | db ready pid=")
        assert len(result.stdout.splitlines()) == 1

        # The API, from this process: one service, an operation, the graph.
        with p.api() as api:
            assert api.get("/healthz").json()["pid"] == daemon_pid
            cache = api.get("/services/cache").json()
            assert cache["depends_on"] == []
            assert (
                cache["reason"]
                == "started (no ready probe) after "
                + (cache["reason"].rsplit(" ", 1)[1])
            )
            outcome = api.post("/services/cache/restart").json()
            assert outcome["ok"] is True
            assert [s["name"] for s in outcome["services"]] == [
                "cache",
                "db",
                "api",
                "worker",
            ]
            graph = api.get("/graph").json()
            assert {(e["from"], e["to"]) for e in graph["edges"]} == {
                ("api", "db"),
                ("api", "cache"),
                ("worker", "api"),
            }
            tail = api.get("/services/api/logs", params={"n": 10}).json()["lines"]
            assert [line["line"].split(" pid=")[0] for line in tail] == [
                "api ready"
            ] * 4
            missing = api.post("/services/nope/start")
            assert missing.status_code == 404
            assert "unknown service 'nope'" in missing.json()["error"]

            # The metrics parse, and agree with the states and the events.
            seen = graph["seq"]
            metrics = check_metrics(api.get("/metrics"), api.get("/services").json())
            assert metrics["transitions"] == seen
            assert metrics["user_restarts"] == {"db": 1, "cache": 1}

        # down: everything stops and the daemon exits.
        result = overture(p.root, "down")
        assert result.returncode == 0, result.stderr
        assert result.stdout.endswith("overture: the daemon stopped\n")
        assert not p.socket.exists()
        assert overture(p.root, "status").returncode == 1

        # The event stream saw every transition, in order, then ended.
        out, _ = events.communicate(timeout=10)
        assert events.returncode == 0
        check_event_order([json.loads(line) for line in out.splitlines()], seen)

        # The output of each of worker's four runs, then the end.
        out, _ = follow.communicate(timeout=10)
        assert follow.returncode == 0
        runs = [line.split(" pid=")[0] for line in out.splitlines()]
        assert runs == ["worker   | worker ready"] * 4

        # The watch redrew on the changes, and ended with the daemon.
        out, _ = watch.communicate(timeout=10)
        assert watch.returncode == 0
        frames = out.split("\x1b[H\x1b[2J")
        assert any(re.search(r"^worker +ready ", f, re.MULTILINE) for f in frames)
        assert frames[-1].endswith("overture: the daemon stopped\n")


def check_metrics(
    response: httpx.Response, services: list[dict[str, Any]]
) -> dict[str, Any]:
    """Parse /metrics with prometheus-client; check it against /services."""
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}

    states = {
        s.labels["service"]: s.labels["state"]
        for s in families["overture_service_state"].samples
        if s.value == 1
    }
    assert states == {s["name"]: s["state"] for s in services}

    startups = {
        s.labels["service"]: s.value
        for s in families["overture_startup_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert all(count >= 1 for count in startups.values())
    latency = families["overture_probe_latency_seconds"].samples
    assert {s.labels["service"] for s in latency} == {"db", "api"}
    stops = {
        (s.labels["service"], s.labels["outcome"]): s.value
        for s in families["overture_stops"].samples
        if s.name == "overture_stops_total"
    }
    assert stops[("db", "clean")] == 1
    assert stops[("db", "forced")] == 0

    transitions = families["overture_transitions"].samples
    restarts = families["overture_restarts"].samples
    return {
        "transitions": sum(s.value for s in transitions if s.name.endswith("_total")),
        "user_restarts": {
            s.labels["service"]: s.value
            for s in restarts
            if s.labels["cause"] == "user" and s.value
        },
    }


def check_event_order(events: list[dict[str, Any]], before_down: int) -> None:
    """Numbered 1..N with no gap; each service's states chain from and to stopped."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len(events) > before_down
    assert all(e["type"] == "event" for e in events)
    chains: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        chains.setdefault(event["service"], []).append(event)
    assert set(chains) == set(STACK)
    for chain in chains.values():
        assert chain[0]["from"] == "stopped"
        for before, after in itertools.pairwise(chain):
            assert after["from"] == before["to"]
        assert chain[-1]["to"] == "stopped"
    stops = Counter(e["service"] for e in events if e["event"] == "stop_done")
    assert stops["db"] == 2  # the restart, then the down
