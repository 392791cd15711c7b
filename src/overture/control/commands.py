"""The client commands: status, down, start/stop/restart, logs, events.

Each asks the project's daemon over its unix socket and prints the answer.
Standard library only (see `client`): `overture status` answers in tens of
milliseconds. When no daemon runs, the client raises `NotRunningError`, which
the CLI prints as one line and exits 1.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from overture.control import render
from overture.control.client import (
    Client,
    ConnectionLostError,
    DaemonError,
    path_of,
)
from overture.control.paths import DaemonPaths, find_root
from overture.errors import NotRunningError

WATCH_REFRESH = 1.0
"""Seconds between redraws of `status --watch` when nothing happens (uptime)."""

STOP_WAIT = 60.0
"""Seconds `down` waits for the daemon to exit once every service stopped."""


def client_for(file: Path | None) -> Client:
    """The client of the daemon of the project around the current directory."""
    return Client(DaemonPaths(find_root(file)))


def _width(out: TextIO) -> int | None:
    try:
        return os.get_terminal_size(out.fileno()).columns if out.isatty() else None
    except (OSError, ValueError):
        return None


# status


def status(
    client: Client,
    *,
    as_json: bool = False,
    watch: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    if watch:
        return _watch(client, out)
    services = client.get("/services")
    if as_json:
        out.write(json.dumps(services, indent=2) + "\n")
    else:
        colour = render.wants_colour(out)
        out.write(render.status_table(services, colour, _width(out)) + "\n")
    return 0


def _watch(client: Client, out: TextIO) -> int:
    """Redraw on every lifecycle event, and every second for the uptimes."""
    import queue
    import threading

    changes: queue.Queue[bool] = queue.Queue()

    def follow() -> None:
        for _ in client.stream("/events"):
            changes.put(True)
        changes.put(False)  # the stream ended: the daemon is gone

    threading.Thread(target=follow, name="events", daemon=True).start()
    colour = render.wants_colour(out)
    while True:
        try:
            health, services = client.get("/healthz"), client.get("/services")
        except (NotRunningError, ConnectionLostError):
            break  # gone, or going: a `down` ends the watch
        title = (
            f"overture: daemon pid {health['pid']}, {render.duration(health['uptime'])}"
        )
        table = render.status_table(services, colour, _width(out))
        out.write(f"\x1b[H\x1b[2J{title}\n\n{table}\n")
        out.flush()
        try:
            if not changes.get(timeout=WATCH_REFRESH):
                break
        except queue.Empty:
            continue
        while not changes.empty():  # one redraw for a burst of events
            if not changes.get_nowait():
                break
    out.write("overture: the daemon stopped\n")
    return 0


# Operations


def operate(
    client: Client, action: str, names: list[str], out: TextIO = sys.stdout
) -> int:
    """start, stop or restart each of `names` in turn."""
    colour = render.wants_colour(out)
    ok = True
    for name in names:
        outcome = client.post(path_of("services", name, action))
        for line in render.outcome_lines(outcome, colour):
            out.write(line + "\n")
        ok = ok and outcome["ok"]
    return 0 if ok else 1


def down(client: Client, names: list[str], out: TextIO = sys.stdout) -> int:
    """Stop `names` and their dependents; with none, everything and the daemon."""
    colour = render.wants_colour(out)
    if names:
        outcome = client.post("/down", {"services": names})
    else:
        outcome = client.post("/shutdown")
    for line in render.outcome_lines(outcome, colour):
        out.write(line + "\n")
    if not names:
        wait_stopped(client.paths)
        out.write("overture: the daemon stopped\n")
    return 0


def wait_stopped(paths: DaemonPaths, timeout: float = STOP_WAIT) -> None:
    """Block until the daemon let go of the project lock, that is, exited."""
    try:
        fd = os.open(paths.lock, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        with _alarm(timeout):
            fcntl.flock(fd, fcntl.LOCK_SH)
    except TimeoutError:
        raise DaemonError(
            f"every service stopped, but the daemon did not exit within "
            f"{timeout:g}s; see {paths.log}"
        ) from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# logs and events


def logs(
    client: Client,
    names: list[str],
    lines: int = 100,
    *,
    follow: bool = False,
    as_json: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """The last `lines` output lines of `names` (all if none); then new ones."""
    colour = render.wants_colour(out)
    if not follow:
        records = client.get(path_of("logs", service=names, n=lines))["lines"]
        shown = names or sorted({r["service"] for r in records})
        _print_lines(records, render.LinePrefixes(shown, colour), as_json, out)
        return 0
    shown = names or [s["name"] for s in client.get("/services")]
    prefixes = render.LinePrefixes(shown, colour)
    for event in client.stream(path_of("logs", "stream", service=names, n=lines)):
        _print_lines([event.json()], prefixes, as_json, out)
    return 0


def _print_lines(
    records: list[dict[str, Any]],
    prefixes: render.LinePrefixes,
    as_json: bool,
    out: TextIO,
) -> None:
    for record in records:
        if as_json:
            out.write(json.dumps({"type": "log", **record}) + "\n")
        else:
            out.write(prefixes.line(record["service"], record["line"]) + "\n")
    out.flush()


def events(
    client: Client,
    since: int | None = None,
    *,
    as_json: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Every lifecycle event from now (or after number `since`) on."""
    colour = render.wants_colour(out)
    for event in client.stream(path_of("events", since=since)):
        data = event.json()
        if as_json:
            out.write(json.dumps({"type": "event", **data}) + "\n")
        else:
            out.write(render.event_line(data, colour) + "\n")
        out.flush()
    return 0


def dashboard(client: Client, out: TextIO = sys.stdout) -> int:
    """The dashboard's address, with the token that its buttons need."""
    url = client.get("/healthz")["url"]
    if url is None:
        raise DaemonError(
            "the daemon has no TCP listener, so no dashboard; start it with "
            "`overture up -d --listen 127.0.0.1:PORT`"
        )
    try:
        token = client.paths.token.read_text(encoding="utf-8").strip()
    except OSError:
        token = ""
    out.write(f"{url}#token={token}\n" if token else f"{url}\n")
    return 0
