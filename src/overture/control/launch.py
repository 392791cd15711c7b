"""`up` from the client's side: hand the selection to a daemon, or start one.

`up -d` spawns `python -m overture daemon` in a session of its own, its
output going to `.overture/logs/daemon.log`, and waits on a pipe for the
daemon to say it listens (or to die, closing the pipe). Then, as for `up`
against a daemon that already runs, it posts the selection and prints the
outcome once every service has settled. No step waits on a timer.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from typing import Any, TextIO

from overture.control import render
from overture.control.client import Client, DaemonError
from overture.control.commands import wait_stopped
from overture.errors import NotRunningError

READY_TIMEOUT = 60.0
"""Seconds a new daemon has to listen: time for the guard to clean a crashed run."""


def running(client: Client) -> dict[str, Any] | None:
    """The daemon's health, or None when no daemon answers."""
    try:
        health: dict[str, Any] = client.get("/healthz")
    except NotRunningError:
        return None
    return health


def spawn(client: Client, args: list[str], timeout: float = READY_TIMEOUT) -> int:
    """Start a detached daemon with `args`; return its pid once it listens."""
    paths = client.paths
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    offset = paths.log.stat().st_size if paths.log.exists() else 0

    # The daemon writes "ready" to this pipe once it listens; if it dies
    # first, the pipe closes without a word.
    read, write = os.pipe()
    os.set_inheritable(write, True)
    log = os.open(paths.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    argv = [sys.executable, "-m", "overture", *args, "--ready-fd", str(write)]
    try:
        pid = os.posix_spawn(
            sys.executable,
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(write)
        os.close(log)

    with os.fdopen(read, "rb") as pipe:
        said = pipe.readline() if select.select([pipe], [], [], timeout)[0] else b""
    if said.startswith(b"ready"):
        return pid

    # It died, or hangs: make sure it is gone, then show what it said.
    try:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    with paths.log.open("rb") as file:
        file.seek(offset)
        lines = file.read().decode("utf-8", "replace").splitlines()[-10:]
    said_text = "\n".join(f"  {line}" for line in lines) or "  (nothing)"
    raise DaemonError(
        f"the daemon did not start; its log ({paths.log}) says:\n{said_text}"
    )


def up(
    client: Client,
    request: dict[str, Any],
    spawned: int | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Post the selection, print the outcome; 1 if a service did not come up.

    `spawned` is the pid of a daemon this command started: if the selection
    failed and was rolled back, that daemon has nothing to run and is stopped.
    """
    colour = render.wants_colour(out)
    outcome = client.post("/up", request)
    for line in render.outcome_lines(outcome, colour):
        out.write(line + "\n")

    if outcome["ok"]:
        health = client.get("/healthz")
        out.write(f"overture: up; daemon pid {health['pid']}")
        out.write("; `overture status` to watch, `overture down` to stop\n")
        if health["url"]:
            out.write(
                f"overture: dashboard on {health['url']} (`overture dashboard`)\n"
            )
        return 0
    if outcome["rolled_back"]:
        out.write("overture: rolled back what this `up` started\n")
    if spawned is not None and _nothing_runs(client):
        client.post("/shutdown")
        wait_stopped(client.paths)
        out.write(f"overture: the daemon (pid {spawned}) had nothing to run; stopped\n")
    return 1


def _nothing_runs(client: Client) -> bool:
    return all(s["state"] == "stopped" for s in client.get("/services"))
