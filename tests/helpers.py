"""Children for the behaviour tests, and ways to see what they left behind.

Every child is a small `sys.executable -c` script. Children that stay up
listen on a port when given one (for a tcp ready probe), then print a line
with "ready" and their pid, so a probe or a test syncs on that instead of
sleeping. They wait in `signal.pause()` and keep the default action of
SIGTERM unless the script says otherwise.

Every test that spawns children tags them with `TOKEN` in their environment;
`tagged` finds those still alive, grandchildren included, through psutil.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import select
import signal
import socket
import sys
import textwrap
import uuid
from collections.abc import Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

T = TypeVar("T")

_PR_SET_CHILD_SUBREAPER = 36

TOKEN = "OVERTURE_TEST_TOKEN"
"""The environment variable that marks a test's children."""


def script(body: str) -> list[str]:
    """The argv that runs `body` (dedented) with this interpreter."""
    return [sys.executable, "-c", textwrap.dedent(body)]


_LISTEN = """\
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", {port}))
server.listen()
"""


def serving(
    setup: str = "", port: int | None = None, line: str = "'ready'"
) -> list[str]:
    """A child that stays up: `setup`, then it listens, says so, and waits.

    It listens on 127.0.0.1:`port` if one is given (for a tcp ready probe),
    then prints `<line> pid=<pid>` (`line` is a Python expression), then
    waits for signals forever. `os`, `signal` and `socket` are imported.
    """
    body = (
        "import os, signal, socket\n"
        + textwrap.dedent(setup).strip("\n")
        + "\n"
        + ("" if port is None else _LISTEN.format(port=port))
        + f'print({line}, f"pid={{os.getpid()}}", flush=True)\n'
        + "while True:\n    signal.pause()\n"
    )
    return script(body)


def long_running(message: str = "ready", port: int | None = None) -> list[str]:
    """Prints `<message> pid=<pid>` (listening on `port`), waits; SIGTERM ends it."""
    return serving(port=port, line=repr(message))


def tcp_listener(port: int = 0) -> list[str]:
    """Listens on 127.0.0.1:`port` (0: a free one), then prints `ready port=N`."""
    return script(
        f"""
        import os, socket
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", {port}))
        server.listen()
        port = server.getsockname()[1]
        print(f"ready port={{port}} pid={{os.getpid()}}", flush=True)
        while True:
            server.accept()[0].close()
        """
    )


def ignores_sigterm(port: int | None = None) -> list[str]:
    """Prints `ignored SIGTERM` for each SIGTERM and keeps running."""
    return serving(
        """
        def ignore(signum, frame):
            print("ignored SIGTERM", flush=True)
        signal.signal(signal.SIGTERM, ignore)
        """,
        port,
    )


def exits_on(signum: signal.Signals, code: int, port: int | None = None) -> list[str]:
    """Runs until it receives `signum`, then exits with `code`."""
    return serving(
        f"signal.signal({int(signum)}, lambda signum, frame: os._exit({code}))", port
    )


def send_signal(pid: int, signum: signal.Signals) -> list[str]:
    """A command that sends `signum` to `pid` (a stop command)."""
    return script(f"import os; os.kill({pid}, {int(signum)})")


def oneshot(code: int, message: str = "done") -> list[str]:
    """Prints `message` and exits with `code` at once."""
    return script(
        f"""
        import sys
        print({message!r}, flush=True)
        sys.exit({code})
        """
    )


def talker(code: int) -> list[str]:
    """Two lines on stdout (the last without newline), one on stderr, exits `code`."""
    return script(
        f"""
        import sys
        sys.stdout.write("out one\\n")
        sys.stdout.flush()
        sys.stderr.write("err one\\n")
        sys.stderr.flush()
        sys.stdout.write("out last, no newline")
        sys.exit({code})
        """
    )


def double_forker(pidfile: Path, port: int | None = None) -> list[str]:
    """Starts a daemon the classic way (fork, setsid, fork) and stays up.

    The daemon leaves the service's session and process group, closes its
    stdio and waits; its pid is in `pidfile` before the child says `ready`.
    """
    return serving(
        f"""
        read, write = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.write(write, str(os.getpid()).encode())
                os.close(write)
                while True:
                    signal.pause()
            os._exit(0)
        os.close(write)
        daemon = os.read(read, 32).decode()
        os.wait()
        path = {str(pidfile)!r}
        with open(path + ".tmp", "w") as file:
            file.write(daemon)
        os.rename(path + ".tmp", path)
        """,
        port,
        line='f"ready daemon={daemon}"',
    )


def fifo_reader(fifo: Path, port: int | None = None) -> list[str]:
    """Says `ready` once it has read a line from `fifo`, then waits.

    Opening a FIFO blocks until the other end is open too, so this and
    `fifo_writer` on the same FIFO become ready only if both run at once.
    """
    return serving(
        f"""
        with open({str(fifo)!r}) as fifo:
            fifo.readline()
        """,
        port,
    )


def fifo_writer(fifo: Path, port: int | None = None) -> list[str]:
    """Says `ready` once it has written a line to `fifo`, then waits."""
    return serving(
        f"""
        with open({str(fifo)!r}, "w") as fifo:
            fifo.write("hello\\n")
        """,
        port,
    )


_given_ports: set[int] = set()


def free_port() -> int:
    """A free port on 127.0.0.1, never the same one twice in a test run."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port


# What is left behind.


def alive(pid: int) -> bool:
    """True if `pid` runs (a zombie has exited: it counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone(pid: int, within: float = 5.0) -> bool:
    """True once `pid` has exited; False if it still runs after `within` seconds.

    A SIGKILL takes effect asynchronously: this waits for the exit itself
    (its pidfd turns readable) rather than for some time.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], within)
    finally:
        os.close(pidfd)
    return bool(readable)


def tagged(token: str) -> list[psutil.Process]:
    """Living processes (other than this one) whose environment holds `token`."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(TOKEN) != token:
                continue
            if process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@contextlib.contextmanager
def children_tagged(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Tags children started in the block; at its end, none may be alive.

    Leftovers are killed (so one failure does not leak into the next test)
    and reported as an error.
    """
    token = uuid.uuid4().hex
    monkeypatch.setenv(TOKEN, token)
    yield token
    left = [p for p in tagged(token) if not gone(p.pid, within=2.0)]
    for process in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    assert not left, f"processes left behind: {[p.pid for p in left]}"


def tagged_env(token: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus the tag (and `extra`)."""
    return {**os.environ, TOKEN: token, **(extra or {})}


@contextlib.contextmanager
def adopting_orphans() -> Iterator[None]:
    """This process adopts orphaned descendants (a child subreaper) in the block."""
    from overture.runners.process import become_subreaper

    become_subreaper()
    try:
        yield
    finally:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


# Async.


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on a fresh loop in debug mode (tests are plain functions)."""
    return asyncio.run(coroutine, debug=True)
