"""http probe: passes when a GET answers 2xx/3xx (or one of `status`).

A minimal HTTP/1.1 client over asyncio streams: a probe asks one question
and reads one status line, so a full client library (and its import time and
connection pool) would be weight without benefit.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from overture.config.model import Probe
from overture.probes.base import Checker, ProbeContext, ProbeResult


class HttpChecker(Checker):
    def __init__(self, probe: Probe, context: ProbeContext) -> None:
        super().__init__(probe, context)
        assert probe.http is not None
        url = urlsplit(probe.http)
        if url.scheme != "http":
            raise ValueError(f"http probe {probe.http!r}: only http:// URLs")
        self.url = probe.http
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")

    def _passes(self, status: int) -> bool:
        if self.probe.status is not None:
            return status in self.probe.status
        return 200 <= status < 400

    async def check(self) -> ProbeResult:
        began = time.monotonic()
        try:
            async with asyncio.timeout(self.probe.timeout):
                status = await self._get()
        except (OSError, TimeoutError, ValueError) as exc:
            detail = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
            return ProbeResult(
                False, f"GET {self.url}: {detail}", time.monotonic() - began
            )
        ok = self._passes(status)
        return ProbeResult(ok, f"GET {self.url}: {status}", time.monotonic() - began)

    async def _get(self) -> int:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            request = (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "User-Agent: overture-probe\r\nConnection: close\r\n\r\n"
            )
            writer.write(request.encode("ascii"))
            line = await reader.readline()
        finally:
            writer.close()
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"not an HTTP answer: {line[:60]!r}")
        return int(parts[1])


def create(probe: Probe, context: ProbeContext) -> Checker:
    return HttpChecker(probe, context)
