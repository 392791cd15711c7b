"""The demo agent: stores each event from Kafka in PostgreSQL, counts it in Redis.

Each agent is one member of the consumer group `agents` on the topic
`events`. For every event it runs, in this order:

1. `INSERT ... ON CONFLICT (id) DO NOTHING` into the `events` table (its own
   transaction, committed when the statement returns);
2. `INCR events:stored` in Redis, only when the row is new;
3. the Kafka offset commit, after the batch's rows are committed.

A crash between 1 and 3 redelivers the event; the conflict clause makes the
second insert a no-op and the counter is not bumped twice, so each event is
stored exactly once. (A crash between 1 and 2 leaves the counter one short:
it is a statistic, the table is the record.)

Stopping without loss. The demo broker keeps its log in memory only, so an
event still in the topic when the broker stops is gone, although the gateway
acknowledged it. Overture stops the stack in reverse dependency order: the
gateway first (no new events), then the agents, then the broker. On SIGTERM
(or SIGINT) an agent:

- finishes the batch in hand and commits its offsets;
- drains: keeps consuming until the group's committed offsets reach, on
  every partition, the end offsets the topic had when the stop came (so
  every event acknowledged before the stop). It watches the whole group's
  lag, not only its own partitions: agents stopping together hand
  partitions over as each leaves the group, and the last one takes what is
  left;
- gives up after AGENT_DRAIN_TIMEOUT seconds (default 10, under the 15 s
  stop timeout of the demo config), logging the lag it leaves behind;
- leaves the group, closes its connections and exits 0.

Environment: KAFKA_BOOTSTRAP, DATABASE_URL, REDIS_URL, AGENT_NAME and
AGENT_DRAIN_TIMEOUT. It logs "agent ready" once it holds its first
partition assignment, for a log probe to wait on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

TOPIC = "events"
GROUP = "agents"
COUNTER = "events:stored"
POLL_MS = 200
SCHEMA_LOCK = 0x0E7E_0001  # the advisory lock key; any number all agents share

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS events (
    id text PRIMARY KEY,
    payload jsonb NOT NULL,
    agent text NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
)
"""
INSERT = """
INSERT INTO events (id, payload, agent) VALUES ($1, $2::jsonb, $3)
ON CONFLICT (id) DO NOTHING
"""

log = logging.getLogger("agent")


@dataclass(frozen=True, slots=True)
class Settings:
    name: str
    bootstrap: str
    database_url: str
    redis_url: str
    drain_timeout: float

    @classmethod
    def from_environment(cls) -> Settings:
        env = os.environ
        return cls(
            name=env.get("AGENT_NAME", f"agent-{os.getpid()}"),
            bootstrap=env.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            database_url=env.get("DATABASE_URL", "postgresql://postgres@127.0.0.1/"),
            redis_url=env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            drain_timeout=float(env.get("AGENT_DRAIN_TIMEOUT", "10")),
        )


class _Announce(ConsumerRebalanceListener):  # type: ignore[misc] # aiokafka is untyped
    """Logs "agent ready" at the first assignment, then each reassignment."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.assigned = False

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        held = ",".join(str(tp.partition) for tp in sorted(assigned)) or "none"
        if not self.assigned:
            self.assigned = True
            log.info("agent ready name=%s partitions=%s", self.name, held)
        else:
            log.info("agent reassigned name=%s partitions=%s", self.name, held)


class Agent:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            group_id=GROUP,
            client_id=settings.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # A member that died is noticed within 2 s, so its partitions
            # move to a live agent quickly (also while the others drain).
            session_timeout_ms=2000,
            heartbeat_interval_ms=500,
        )
        self.db: Any = None  # asyncpg.Connection
        self.redis = redis.from_url(settings.redis_url)
        self.stored = 0

    async def start(self) -> None:
        self.db = await asyncpg.connect(self.settings.database_url)
        # Agents starting together would race in CREATE TABLE IF NOT EXISTS
        # (a unique violation in the catalog): one at a time.
        async with self.db.transaction():
            await self.db.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
            await self.db.execute(CREATE_TABLE)
        await self.redis.ping()
        self.consumer.subscribe([TOPIC], listener=_Announce(self.settings.name))
        await self.consumer.start()

    async def close(self) -> None:
        await self.consumer.stop()  # leaves the group: a prompt rebalance
        await self.redis.aclose()
        await self.db.close()

    async def poll(self) -> None:
        """Fetch one batch, store it, then commit its offsets."""
        batch = await self.consumer.getmany(timeout_ms=POLL_MS, max_records=500)
        for partition, records in batch.items():
            for record in records:
                await self._store(record)
            await self._commit(partition, records[-1].offset + 1)

    async def _store(self, record: Any) -> None:
        try:
            event = json.loads(record.value)
            event_id = str(event["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("skipped malformed event offset=%d", record.offset)
            return
        status = await self.db.execute(
            INSERT, event_id, json.dumps(event), self.settings.name
        )
        if status == "INSERT 0 1":
            self.stored += 1
            await self.redis.incr(COUNTER)

    async def _commit(self, partition: TopicPartition, offset: int) -> None:
        try:
            await self.consumer.commit({partition: offset})
        except (CommitFailedError, IllegalStateError) as exc:
            # The partition moved to another agent in a rebalance; it will
            # redeliver these events and the inserts will be no-ops.
            log.warning("commit lost partition=%d: %s", partition.partition, exc)

    async def end_offsets(self) -> dict[TopicPartition, int]:
        """The end of every partition of the topic, as of now."""
        numbers = self.consumer.partitions_for_topic(TOPIC) or set()
        partitions = [TopicPartition(TOPIC, n) for n in sorted(numbers)]
        if not partitions:
            return {}
        ends: dict[TopicPartition, int] = await self.consumer.end_offsets(partitions)
        return ends

    async def group_lag(
        self, admin: Any, targets: dict[TopicPartition, int]
    ) -> dict[int, int]:
        """Events before `targets` the group has not committed, per partition."""
        if not targets:
            return {}
        # Partitions named explicitly: the broker need not support "all".
        committed = await admin.list_consumer_group_offsets(
            GROUP, partitions=list(targets)
        )
        lag = {}
        for tp, end in targets.items():
            done = committed.get(tp)
            behind = end - (done.offset if done and done.offset >= 0 else 0)
            if behind > 0:
                lag[tp.partition] = behind
        return lag

    async def drain(self) -> None:
        """Consume until the group has committed every event published before
        the stop request, or time out."""
        began = time.monotonic()
        deadline = began + self.settings.drain_timeout
        stored_before = self.stored
        # The ends as of now: what producers had acknowledged when the stop
        # came. Events published later (the gateway still up, say) are left
        # to the agents that stay, so a lone agent's stop ends promptly.
        targets = await self.end_offsets()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap)
        await admin.start()
        try:
            while (lag := await self.group_lag(admin, targets)) and (
                time.monotonic() < deadline
            ):
                await self.poll()
        finally:
            await admin.close()

        took = time.monotonic() - began
        drained = self.stored - stored_before
        if lag:
            left = " ".join(f"{TOPIC}[{p}]={n}" for p, n in sorted(lag.items()))
            log.warning(
                "drain timed out name=%s after=%.1fs stored=%d lag_left=%s",
                self.settings.name,
                took,
                drained,
                left,
            )
        else:
            log.info(
                "drained name=%s after=%.2fs stored=%d",
                self.settings.name,
                took,
                drained,
            )


async def run(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    agent = Agent(settings)
    await agent.start()
    try:
        # Signals only set the event: the batch in hand always completes.
        while not stop.is_set():
            await agent.poll()
        log.info("stopping name=%s stored=%d; draining", settings.name, agent.stored)
        try:
            await agent.drain()
        except KafkaError as exc:
            log.error("drain failed name=%s: %s", settings.name, exc)
    finally:
        await agent.close()
    log.info("stopped name=%s stored=%d", settings.name, agent.stored)
    return 0


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # group chatter
    sys.exit(asyncio.run(run(Settings.from_environment())))


if __name__ == "__main__":
    main()
