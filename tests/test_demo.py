"""The demo stack of the root overture.toml, run for real from the wheels.

PostgreSQL, Redis and the Tansu broker come from the Python wheels, the
gateway and the two agents from `examples/`. Each test loads a copy of the
root config in a fresh directory (so the data directories are under it) with
free ports, and drives an `Orchestrator` in process. Every wait is on a
lifecycle event, a probe or a count of answers, never on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as redis

from helpers import children_tagged, free_port, run
from overture.config.load import load_project
from overture.config.model import Project
from overture.graph import Graph
from overture.lifecycle import ServiceState, Transition
from overture.orchestrator import Orchestrator
from servers import reachable_dir

S = ServiceState
REPO = Path(__file__).resolve().parents[1]
INFRA = ("postgres", "redis", "kafka")
AGENTS = ("agent-1", "agent-2")
ALL = (*INFRA, *AGENTS, "gateway")
PORTS = ("PG_PORT", "REDIS_PORT", "KAFKA_PORT", "GATEWAY_PORT")

WORKERS = 32
"""Requests the load generator keeps in flight."""
ACKED_BEFORE_DOWN = 300
"""Acknowledged events the load reaches before the down begins."""
DOWN_TIMEOUT = 60.0
"""Bound on a down: above the worst case of the stop timeouts along the
chain (gateway 10 s, agents 15 s, postgres 30 s), under pytest's 120 s."""


@dataclass
class Demo:
    project: Project
    graph: Graph
    ports: dict[str, int]

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['GATEWAY_PORT']}"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports['PG_PORT']}/overture"


@pytest.fixture
def demo(monkeypatch: pytest.MonkeyPatch) -> Iterator[Demo]:
    """The root overture.toml, copied into a fresh directory, on free ports."""
    with children_tagged(monkeypatch), reachable_dir() as root:
        shutil.copy(REPO / "overture.toml", root / "overture.toml")
        # The services run `python -m examples...` in the project directory:
        # that python must be this venv's, and `examples` must be importable.
        venv_bin = str(Path(sys.executable).parent)
        monkeypatch.setenv("PATH", os.pathsep.join([venv_bin, os.environ["PATH"]]))
        paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
        ports = {name: free_port() for name in PORTS}
        environ = {**os.environ, **{k: str(v) for k, v in ports.items()}}
        project = load_project(None, root, environ)
        yield Demo(project, Graph.from_project(project), ports)


@contextlib.asynccontextmanager
async def orchestrating(demo: Demo) -> AsyncIterator[Orchestrator]:
    """An orchestrator of the demo; whatever still runs at the end is stopped."""
    orchestrator = Orchestrator(demo.project, demo.graph)
    try:
        yield orchestrator
    finally:
        try:
            async with asyncio.timeout(DOWN_TIMEOUT):
                await orchestrator.down(reason="test over")
        except TimeoutError:
            orchestrator.kill_all()
            raise
        finally:
            orchestrator.close()


async def up(orchestrator: Orchestrator, names: tuple[str, ...] | list[str]) -> None:
    """`up`, failing with the failed services' reasons and last lines."""
    failed = await orchestrator.up(names)
    report = []
    for name in failed:
        runtime = orchestrator.runtimes[name]
        last = runtime.lifecycle.last
        lines = "\n".join(f"  | {r.line}" for r in list(runtime.output.tail)[-10:])
        report.append(f"{name}: {last.reason if last else '?'}\n{lines}")
    assert not failed, "\n".join(report)


def first(events: list[Transition], service: str, state: ServiceState) -> int:
    """The position of `service`'s first transition to `state` in `events`."""
    return next(
        i for i, t in enumerate(events) if t.service == service and t.target is state
    )


@dataclass
class Load:
    """Posts events with unique ids to the gateway, `WORKERS` at a time.

    An id is acknowledged only when the gateway answered 202. A worker ends
    when `stop` is set or when the gateway no longer takes connections.
    """

    url: str
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    acked: list[str] = field(default_factory=list)
    unacked: list[str] = field(default_factory=list)
    sent_while_stopping: int = 0
    """Requests begun after the gateway was asked to stop."""
    stopping: bool = False
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    async def run(self, reach: int) -> None:
        limits = httpx.Limits(max_connections=WORKERS)
        async with httpx.AsyncClient(limits=limits, timeout=20.0) as client:
            await asyncio.gather(*(self._worker(client, reach) for _ in range(WORKERS)))

    async def _worker(self, client: httpx.AsyncClient, reach: int) -> None:
        while not self.stop.is_set():
            event_id = f"{self.prefix}-{next(self._ids)}"
            if self.stopping:
                self.sent_while_stopping += 1
            try:
                answer = await client.post(self.url, json={"id": event_id})
            except httpx.ConnectError:
                self.unacked.append(event_id)
                return  # the gateway closed its socket: it is stopping
            except httpx.HTTPError:
                self.unacked.append(event_id)  # cut off mid-request
                continue
            if answer.status_code == 202:
                self.acked.append(event_id)
                if len(self.acked) >= reach:
                    self.reached.set()
            else:
                self.unacked.append(event_id)

    @property
    def sent(self) -> int:
        return len(self.acked) + len(self.unacked)


def test_demo_starts_in_dependency_order_and_stops_in_reverse(demo: Demo) -> None:
    """Infra ready before the agents start, agents before the gateway; down reversed."""

    async def scenario() -> None:
        async with orchestrating(demo) as orchestrator:
            events: list[Transition] = []
            orchestrator.bus.subscribe(events.append)
            await up(orchestrator, demo.graph.select().order)
            states = {n: r.state for n, r in orchestrator.runtimes.items()}
            assert states == dict.fromkeys(ALL, S.READY)

            # Up: every infra service ready before any agent starts; the
            # gateway waits for both agents to start (condition "started").
            infra_ready = max(first(events, name, S.READY) for name in INFRA)
            agents_start = [first(events, name, S.STARTING) for name in AGENTS]
            assert infra_ready < min(agents_start)
            assert max(agents_start) < first(events, "gateway", S.STARTING)

            # Down: the gateway is gone before an agent is asked to stop, and
            # both agents are gone before any infra service is.
            began = len(events)
            await orchestrator.down()
            stops = events[began:]
            gateway_stopped = first(stops, "gateway", S.STOPPED)
            agents_stopping = [first(stops, name, S.STOPPING) for name in AGENTS]
            agents_stopped = [first(stops, name, S.STOPPED) for name in AGENTS]
            infra_stopping = [first(stops, name, S.STOPPING) for name in INFRA]
            assert gateway_stopped < min(agents_stopping)
            assert max(agents_stopped) < min(infra_stopping)
            assert {t.service for t in stops if t.target is S.STOPPED} == set(ALL)

    run(scenario())


def test_graceful_down_under_load_keeps_every_acknowledged_event(demo: Demo) -> None:
    """Every event answered 202, up to the down's end, is stored once and counted."""

    async def scenario() -> None:
        load = Load(f"{demo.gateway}/events")
        async with orchestrating(demo) as orchestrator:
            await up(orchestrator, demo.graph.select().order)

            def on_transition(transition: Transition) -> None:
                if transition.service != "gateway":
                    return
                if transition.target is S.STOPPING:
                    load.stopping = True
                elif transition.target is S.STOPPED:
                    load.stop.set()

            orchestrator.bus.subscribe(on_transition)

            # Load first; the down begins once it is well under way and the
            # load goes on until the gateway is gone.
            loading = asyncio.create_task(load.run(ACKED_BEFORE_DOWN))
            reached = asyncio.create_task(load.reached.wait())
            await asyncio.wait([loading, reached], return_when=asyncio.FIRST_COMPLETED)
            assert load.reached.is_set(), f"load ended early: {loading.result()!r}"
            await orchestrator.down()
            load.stop.set()
            await loading
            assert load.sent_while_stopping > 0, "the load did not overlap the stop"
            states = {n: r.state for n, r in orchestrator.runtimes.items()}
            assert states == dict.fromkeys(ALL, S.STOPPED)

            # Up again, with the data the down left.
            await up(orchestrator, demo.graph.select().order)
            stored, duplicates, rows = await stored_events(demo.dsn, load.prefix)
            counter = await counted_events(demo.ports["REDIS_PORT"])

        acked = set(load.acked)
        assert len(acked) == len(load.acked) >= ACKED_BEFORE_DOWN
        missing = acked - stored
        assert not missing, (
            f"{len(missing)} of {len(acked)} acknowledged events lost "
            f"({load.sent} sent, {len(load.unacked)} not acknowledged)"
        )
        assert duplicates == 0  # the primary key's promise, if the schema changes
        # An agent bumps the counter once per row it inserted (never for a
        # redelivered one), and a graceful stop interrupts no agent between
        # the two: the counter is exactly the number of rows.
        assert counter == rows >= len(acked)

    run(scenario())


async def stored_events(dsn: str, prefix: str) -> tuple[set[str], int, int]:
    """The ids with `prefix` in the events table, the duplicates, all rows."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = await conn.fetch(
            "SELECT id FROM events WHERE starts_with(id, $1)", f"{prefix}-"
        )
        rows, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT id) FROM events"
        )
    finally:
        await conn.close()
    return {r["id"] for r in ids}, rows - distinct, rows


async def counted_events(port: int) -> int:
    """The agents' Redis counter of stored events."""
    client = redis.Redis(port=port)
    try:
        value = await client.get("events:stored")
    finally:
        await client.aclose()
    return int(value or 0)


def test_minimal_profile_runs_infra_and_gateway_only(demo: Demo) -> None:
    """Profile minimal starts postgres, redis, kafka and the gateway, no agent."""
    minimal = {"postgres", "redis", "kafka", "gateway"}
    selection = demo.graph.select(profile="minimal")
    assert set(selection.order) == minimal

    async def scenario() -> None:
        async with orchestrating(demo) as orchestrator:
            events: list[Transition] = []
            orchestrator.bus.subscribe(events.append)
            await up(orchestrator, selection.order)
            states = {n: r.state for n, r in orchestrator.runtimes.items()}
            assert states == dict.fromkeys(minimal, S.READY)
            assert {t.service for t in events} == minimal

            # The optional agents are absent: the broker still takes events.
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    f"{demo.gateway}/events", json={"id": "minimal-1"}
                )
            assert answer.status_code == 202

    run(scenario())


def test_demo_runs_when_the_venv_is_not_on_path(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway comes up when Overture runs from a venv that is not activated."""
    venv_bin = Path(sys.executable).parent.resolve()
    path = os.environ["PATH"].split(os.pathsep)
    path = [d for d in path if d and Path(d).resolve() != venv_bin]
    monkeypatch.setenv("PATH", os.pathsep.join(path))

    async def scenario() -> None:
        async with orchestrating(demo) as orchestrator:
            # The gateway needs only the broker; the agents are optional.
            await up(orchestrator, ["kafka", "gateway"])

    run(scenario())
