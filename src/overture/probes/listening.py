"""Which local TCP ports listen, asked once for every waiting tcp ready probe.

A tcp ready probe that connects every few milliseconds until its service
listens costs a socket, a connect and a turn of the loop per try, for each
service that starts, and those turns take CPU from the children starting
beside it. The kernel can say which sockets listen: one sock_diag dump
(netlink), filtered in the kernel to the ports being waited for, answers for
all the probes at once. The watch asks every millisecond while probes wait,
less often while many wait, and wakes a probe once when its port listens;
the probe then connects, as always, and decides. A listener the dump cannot
see (another network namespace, an address the probe does not connect to) is
still found by the probe's own polling, only later.

Where sock_diag is not available (another OS, a sandbox that forbids it),
`ListenWatch.watch` answers None and probes only poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import socket
import struct
import time
from collections.abc import Callable

log = logging.getLogger("overture.probes")

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x301
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10
_INET_DIAG_REQ_BYTECODE = 1
_BC_JMP, _BC_S_EQ = 1, 11

_SPORT_OFFSET = 16 + 4
"""In each answer: after the netlink header and family/state/timer/retrans."""

_FILTER_AT_MOST = 64
"""Past this many ports, reading every listener costs less than the filter.

Measured with 500 listeners on the machine: 16 ports 0.12 ms filtered, 0.66
ms all; 64 ports 0.28 / 0.50 ms; 200 ports 0.66 / 0.66 ms."""

_DUTY = 20
"""The pause between dumps is at least this many times the last dump's cost.

The cost is wall time, not CPU time: while hundreds of services start, the
loop's thread spawns them one after the other, and a dump that was preempted
held that thread up for all of its wall time."""

_PORTS_PER_TICK = 16
"""Above this many waiting ports, the dumps are spaced out in proportion."""


class ListenWatch:
    """Wakes waiting tcp probes when their port starts to listen."""

    tick = 0.001
    """Seconds between dumps while few probes wait."""

    def __init__(self) -> None:
        self._waiting: dict[int, list[Callable[[], None]]] = {}
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.available = True
        """False once the kernel could not be asked: probes then poll alone."""
        self._cost = 0.0
        """Seconds the last dump took."""
        self._requests: tuple[frozenset[int], list[bytes]] = (frozenset(), [])
        """The last dump requests built, and the ports they ask for."""

    def watch(self, port: int, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call `wake` once, soon after `port` listens; return a cancel.

        None when the kernel cannot be asked: the caller polls alone.
        """
        if not self.available or not self._open():
            return None
        self._waiting.setdefault(port, []).append(wake)
        self._schedule()

        def cancel() -> None:
            wakes = self._waiting.get(port, [])
            with contextlib.suppress(ValueError):
                wakes.remove(wake)
            if not wakes:
                self._waiting.pop(port, None)
            if not self._waiting:
                self.close()

        return cancel

    @property
    def idle(self) -> bool:
        """Nothing waits: no timer, no socket."""
        return not self._waiting and self._sock is None and self._timer is None

    def close(self) -> None:
        """Stop asking; the socket is opened again by the next `watch`."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._waiting.clear()

    def _open(self) -> bool:
        if self._sock is None:
            try:
                self._sock = socket.socket(
                    socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG
                )
                self._sock.settimeout(0.5)  # a dump is answered at once
            except (OSError, AttributeError) as exc:
                self._give_up(exc)
                return False
        return True

    def _give_up(self, exc: BaseException) -> None:
        log.debug("listening ports cannot be read (%s); tcp probes poll", exc)
        self.available = False
        self.close()

    def _schedule(self) -> None:
        if self._timer is None and self._waiting:
            # Every millisecond while a handful wait; while hundreds wait the
            # dump grows with them, so it runs less often. And never more than
            # a twentieth of the time: a host with thousands of listeners
            # makes every dump slow. In whole ticks, rounded down: the
            # selector sleeps in whole milliseconds, rounding up, so 1.05 ms
            # would last 2, and a dump of 50-99 us would wait two ticks.
            ticks = max(
                1,
                len(self._waiting) // _PORTS_PER_TICK,
                math.floor(_DUTY * self._cost / self.tick),
            )
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(ticks * self.tick, self._check)

    def _check(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        began = time.perf_counter()
        try:
            listening = self.listening(set(self._waiting))
        except OSError as exc:
            self._give_up(exc)
            return
        self._cost = time.perf_counter() - began
        for port in listening & self._waiting.keys():
            for wake in self._waiting.pop(port):
                wake()
        if self._waiting:
            self._schedule()
        else:
            self.close()  # no socket left open between bursts of starts

    def listening(self, ports: set[int]) -> set[int]:
        """Which of `ports` have a listening TCP socket (IPv4 or IPv6) here."""
        assert self._sock is not None
        found: set[int] = set()
        for request in self._requests_for(frozenset(ports)):
            self._sock.send(request)
            found |= self._read_dump()
        return found & ports

    def _requests_for(self, ports: frozenset[int]) -> list[bytes]:
        if self._requests[0] != ports:
            wanted = sorted(ports) if len(ports) <= _FILTER_AT_MOST else []
            requests = [_request(f, wanted) for f in (socket.AF_INET, socket.AF_INET6)]
            self._requests = (ports, requests)
        return self._requests[1]

    def _read_dump(self) -> set[int]:
        assert self._sock is not None
        found: set[int] = set()
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset < len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == _NLMSG_DONE:
                    return found
                if kind == _NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, offset + 16)
                    if code:
                        raise OSError(-code, errno.errorcode.get(-code, "error"))
                    return found
                found.add(struct.unpack_from(">H", data, offset + _SPORT_OFFSET)[0])
                offset += (length + 3) & ~3


def _request(family: int, ports: list[int]) -> bytes:
    """A dump request for listening TCP sockets, on `ports` if any are given."""
    body = struct.pack("=BBBBI48x", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN)
    if ports:
        code = _port_filter(ports)
        body += struct.pack("=HH", 4 + len(code), _INET_DIAG_REQ_BYTECODE) + code
    header = struct.pack(
        "=IHHII", 16 + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0
    )
    return header + body


def _port_filter(ports: list[int]) -> bytes:
    """Kernel bytecode: accept a socket whose local port is one of `ports`.

    Each test is "local port == P": on a match go on to a jump to the end
    (accept), else skip past that jump to the next test; a miss on the last
    test jumps past the end (reject). The kernel only accepts jumps that land
    where the chain of "match" jumps also lands, hence the jump after each test.
    """
    parts = []
    for i, port in enumerate(ports):
        parts.append(struct.pack("=BBHBBH", _BC_S_EQ, 8, 12, 0, 0, port))
        if i < len(ports) - 1:
            rest = 12 * (len(ports) - i - 2) + 8
            parts.append(struct.pack("=BBH", _BC_JMP, 4, rest + 4))
    return b"".join(parts)
