"""`up` in its three forms: detached, in the terminal, and joining a daemon.

A detached `up` reports a failure with the service's reason and output and
leaves no daemon behind; a second `up` joins the running daemon; a terminal
`up` serves the same API; the JSON log format holds in the daemon's log.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from helpers import long_running, script
from test_control import STACK, overture, project, write_project


def test_up_detached_reports_the_failing_service_and_rolls_back(
    tmp_path: Path, token: str
) -> None:
    """up -d exits 1 with the service, its reason and last lines; no daemon stays."""
    services = {
        "base": {"command": long_running()},
        "bad": {
            "command": script(
                """
                import sys
                print("loading config", flush=True)
                print("boom: no such table", flush=True)
                sys.exit(3)
                """
            ),
            "depends_on": ["base"],
            "ready": {"log": "never printed"},
        },
    }
    with project(tmp_path, services) as p:
        result = overture(p.root, "up", "-d")

        assert result.returncode == 1
        lines = result.stdout.splitlines()
        assert "bad failed: exited with 3" in lines
        assert "  bad | boom: no such table" in lines
        assert "overture: rolled back what this `up` started" in lines
        assert lines[-1].startswith("overture: the daemon (pid ")
        assert not p.socket.exists()


def test_up_detached_twice_adds_to_the_same_daemon(tmp_path: Path, token: str) -> None:
    """A second `up -d` adds to the running daemon; a second daemon is refused."""
    with project(tmp_path, STACK) as p:
        assert overture(p.root, "up", "-d", "cache").returncode == 0
        first = p.record()["pid"]
        assert overture(p.root, "up", "-d", "db").returncode == 0
        assert p.record()["pid"] == first
        assert p.states() == {
            "cache": "ready",
            "db": "ready",
            "api": "stopped",
            "worker": "stopped",
        }
        result = overture(p.root, "down", "db")
        assert result.returncode == 0
        assert p.states()["db"] == "stopped"
        assert p.socket.exists()  # a named down leaves the daemon running

        # A second daemon for the project is refused by the project lock.
        second = overture(p.root, "daemon")
        assert second.returncode == 1
        assert f"another Overture (pid {first}) is running" in second.stderr
        assert p.states()["cache"] == "ready"


def test_a_non_loopback_listener_is_refused_unless_forced(tmp_path: Path) -> None:
    """--listen on an outside address is a usage error naming the way out."""
    root = write_project(tmp_path, STACK)
    result = overture(root, "up", "-d", "--listen", "0.0.0.0:0")
    assert result.returncode == 2
    assert "0.0.0.0 is not a loopback address" in result.stderr
    assert "--allow-remote" in result.stderr
    assert not (root / ".overture" / "daemon.sock").exists()


def test_the_foreground_up_serves_the_same_api(tmp_path: Path, token: str) -> None:
    """status and down work against `up` running in a terminal; down ends it with 0."""
    with project(tmp_path, STACK) as p:
        foreground = subprocess.Popen(
            [sys.executable, "-m", "overture", "up", "--no-live", "db"],
            cwd=p.root,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert foreground.stdout is not None
        # The handshake: the summary line comes once everything settled.
        for line in foreground.stdout:
            if line.startswith("overture | up: "):
                break
        assert line == "overture | up: 1 ready; Ctrl-C to stop\n"

        assert p.states()["db"] == "ready"
        assert p.record()["pid"] == foreground.pid
        result = overture(p.root, "down")
        assert result.returncode == 0, result.stderr

        rest, _ = foreground.communicate(timeout=10)
        assert foreground.returncode == 0
        assert "db ready -> stopping: daemon shutting down" in rest
        assert not p.socket.exists()


def test_json_log_format_in_the_daemon_log(tmp_path: Path, token: str) -> None:
    """`up -d --log-format json` writes one JSON object a line to daemon.log."""
    with project(tmp_path, STACK) as p:
        result = overture(p.root, "up", "-d", "--log-format", "json", "cache")
        assert result.returncode == 0, result.stderr
        assert overture(p.root, "down").returncode == 0

        log = (p.state / "logs" / "daemon.log").read_text().splitlines()
        records = [json.loads(line) for line in log]
        events = [(r["service"], r["to"]) for r in records if r["type"] == "event"]
        assert events == [
            ("cache", "waiting"),
            ("cache", "starting"),
            ("cache", "ready"),
            ("cache", "stopping"),
            ("cache", "stopped"),
        ]
        lines = [r for r in records if r["type"] == "log"]
        assert lines[0]["service"] == "cache"
        assert lines[0]["stream"] == "stdout"
        assert lines[0]["line"].startswith("cache ready pid=")
        assert isinstance(lines[0]["at"], float)
        assert stat.S_IMODE((p.state / "logs" / "daemon.log").stat().st_mode) == 0o600
