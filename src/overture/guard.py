"""Keeping every process accounted for, even when Overture itself dies.

Three parts:
- the lock: one Overture per project directory (`.overture/lock`, flock; the
  kernel drops it when the holder dies, so it is never stale);
- the run record (`.overture/run.json`): who runs what (pids, process groups,
  start times), so the next run can tell a crash and clean up after it;
- the watchdog: a small process in its own session that holds a pipe from
  Overture. When Overture dies, even by SIGKILL, the pipe closes and the
  watchdog stops every process carrying this run's marker in its environment:
  SIGTERM, a short grace period, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import IO, Any

from overture.errors import OvertureError

log = logging.getLogger("overture.guard")

RUN_MARKER = "OVERTURE_RUN"
"""Set in Overture's environment, so every child and grandchild inherits it."""


class LockedError(OvertureError):
    """Another Overture already runs this project."""


def marked_processes(run_id: str) -> list[int]:
    """Pids of every process whose environment carries this run's marker."""
    needle = f"\0{RUN_MARKER}={run_id}\0".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if not _alive(int(entry.name)):
            continue
        with contextlib.suppress(OSError):
            environ = b"\0" + Path(entry.path, "environ").read_bytes()
            if needle in environ:
                found.append(int(entry.name))
    return found


def terminate(pids: list[int], grace: float) -> list[int]:
    """SIGTERM, wait up to `grace` seconds, SIGKILL what is left; reap ours."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        if alive:
            time.sleep(0.02)  # polling foreign processes: no event to wait on
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return alive


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _process_start(pid: int) -> float | None:
    """The process's start time in clock ticks since boot (identity check)."""
    try:
        return float(
            Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        )
    except (OSError, IndexError, ValueError):
        return None


WATCHDOG_NAME = "overture-watchdog"
"""The watchdog's `$0`, as `ps` shows it."""

# A shell, not a Python: it waits on one pipe for the whole run, so it should
# cost next to nothing (about 1 MB, against 12 MB for an interpreter). A
# line "done" means a clean end. End of file without it means Overture died:
# SIGTERM to every process with this run's marker, up to 3 s, then SIGKILL.
_WATCHDOG = r"""
IFS= read -r line
[ "$line" = done ] && exit 0
marked() {
    grep -lsz -- "^OVERTURE_RUN=$1\$" /proc/[0-9]*/environ | cut -d/ -f3
}
pids=$(marked "$1")
[ -n "$pids" ] || exit 0
kill -TERM $pids 2>/dev/null
for tick in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
    pids=$(marked "$1")
    [ -n "$pids" ] || exit 0
    sleep 0.2
done
kill -KILL $pids 2>/dev/null
"""


class Guard:
    """The lock, the run record and the watchdog of one Overture run."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.run_id = uuid.uuid4().hex[:12]
        self.record_path = state_dir / "run.json"
        self._lock: IO[str] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self.services: dict[str, dict[str, Any]] = {}
        self._write_pending = False

    # The lock

    def acquire(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock = (self.state_dir / "lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise LockedError(
                f"another Overture (pid {holder}) is running for this project "
                f"({self.state_dir / 'lock'}); use `overture status`, or stop it "
                "with `overture down`"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    # The record of a crashed run

    def clean_stale(self) -> list[str]:
        """If the last run did not end cleanly, stop what it left; say what."""
        try:
            record = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return []
        notes = [
            f"the last run (pid {record.get('pid')}) did not stop cleanly; "
            "cleaning up after it"
        ]
        pids = set(marked_processes(str(record.get("run_id", ""))))
        for name, entry in record.get("services", {}).items():
            pid = entry.get("pid")
            if (
                isinstance(pid, int)
                and _process_start(pid) == entry.get("start")
                and _alive(pid)
            ):
                pids.add(pid)
                notes.append(f"{name} (pid {pid}) was still running")
        if pids:
            killed = terminate(sorted(pids), grace=3.0)
            notes.append(
                f"stopped {len(pids)} leftover processes"
                + (f" ({len(killed)} needed SIGKILL)" if killed else "")
            )
        self.record_path.unlink(missing_ok=True)
        return notes

    def record(self, service: str, pid: int | None) -> None:
        """Note a service's process (None: it has none any more)."""
        if pid is None:
            self.services.pop(service, None)
        else:
            self.services[service] = {
                "pid": pid,
                "pgid": pid,
                "start": _process_start(pid),
            }
        # Starting 500 services changes 1,000 pids in a burst: write the
        # record once per loop iteration, not once per change.
        if not self._write_pending:
            self._write_pending = True
            asyncio.get_running_loop().call_soon(self._write)

    def _write(self) -> None:
        self._write_pending = False
        data = {
            "pid": os.getpid(),
            "start": _process_start(os.getpid()),
            "run_id": self.run_id,
            "services": self.services,
        }
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.record_path)

    # The watchdog

    def start_watchdog(self) -> None:
        """Spawn the watchdog, then mark our environment for the children."""
        self._watchdog = subprocess.Popen(
            ["/bin/sh", "-c", _WATCHDOG, WATCHDOG_NAME, self.run_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in Overture's terminal is not for it
            env={"PATH": "/usr/bin:/bin"},
        )
        os.environ[RUN_MARKER] = self.run_id
        self._write()

    def release(self) -> None:
        """A clean end: dismiss the watchdog, drop the record and the lock."""
        if self._watchdog is not None and self._watchdog.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._watchdog.stdin.write(b"done\n")
                self._watchdog.stdin.close()
            self._watchdog.wait()
            self._watchdog = None
        os.environ.pop(RUN_MARKER, None)
        self.record_path.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
