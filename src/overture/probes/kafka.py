"""kafka probe: a Metadata request over the Kafka protocol, one connection.

The probe speaks the few bytes of the protocol it needs (a Metadata v1
request and its answer) over asyncio streams instead of starting a client
library per check: a check is one round trip on a kept connection, well
under a millisecond on loopback, and the connection is opened again after
any failure. Every broker since Kafka 0.10 answers Metadata v1.

It asks for all topics (a null list) rather than for `topics` by name: on a
broker that creates topics on first mention, naming them would create them.
A topic counts as present when the broker reports it without error and
every one of its partitions has a leader.

Only plaintext listeners are supported: no TLS, no SASL.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass

from overture.config.model import Probe
from overture.probes.base import (
    Checker,
    ProbeContext,
    ProbeResult,
    close_writer,
    describe_failure,
)
from overture.probes.tcp import split_address

_API_METADATA = 3
_VERSION = 1
_CLIENT_ID = b"overture-probe"
_MAX_RESPONSE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Metadata:
    brokers: int
    topics: dict[str, bool]
    """Each topic the broker knows: True when it is usable (see the module)."""


class KafkaChecker(Checker):
    def __init__(self, probe: Probe, context: ProbeContext) -> None:
        super().__init__(probe, context)
        assert probe.kafka is not None
        self.addresses = [split_address(a.strip()) for a in probe.kafka.split(",")]
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._correlation = 0

    async def check(self) -> ProbeResult:
        began = time.monotonic()
        try:
            async with asyncio.timeout(self.probe.timeout):
                metadata = await self._metadata()
        except (OSError, EOFError, TimeoutError, ValueError) as exc:
            await self.close()
            return ProbeResult(False, describe_failure(exc), time.monotonic() - began)

        latency = time.monotonic() - began
        missing = [t for t in self.probe.topics if not metadata.topics.get(t)]
        if missing:
            return ProbeResult(False, f"topics missing: {', '.join(missing)}", latency)
        detail = (
            f"metadata: {metadata.brokers} broker(s), {len(metadata.topics)} topic(s)"
        )
        return ProbeResult(True, detail, latency)

    async def close(self) -> None:
        streams, self._streams = self._streams, None
        if streams is None:
            return
        await close_writer(streams[1])

    async def _metadata(self) -> Metadata:
        reader, writer = self._streams or await self._connect()
        self._correlation = (self._correlation + 1) % 2**31
        writer.write(_metadata_request(self._correlation))
        await writer.drain()

        (size,) = struct.unpack(">i", await reader.readexactly(4))
        if not 4 <= size <= _MAX_RESPONSE:
            raise ValueError(f"not a Kafka answer (frame of {size} bytes)")
        response = _Reader(await reader.readexactly(size))
        if response.int32() != self._correlation:
            raise ValueError("answer to another request (correlation id differs)")
        return _parse_metadata(response)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        error: OSError | None = None
        for host, port in self.addresses:
            try:
                self._streams = await asyncio.open_connection(host, port)
            except OSError as exc:
                error = exc
                continue
            return self._streams
        assert error is not None
        raise error


def _metadata_request(correlation: int) -> bytes:
    header = struct.pack(">hhih", _API_METADATA, _VERSION, correlation, len(_CLIENT_ID))
    body = struct.pack(">i", -1)  # null topic array: every topic
    message = header + _CLIENT_ID + body
    return struct.pack(">i", len(message)) + message


def _parse_metadata(response: _Reader) -> Metadata:
    brokers = response.int32()
    for _ in range(brokers):
        response.int32()  # node id
        response.string()  # host
        response.int32()  # port
        response.string()  # rack (nullable)
    response.int32()  # controller id

    topics: dict[str, bool] = {}
    for _ in range(response.int32()):
        error = response.int16()
        name = response.string() or ""
        response.take(1)  # is_internal
        partitions = response.int32()
        led = 0
        for _ in range(partitions):
            response.int16()  # partition error
            response.int32()  # partition index
            if response.int32() >= 0:  # leader id, -1 when there is none
                led += 1
            response.take(4 * response.int32())  # replicas
            response.take(4 * response.int32())  # in-sync replicas
        topics[name] = error == 0 and partitions > 0 and led == partitions
    return Metadata(brokers, topics)


class _Reader:
    """Big-endian fields off a response, with bounds checked."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.offset + size > len(self.data):
            raise ValueError("truncated or malformed Metadata answer")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def int16(self) -> int:
        value: int = struct.unpack(">h", self.take(2))[0]
        return value

    def int32(self) -> int:
        value: int = struct.unpack(">i", self.take(4))[0]
        return value

    def string(self) -> str | None:
        size = self.int16()
        return None if size < 0 else self.take(size).decode(errors="replace")


def create(probe: Probe, context: ProbeContext) -> Checker:
    return KafkaChecker(probe, context)
