"""tcp probe: passes when a connection to host:port is accepted."""

from __future__ import annotations

import asyncio
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
        try:
            async with asyncio.timeout(self.probe.timeout):
                _, writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            detail = _describe(exc, f"{self.host}:{self.port}")
            return ProbeResult(False, detail, time.monotonic() - began)
        writer.close()
        return ProbeResult(True, "connected", time.monotonic() - began)


def _describe(exc: BaseException, where: str) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} in time"
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"{where}: {reason}"


def create(probe: Probe, context: ProbeContext) -> Checker:
    return TcpChecker(probe, context)
