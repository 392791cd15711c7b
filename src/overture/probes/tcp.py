"""tcp probe: passes when a connection to host:port is accepted."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable

from overture.config.model import Probe
from overture.probes.base import Checker, ProbeContext, ProbeResult


def split_address(
    target: str | int, default_host: str = "127.0.0.1"
) -> tuple[str, int]:
    """`"host:port"`, `":port"`, `"port"` or a port number as (host, port)."""
    if isinstance(target, int):
        return default_host, target
    host, _, port = target.rpartition(":")
    return host.strip("[]") or default_host, int(port)


class TcpChecker(Checker):
    def __init__(self, probe: Probe, context: ProbeContext) -> None:
        super().__init__(probe, context)
        assert probe.tcp is not None
        self.host, self.port = split_address(probe.tcp)
        self._unwatch: Callable[[], None] | None = None
        watch, wake = context.listening, context.wake
        if watch is not None and wake is not None and _is_local(self.host):
            self._unwatch = watch.watch(self.port, self._woken)

    @property
    def notified(self) -> bool:
        watch = self.context.listening
        return self._unwatch is not None and watch is not None and watch.available

    def _woken(self) -> None:
        # Once: if the connect still fails (the port listens on another
        # address), the scheduler's polling takes over.
        self._unwatch = None
        assert self.context.wake is not None
        self.context.wake()

    async def close(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    async def check(self) -> ProbeResult:
        began = time.monotonic()
        # A bare socket: a stream reader and writer per check would cost
        # several times the connect itself.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(self.probe.timeout):
                await asyncio.get_running_loop().sock_connect(
                    sock, (self.host, self.port)
                )
        except (OSError, TimeoutError) as exc:
            detail = _describe(exc, f"{self.host}:{self.port}")
            return ProbeResult(False, detail, time.monotonic() - began)
        finally:
            sock.close()
        return ProbeResult(True, "connected", time.monotonic() - began)


def _is_local(host: str) -> bool:
    """Whether a listener for `host` would be seen by this machine's kernel."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _describe(exc: BaseException, where: str) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} in time"
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"{where}: {reason}"


def create(probe: Probe, context: ProbeContext) -> Checker:
    return TcpChecker(probe, context)
