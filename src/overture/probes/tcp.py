"""tcp probe: passes when a connection to host:port is accepted."""

from __future__ import annotations

import asyncio
import socket
import time

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


def _describe(exc: BaseException, where: str) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} in time"
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"{where}: {reason}"


def create(probe: Probe, context: ProbeContext) -> Checker:
    return TcpChecker(probe, context)
