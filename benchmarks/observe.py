"""What the benchmarks see from outside a tool: ports, processes, memory, CPU.

Nothing here asks the tool under test anything. Ports are watched through the
kernel's socket table (and confirmed with a real connection), exits through
pidfds, memory through /proc (USS: pages no other process shares), CPU through
each process's user and system time.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

MARKER = "overture-bench-child"
"""The last argument of every workload child: how the benchmarks find them."""

# One line, no whitespace before ';': supervisord's config parser would take
# " ;" for the start of a comment.
CHILD_SCRIPT = (
    "import socket,sys;s=socket.socket();"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
    "s.bind(('127.0.0.1',int(sys.argv[1])));s.listen(128);"
    "any(s.accept()[0].close() for _ in iter(int,1))"
)

# The interpreter itself, not a venv or a pyenv shim: every tool runs the same
# binary and none of them pays for a wrapper script.
CHILD_PYTHON = os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def child_argv(port: int) -> list[str]:
    """The workload: a Python TCP listener on 127.0.0.1:`port`."""
    return [CHILD_PYTHON, "-c", CHILD_SCRIPT, str(port), MARKER]


# Statistics


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    count: int


def summarize(values: Iterable[float]) -> Summary | None:
    data = sorted(values)
    if not data:
        return None
    return Summary(statistics.median(data), data[0], data[-1], len(data))


def percentile(values: Iterable[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 200 values is the second largest)."""
    data = sorted(values)
    rank = max(1, int(-(-fraction * len(data) // 1)))
    return data[rank - 1]


# Ports

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_DUMP_REQUEST = 0x301
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10


def _listening_netlink() -> set[int]:
    """Local ports of IPv4 TCP sockets in LISTEN, from the kernel (sock_diag)."""
    request = struct.pack(
        "=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN
    ) + bytes(48)
    header = struct.pack(
        "=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_DUMP_REQUEST, 1, 0
    )
    ports: set[int] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.send(header + request)
        while True:
            data, offset = nl.recv(1 << 16), 0
            while offset < len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == _NLMSG_DONE:
                    return ports
                if kind == _NLMSG_ERROR:
                    raise OSError("sock_diag refused the request")
                ports.add(struct.unpack_from("!H", data, offset + 20)[0])
                offset += (length + 3) & ~3


def _listening_procfs() -> set[int]:
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A":
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def listening_ports() -> set[int]:
    try:
        return _listening_netlink()
    except OSError:
        return _listening_procfs()


def accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class PortWatch(threading.Thread):
    """Records when each port first accepts a connection, independently of the tool.

    Every `interval` it lists the listening sockets (one cheap kernel query,
    not a connection per pending port) and confirms each new one by connecting.
    """

    def __init__(self, ports: Iterable[int], interval: float = 0.01) -> None:
        super().__init__(daemon=True, name="port-watch")
        self.pending = set(ports)
        self.accepted: dict[int, float] = {}
        self.interval = interval
        self.done = threading.Event()
        self._stop_asked = threading.Event()

    def run(self) -> None:
        while self.pending and not self._stop_asked.is_set():
            for port in listening_ports() & self.pending:
                if accepts(port):
                    self.accepted[port] = time.monotonic()
                    self.pending.discard(port)
            if self.pending:
                time.sleep(self.interval)
        self.done.set()

    def stop(self) -> None:
        self._stop_asked.set()

    def all_at(self) -> float | None:
        """When the last port accepted, once they all have."""
        return max(self.accepted.values()) if not self.pending else None


def wait_ports_closed(ports: Iterable[int], timeout: float = 10.0) -> bool:
    wanted = set(ports)
    deadline = time.monotonic() + timeout
    while listening_ports() & wanted:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# Processes


def is_workload(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        cmdline = process.cmdline()
        return bool(cmdline) and cmdline[-1] == MARKER
    return False


def process_tree(roots: Iterable[int]) -> list[psutil.Process]:
    """The roots and all their descendants that still exist."""
    found: dict[int, psutil.Process] = {}
    for pid in roots:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            found[pid] = root
            found.update((p.pid, p) for p in root.children(recursive=True))
    return list(found.values())


def split_tree(
    roots: Iterable[int],
) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(the supervisor's own processes, the workload children) under `roots`."""
    tree = process_tree(roots)
    children = [p for p in tree if is_workload(p)]
    own = [p for p in tree if p not in children]
    return own, children


def memory_mb(processes: Iterable[psutil.Process]) -> tuple[float, float]:
    """Summed (USS, RSS) in MB of `processes`."""
    uss = rss = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            info = process.memory_full_info()
            uss += info.uss
            rss += info.rss
    return uss / 1e6, rss / 1e6


def cpu_seconds(processes: Iterable[psutil.Process]) -> dict[int, float]:
    """CPU seconds used so far by each process (with its reaped children)."""
    used = {}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            t = process.cpu_times()
            used[process.pid] = t.user + t.system + t.children_user + t.children_system
    return used


def alive(pid: int) -> bool:
    """Running (a zombie has exited: it only waits to be reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(pids: Iterable[int], timeout: float) -> float | None:
    """Block until every pid has exited; when the last did, or None on timeout.

    A pidfd becomes readable the moment its process exits, whoever its parent.
    """
    fds: dict[int, int] = {}
    poller = select.poll()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fd = os.pidfd_open(pid)
            fds[fd] = pid
            poller.register(fd, select.POLLIN)
    last = time.monotonic()
    deadline = last + timeout
    try:
        while fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            for fd, _ in poller.poll(remaining * 1000):
                last = time.monotonic()
                poller.unregister(fd)
                os.close(fd)
                del fds[fd]
    finally:
        for fd in fds:
            os.close(fd)
    return last
