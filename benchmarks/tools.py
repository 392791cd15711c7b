"""The tool contract of the peer benchmark, and Overture's adapters.

A tool is a supervisor under test: how it is configured, started and stopped
(the peers' adapters are in peers.py). Every tool runs the same workload
(`observe.child_argv`), one service per port. Each adapter says when the
tool itself reports every service running (its own status, read the cheapest
way it offers), which processes are the tool's own (for memory and CPU), and
how to ask it to stop everything gracefully. A tool whose executables are
missing is skipped, with the reason.

Executables are looked up in the directories given with `--peers-path` or
`$OVERTURE_BENCH_PEERS_PATH`, then in /tmp/peers/bin (where the README's
install recipe puts the PyPI peers), then on PATH.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

import psutil
from observe import child_argv

DEFAULT_PEERS_PATH = "/tmp/peers/bin"
POLL = 0.05
MAX_POLL = 0.25
"""Seconds between two reads of a tool's status where it must be polled."""


def finder(extra: str | None) -> Callable[[str], str | None]:
    dirs = [d for d in (extra or "").split(os.pathsep) if d]
    dirs += [os.environ.get("OVERTURE_BENCH_PEERS_PATH", ""), DEFAULT_PEERS_PATH]
    # The overture of the venv running the benchmarks comes first.
    dirs = [str(Path(sys.executable).parent), *dirs, os.environ.get("PATH", "")]
    search = os.pathsep.join(d for d in dirs if d)
    return lambda name: shutil.which(name, path=search)


def poll(check: Callable[[], bool], deadline: float) -> float | None:
    """The first time `check()` is true, polling every POLL seconds or more.

    A status read costs the tool something (supervisord builds its whole
    process list for each call), so the pause is four times the last read
    (the reads take at most a fifth of the tool's time), from POLL up to
    MAX_POLL (a read that waited on a busy tool must not delay the next).
    """
    while time.monotonic() < deadline:
        began = time.monotonic()
        try:
            if check():
                return time.monotonic()
        except (OSError, ValueError, xmlrpc.client.Error):
            pass  # not up yet, or a status file being rewritten
        time.sleep(min(MAX_POLL, max(POLL, 4 * (time.monotonic() - began))))
    return None


class LineWatch(threading.Thread):
    """Drains a tool's output; records when `done(line)` first says all run."""

    def __init__(self, stream, done: Callable[[str], bool], copy: Path) -> None:
        super().__init__(daemon=True)
        self.stream, self.done, self.copy = stream, done, copy
        self.at: float | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        with self.copy.open("w") as copy:
            for raw in self.stream:
                line = raw.decode(errors="replace")
                copy.write(line)
                if self.at is None and self.done(line):
                    self.at = time.monotonic()
                    self.finished.set()
        self.finished.set()

    def wait(self, deadline: float) -> float | None:
        self.finished.wait(max(0.0, deadline - time.monotonic()))
        return self.at


class Tool:
    """One supervisor; a subclass fills in the tool-specific steps."""

    name = ""
    executables: tuple[str, ...] = ()
    probes = False
    """Whether it is configured with a tcp ready probe and a 1 s tcp live probe."""

    def __init__(self, find: Callable[[str], str | None]) -> None:
        self.paths = {name: find(name) for name in self.executables}
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir = Path()
        self.ports: list[int] = []
        self.seen: list[psutil.Process] = []
        """Every process of the tool and its children, as last seen up."""
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if not self.name.startswith("overture"):
            # A PYTHONPATH is only for Overture (a snapshot of its source).
            self.env.pop("PYTHONPATH", None)

    def missing(self) -> str | None:
        absent = [name for name, path in self.paths.items() if path is None]
        return f"{', '.join(absent)} not found" if absent else None

    def exe(self, name: str) -> str:
        path = self.paths[name]
        assert path is not None
        return path

    def prepare(self, workdir: Path, ports: list[int]) -> None:
        self.workdir, self.ports = workdir, ports
        self.write_config()

    def write_config(self) -> None:
        raise NotImplementedError

    def before_launch(self) -> None:
        """Anything the measurement must not include (a status poller's start)."""

    def launch(self) -> None:
        raise NotImplementedError

    def wait_running(self, deadline: float) -> float | None:
        """When the tool itself reported every service running."""
        raise NotImplementedError

    def roots(self) -> list[int]:
        """The tool's top process (its children are found from it)."""
        return [self.process.pid] if self.process else []

    def request_stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def finish(self, timeout: float) -> None:
        """Wait for the tool's own exit after a stop request."""
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _spawn(
        self, argv: list[str], pipe: bool = False, log: str = "tool.out"
    ) -> subprocess.Popen[bytes]:
        output = subprocess.PIPE if pipe else (self.workdir / log).open("wb")
        return subprocess.Popen(
            argv,
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )

    def _service_dirs(self, parent: Path) -> list[Path]:
        """One run-script directory per service (the s6 and runit layout)."""
        dirs = []
        for port in self.ports:
            service = parent / f"s{port}"
            service.mkdir(parents=True)
            run = service / "run"
            run.write_text(f"#!/bin/sh\nexec {shlex.join(child_argv(port))}\n")
            run.chmod(0o755)
            dirs.append(service)
        # runsvdir waits a second before reading a directory modified in the
        # current second (it may still be changing); a real service directory
        # is older than that, so date this one back.
        past = time.time() - 60
        os.utime(parent, (past, past))
        return dirs


class Overture(Tool):
    name = "overture"
    executables = ("overture",)

    def write_config(self) -> None:
        lines = []
        for port in self.ports:
            lines += [
                f"[services.s{port}]",
                f"command = {json.dumps(child_argv(port))}",
            ]
            if self.probes:
                lines.append(f"ready = {{ tcp = {port} }}")
                lines.append(f'live = {{ tcp = {port}, interval = "1s" }}')
        (self.workdir / "overture.toml").write_text("\n".join(lines) + "\n")

    def launch(self) -> None:
        argv = [self.exe("overture"), "-f", "overture.toml", "up", "--no-live"]
        self.process = self._spawn(argv, pipe=True)
        # "overture | up: 500 ready; Ctrl-C to stop" once every service settled.
        self._watch = LineWatch(
            self.process.stdout,
            lambda line: "| up: " in line,
            self.workdir / "tool.out",
        )
        self._watch.start()

    def wait_running(self, deadline: float) -> float | None:
        return self._watch.wait(deadline)


class OvertureTcp(Overture):
    name = "overture+tcp"
    probes = True
