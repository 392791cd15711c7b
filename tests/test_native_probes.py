"""The postgres, redis and kafka probes: their not-ready answers, their
timeouts, and the one connection each keeps between checks.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis

from overture.config.model import Probe
from overture.presets.binaries import bundled_binary
from overture.presets.postgres import PostgresPreset
from overture.presets.redis import RedisPreset
from overture.probes import ProbeContext, build_checker
from overture.probes.base import Checker
from servers import (
    Servers,
    free_port,
    make_preset,
    run,
    start_ready,
    wait_ready,
)

KINDS = ("postgres", "redis", "kafka")


def probe_for(kind: str, port: int, timeout: float = 1.0) -> Probe:
    target = {
        "postgres": f"postgresql://postgres@127.0.0.1:{port}/postgres",
        "redis": f"redis://127.0.0.1:{port}/0",
        "kafka": f"127.0.0.1:{port}",
    }[kind]
    return Probe.model_validate({kind: target, "timeout": timeout})


def checker_for(kind: str, port: int, timeout: float = 1.0) -> Checker:
    return build_checker(probe_for(kind, port, timeout), ProbeContext(kind))


@asynccontextmanager
async def fake_server(reply: bytes | None) -> AsyncIterator[int]:
    """A loopback server that reads, then sends `reply` and hangs up (None:
    says nothing and keeps the connection open). Yields its port."""
    handlers: set[asyncio.Task[None]] = set()
    writers: set[asyncio.StreamWriter] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type] # in a task
        writers.add(writer)
        try:
            await reader.read(1024)
            if reply is None:
                await reader.read()  # silent until the client leaves
            else:
                writer.write(reply)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        # Python 3.11's wait_closed does not wait for the handlers: end them.
        server.close()
        for writer in writers:
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_listening_is_not_ready(kind: str) -> None:
    """With no server on the port the answer is not ready: connection refused."""

    async def scenario() -> None:
        checker = checker_for(kind, free_port())
        answer = await checker.check()
        await checker.close()
        assert not answer.ok
        assert answer.detail == "Connection refused"

    run(scenario())


@pytest.mark.parametrize("kind", KINDS)
def test_silent_server_answers_within_timeout(kind: str) -> None:
    """A server that never answers yields "no answer in time" after `timeout`."""

    async def scenario() -> None:
        async with fake_server(None) as port:
            checker = checker_for(kind, port, timeout=0.2)
            began = time.monotonic()
            answer = await checker.check()
            took = time.monotonic() - began
            await checker.close()
        assert not answer.ok
        assert answer.detail == "no answer in time"
        assert 0.2 <= took < 1.0

    run(scenario())


@pytest.mark.parametrize("kind", KINDS)
def test_garbage_answer_is_not_ready(kind: str) -> None:
    """A server speaking another protocol gets a not-ready answer, no raise."""

    async def scenario() -> None:
        async with fake_server(b"HTTP/1.1 400 Bad Request\r\n\r\n") as port:
            checker = checker_for(kind, port)
            answer = await checker.check()
            await checker.close()
        assert not answer.ok
        assert answer.detail

    run(scenario())


def test_postgres_answers_not_ready_until_started(servers: Servers, root: Path) -> None:
    """Checks from launch on are not ready, each with a reason, until ready."""
    preset = make_preset("postgres", root)

    async def scenario() -> None:
        await preset.prepare()
        launch = preset.launch()
        checker = build_checker(launch.ready, ProbeContext("postgres"))
        # One check before the process exists: the first answer is not ready
        # whatever the machine's speed.
        answers = [await checker.check()]
        server = servers.start(launch, root / "pg.log")
        answers += await wait_ready(checker, server)
        await checker.close()
        assert answers[0].detail == "Connection refused"
        assert all(a.detail for a in answers)
        reasons = {a.detail for a in answers if not a.ok}
        assert reasons <= {"Connection refused", "the database system is starting up"}
        assert answers[-1].ok
        assert servers.stop(server) == 0

    run(scenario())


def test_postgres_not_accepting_connections(servers: Servers, root: Path) -> None:
    """A server up but refusing sessions (SQLSTATE 57P03) is not ready, saying why.

    A standby with hot_standby off holds that state for as long as it runs,
    which makes the transient "starting up" answer reproducible.
    """
    preset = make_preset("postgres", root)
    assert isinstance(preset, PostgresPreset)

    async def scenario() -> None:
        server, _ = await start_ready(servers, preset, root / "pg.log")
        assert servers.stop(server) == 0
        (preset.data_dir / "standby.signal").touch()
        server = servers.start(
            preset.launch(), root / "pg.log", extra_args=["-c", "hot_standby=off"]
        )
        checker = build_checker(preset.probe(), ProbeContext("postgres"))
        on_the_way = {"Connection refused", "the database system is starting up"}
        async with asyncio.timeout(20):
            # A probe is polled: the server offers no event to wait on.
            while (answer := await checker.check()).detail in on_the_way:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        await checker.close()
        assert not answer.ok
        assert "not accepting connections" in answer.detail
        assert "Hot standby mode is disabled" in answer.detail
        assert servers.stop(server) == 0

    run(scenario())


def test_redis_loading_is_not_ready(servers: Servers, root: Path) -> None:
    """While Redis loads its data set the answer is not ready: LOADING."""
    # The bundled build, for its key-load-delay test setting (microseconds
    # per key): 12 incompressible 1 MB values take over a second to load,
    # and Redis answers clients every 2 MB meanwhile.
    preset = make_preset(
        "redis", root, appendonly=False, binary=str(bundled_binary("redis-server"))
    )
    assert isinstance(preset, RedisPreset)

    async def scenario() -> None:
        server, _ = await start_ready(servers, preset, root / "redis.log")
        client = redis.Redis(port=preset.port)
        for n in range(12):
            await client.set(f"blob{n}", os.urandom(1_000_000))
        await client.save()
        await client.aclose()
        assert servers.stop(server) == 0

        launch = preset.launch()
        server = servers.start(
            launch, root / "redis.log", extra_args=["--key-load-delay", "100000"]
        )
        checker = build_checker(launch.ready, ProbeContext("redis"))
        answers = await wait_ready(checker, server)
        await checker.close()
        loading = [a.detail for a in answers if a.detail.startswith("LOADING")]
        assert loading, [a.detail for a in answers]
        assert "loading the dataset" in loading[0]
        assert servers.stop(server) == 0

    run(scenario())


def test_probe_keeps_one_connection_and_reconnects(
    servers: Servers, root: Path
) -> None:
    """Many checks share one connection; after a server restart a new one is made."""
    pg = make_preset("postgres", root)
    rd = make_preset("redis", root)

    async def sessions(dsn: str) -> int:
        conn = await asyncpg.connect(dsn)
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend'"
        )
        await conn.close()
        return count - 1  # this session

    async def clients(url: str) -> int:
        client = redis.Redis.from_url(url)
        info = await client.info("clients")
        await client.aclose()
        return int(info["connected_clients"]) - 1

    async def scenario() -> None:
        for preset, count in ((pg, sessions), (rd, clients)):
            server, _ = await start_ready(servers, preset, root / f"{preset.name}.log")
            probe = preset.probe()
            checker = build_checker(probe, ProbeContext(preset.name))
            for _ in range(5):
                assert (await checker.check()).ok
            assert await count(probe.target) == 1

            assert servers.stop(server) == 0
            assert not (await checker.check()).ok
            server, _ = await start_ready(servers, preset, root / f"{preset.name}.log")
            await wait_ready(checker, server)
            await checker.close()
            assert servers.stop(server) == 0

    run(scenario())
