"""redis probe: PING over one kept connection; LOADING is not ready.

While Redis loads its data set (AOF or RDB) at start it accepts connections
but answers every command with `-LOADING`; the probe reports that as not
ready, with the server's words as detail.

The probe speaks the few lines of RESP it needs over asyncio streams: AUTH
(when the URL has a password) and PING. redis-py would cost about 0.3 s of
import on the orchestrator's event loop for that (measured with redis-py 8
on the reference machine), and retries hidden in its client would blur the
server's first answer. URL forms: `redis://[[user]:password@]host[:port]`,
`rediss://` (TLS, certificate verified) and `unix:///path/to/socket`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from urllib.parse import unquote, urlsplit

from overture.config.model import Probe
from overture.probes.base import (
    Checker,
    ProbeContext,
    ProbeResult,
    close_writer,
    describe_failure,
)

DEFAULT_PORT = 6379
_PING = b"*1\r\n$4\r\nPING\r\n"


class RedisChecker(Checker):
    def __init__(self, probe: Probe, context: ProbeContext) -> None:
        super().__init__(probe, context)
        assert probe.redis is not None
        url = urlsplit(probe.redis)
        if url.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"redis probe {probe.redis!r}: use a redis://, rediss:// or unix:// URL"
            )
        self.url = url
        self._auth = b""
        if url.password is not None:
            words = [b"AUTH", unquote(url.password).encode()]
            if url.username:
                words.insert(1, unquote(url.username).encode())
            self._auth = _command(words)
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def check(self) -> ProbeResult:
        began = time.monotonic()
        try:
            async with asyncio.timeout(self.probe.timeout):
                reply = await self._ping()
        except (OSError, EOFError, TimeoutError, ValueError) as exc:
            await self.close()
            return ProbeResult(False, describe_failure(exc), time.monotonic() - began)

        latency = time.monotonic() - began
        if reply == "+PONG":
            return ProbeResult(True, "PONG", latency)
        # An error reply (LOADING, NOAUTH, ...): the connection itself is fine.
        return ProbeResult(False, reply.removeprefix("-"), latency)

    async def close(self) -> None:
        streams, self._streams = self._streams, None
        if streams is None:
            return
        await close_writer(streams[1])

    async def _ping(self) -> str:
        """The first error reply of this exchange, else PING's reply."""
        requests, answers = _PING, 1
        if self._streams is None:
            self._streams = await self._connect()
            if self._auth:
                requests, answers = self._auth + _PING, 2
        reader, writer = self._streams
        writer.write(requests)
        await writer.drain()

        replies = [await _read_reply(reader) for _ in range(answers)]
        return next((r for r in replies if r.startswith("-")), replies[-1])

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        url = self.url
        if url.scheme == "unix":
            return await asyncio.open_unix_connection(url.path)
        tls = ssl.create_default_context() if url.scheme == "rediss" else None
        host = url.hostname or "127.0.0.1"
        return await asyncio.open_connection(host, url.port or DEFAULT_PORT, ssl=tls)


def _command(words: list[bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        parts.append(b"$%d\r\n%s\r\n" % (len(word), word))
    return b"".join(parts)


async def _read_reply(reader: asyncio.StreamReader) -> str:
    line = await reader.readline()
    if not line.endswith(b"\r\n"):
        raise EOFError
    if line[:1] not in (b"+", b"-"):
        raise ValueError(f"unexpected answer to PING/AUTH: {line[:60]!r}")
    return line[:-2].decode(errors="replace")


def create(probe: Probe, context: ProbeContext) -> Checker:
    return RedisChecker(probe, context)
