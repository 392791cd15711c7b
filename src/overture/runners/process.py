"""The process runner: one child in its own session, watched without threads.

Each child is spawned with `start_new_session`, so its pid is also the id of a
process group holding everything it starts (unless a grandchild makes a
session of its own; `orphans` finds those). Its stdout and stderr are read by
pipe protocols on the event loop, line by line, and its exit is seen through
a pidfd registered with the loop: no thread and no polling per child.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger("overture.runner")

LineSink = Callable[[str, str], None]
"""Receives (stream, line) for every line the child prints."""

_PR_SET_CHILD_SUBREAPER = 36

MARKER = "OVERTURE_SERVICE"
"""Set in each child's environment; inherited, it names the owner of orphans."""


def become_subreaper() -> None:
    """Make orphaned descendants (double-forked daemons) our children.

    Without this a grandchild that leaves the service's session re-parents to
    init and outlives the service; with it, `kill_orphans` can find it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning(
            "cannot become a child subreaper: %s", os.strerror(ctypes.get_errno())
        )


def _our_children() -> list[int]:
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            pids.extend(int(p) for p in (task / "children").read_text().split())
    return pids


_LEADERS: set[int] = set()
"""Pids of the services' own processes: never orphans, so never read."""


def kill_orphans(service: str, spare: int | None = None) -> list[int]:
    """SIGKILL and reap our children that carry `service`'s marker.

    These are descendants that left the service's process group, so a signal
    to the group missed them. Returns their pids.
    """
    marker = f"{MARKER}={service}\0".encode()
    killed = []
    for pid in _our_children():
        if pid == spare or pid in _LEADERS:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if (b"\0" + environ).find(b"\0" + marker) == -1:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        killed.append(pid)
    if killed:
        log.warning(
            "service=%s left processes outside its group; killed %s", service, killed
        )
    return killed


@dataclass(frozen=True, slots=True)
class StopOutcome:
    returncode: int | None
    signalled: bool
    """False when the stop command alone ended the process."""
    forced: bool
    """True when the group had to be killed after the grace period."""
    elapsed: float


class _LineReader:
    """Reads one pipe on the loop and splits it into lines.

    A plain reader callback, not a transport: it is registered at once, so
    the child's output is watched from the moment it is spawned. A last line
    without a newline is kept too.
    """

    def __init__(
        self, pipe: IO[bytes], stream: str, sink: LineSink, closed: asyncio.Future[None]
    ) -> None:
        self._pipe = pipe
        self._stream = stream
        self._sink = sink
        self._closed = closed
        self._pending = b""
        os.set_blocking(pipe.fileno(), False)
        closed.get_loop().add_reader(pipe.fileno(), self._read)

    def _read(self) -> None:
        try:
            data = os.read(self._pipe.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            self._sink(self._stream, line.decode(errors="replace").rstrip("\r"))

    def close(self) -> None:
        """Stop reading (at end of file, or when the exit is reported)."""
        if self._pipe.closed:
            return
        self._closed.get_loop().remove_reader(self._pipe.fileno())
        self._pipe.close()
        if self._pending:
            self._sink(self._stream, self._pending.decode(errors="replace"))
            self._pending = b""
        if not self._closed.done():
            self._closed.set_result(None)


class ProcessRunner:
    """Starts, watches and stops one service's process group."""

    def __init__(
        self,
        service: str,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: Path | None = None,
        user: str | None = None,
        on_line: LineSink,
    ) -> None:
        self.service = service
        self.argv = argv
        self.env = {**env, MARKER: service}
        self.cwd = cwd
        self.user = user
        self.on_line = on_line
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._exited: asyncio.Future[int] | None = None
        self._output_closed: list[asyncio.Future[None]] = []
        self._readers: list[_LineReader] = []
        self._finishing: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def exited(self) -> asyncio.Future[int]:
        """Resolves with the return code (negative: killed by that signal)."""
        assert self._exited is not None, "not started"
        return self._exited

    def start(self) -> int:
        """Spawn the child and watch it; raise OSError (with the reason) if it
        cannot run.

        Synchronous: once it returns, the output and the exit are watched, so
        a stop that comes before the loop turns again still finds the child.
        """
        loop = asyncio.get_running_loop()
        # As another user: its own group and no supplementary groups, not root's.
        group = pwd.getpwnam(self.user).pw_gid if self.user else None
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
            env=self.env,
            user=self.user,
            group=group,
            extra_groups=[] if self.user else None,
            start_new_session=True,
            bufsize=0,  # the loop reads the pipes; no buffered file objects
        )
        _LEADERS.add(self.process.pid)
        self.started_at = time.monotonic()
        self._exited = loop.create_future()

        # The exit is reported once both pipes reached end of file (or after
        # a short bound), so a crash's last lines come before its exit.
        for stream, pipe in (
            ("stdout", self.process.stdout),
            ("stderr", self.process.stderr),
        ):
            assert pipe is not None
            closed: asyncio.Future[None] = loop.create_future()
            self._output_closed.append(closed)
            self._readers.append(_LineReader(pipe, stream, self.on_line, closed))
        pidfd = os.pidfd_open(self.process.pid)
        loop.add_reader(pidfd, self._on_exit, pidfd)
        return self.process.pid

    def _on_exit(self, pidfd: int) -> None:
        assert self.process is not None
        loop = asyncio.get_running_loop()
        loop.remove_reader(pidfd)
        os.close(pidfd)
        # What it left behind, in its group or out of it, goes with it (the
        # group first, while the zombie still holds its pid); then its last
        # lines are read before anyone hears of the exit.
        self.signal_group(signal.SIGKILL)
        returncode = self.process.wait()
        _LEADERS.discard(self.process.pid)
        self.kill()
        self._finishing = loop.create_task(self._report_exit(returncode))

    async def _report_exit(self, returncode: int) -> None:
        assert self._exited is not None
        await self.output_closed(0.5)
        for reader in self._readers:
            reader.close()
        if not self._exited.done():
            self._exited.set_result(returncode)

    async def output_closed(self, timeout: float) -> None:
        """Wait (bounded) until both pipes reached end of file."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*self._output_closed)

    def _has_exited(self) -> bool:
        """Whether the child is a zombie (or reaped), without reaping it."""
        assert self.process is not None
        if self.process.returncode is not None:
            return True
        try:
            waited = os.waitid(
                os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT
            )
        except ChildProcessError:
            return True
        return waited is not None

    def signal_group(self, sig: signal.Signals) -> bool:
        """Send `sig` to the whole process group; False if it is already gone."""
        if self.process is None:
            return False
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            return False
        return True

    async def stop(
        self, sig: signal.Signals, timeout: float, command: list[str] | None = None
    ) -> StopOutcome:
        """Stop command, then `sig` to the group, then SIGKILL after `timeout`."""
        began = time.monotonic()
        if self.process is None or self._exited is None:
            return StopOutcome(None, False, False, 0.0)

        # Phase 1: the service's own stop command, within the same grace period.
        if command and not self._exited.done():
            await self._run_stop_command(command, timeout)

        # Phase 2: the configured signal to the group, and the grace period.
        # Not if it has exited already (the stop command did its job) and the
        # exit is still on its way to us.
        signalled = (
            not self._exited.done()
            and not self._has_exited()
            and self.signal_group(sig)
        )
        remaining = max(0.0, timeout - (time.monotonic() - began))
        forced = False
        try:
            async with asyncio.timeout(remaining):
                returncode = await asyncio.shield(self._exited)
        except TimeoutError:
            # Phase 3: it ignored the signal; the whole group goes.
            log.warning(
                "service=%s ignored %s for %.1fs; sending SIGKILL to its group",
                self.service,
                sig.name,
                timeout,
            )
            forced = True
            self.signal_group(signal.SIGKILL)
            returncode = await self._exited

        # Whatever else is left (children that outlived it, in or out of its group).
        self.kill()
        return StopOutcome(returncode, signalled, forced, time.monotonic() - began)

    async def _run_stop_command(self, command: list[str], timeout: float) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                cwd=self.cwd,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            log.warning("service=%s stop command failed: %s", self.service, exc)
            return
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    def kill(self) -> None:
        """SIGKILL the group and any orphan of the service, at once."""
        self.signal_group(signal.SIGKILL)
        if self.process is not None and self.process.returncode is not None:
            kill_orphans(self.service)
