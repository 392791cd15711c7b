"""postgres probe: connects with the DSN and runs `SELECT 1`.

The connection is kept between checks (a PostgreSQL connection costs a
backend process and an authentication round trip) and opened again after
any failure. A server that accepts TCP but is still starting, recovering or
shutting down answers with SQLSTATE 57P03 ("the database system is starting
up"); that is a not-ready answer with the server's own words as detail.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import asyncpg

from overture.config.model import Probe
from overture.probes.base import Checker, ProbeContext, ProbeResult


class PostgresChecker(Checker):
    def __init__(self, probe: Probe, context: ProbeContext) -> None:
        super().__init__(probe, context)
        assert probe.postgres is not None
        self.dsn = probe.postgres
        self._conn: Any = None  # asyncpg.Connection; asyncpg has no types

    async def check(self) -> ProbeResult:
        began = time.monotonic()
        try:
            async with asyncio.timeout(self.probe.timeout):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self.dsn)
                await self._conn.fetchval("SELECT 1")
        except Exception as exc:  # every failure is an answer, never a raise
            self._drop()
            return ProbeResult(False, _describe(exc), time.monotonic() - began)
        return ProbeResult(True, "SELECT 1 answered", time.monotonic() - began)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # no goodbye: the connection is in doubt

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        # A polite close, bounded: a half-open connection gets terminated.
        try:
            await conn.close(timeout=1.0)
        except Exception:  # whatever broke, the socket must go
            conn.terminate()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, asyncpg.PostgresError):
        # The server's message; DETAIL says why (e.g. hot standby is off).
        message = str(exc).split("\n", 1)[0]
        detail = getattr(exc, "detail", None)
        return f"{message} ({detail})" if detail else message
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # asyncio's strerror repeats the address
    return str(exc) or type(exc).__name__


def create(probe: Probe, context: ProbeContext) -> Checker:
    return PostgresChecker(probe, context)
