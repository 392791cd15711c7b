"""Soak: the demo stack, brought down under load again and again, loses nothing.

    .venv/bin/python benchmarks/soak.py [--cycles 20] [--events 500]
        [--workers 32] [--backlog 0] [--seed N] [--keep]

The demo of the root overture.toml runs in process (an `Orchestrator`) from a
copy of the config in a fresh directory under /tmp, on free ports. After a
first `up`, each cycle:

1. load: `--workers` clients post events with unique ids to the gateway as
   fast as it answers; an id is acknowledged when the answer is 202;
2. down: once a random number of events between `--events`/2 and
   `--events` is acknowledged, a graceful down of everything, the load
   going on until the gateway is gone;
3. up: everything again, with the data the down left;
4. verify: every acknowledged id of the cycle must be in PostgreSQL, and
   the agents' Redis counter must equal the number of rows (an agent counts
   each row it inserts, once).

With `--backlog N` the agents are absent while the first N events of a
cycle are acknowledged (the cycle's up is the `minimal` profile, then the
agents are added and the down begins as soon as they are ready), so the
stop finds a backlog in the topic that the agents must drain.

Per cycle and in total it prints the events sent, acknowledged, found in
PostgreSQL (with the rows of ids sent more than once, which the primary key
makes impossible, and the unacknowledged ones that were kept anyway), the
events the agents stored while draining, and the time of the down and of the
next up. It exits 1 if any acknowledged event is missing or the counter
disagrees with the table, 2 if the stack does not come up.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as redis

from overture.config.load import load_project
from overture.graph import Graph
from overture.lifecycle import ServiceState, Transition
from overture.observe.output import LogLine
from overture.orchestrator import Orchestrator

S = ServiceState

REPO = Path(__file__).resolve().parents[1]
PORTS = ("PG_PORT", "REDIS_PORT", "KAFKA_PORT", "GATEWAY_PORT")
AGENTS = ("agent-1", "agent-2")
COUNTER = "events:stored"
DOWN_TIMEOUT = 60.0
_DRAINED = re.compile(r"drained name=\S+ after=\S+ stored=(\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def demo_directory() -> Path:
    """A fresh directory holding a copy of the root overture.toml.

    Mode 0711: PostgreSQL runs as the unprivileged `overture` account when
    this runs as root, and must be able to enter it to reach its data.
    """
    root = Path(tempfile.mkdtemp(prefix="overture-demo-", dir="/tmp"))
    root.chmod(0o711)
    shutil.copy(REPO / "overture.toml", root / "overture.toml")
    return root


def child_environment() -> None:
    """The services run `python -m examples...`: this venv's python, and the
    repository on the path so that `examples` imports from any directory."""
    venv_bin = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([venv_bin, os.environ.get("PATH", "")])
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)


class DemoStack:
    """The demo, loaded from `root` with free ports, run by one orchestrator."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = {name: free_port() for name in PORTS}
        environ = {**os.environ, **{k: str(v) for k, v in self.ports.items()}}
        self.project = load_project(None, root, environ)
        self.graph = Graph.from_project(self.project)
        self.orchestrator = Orchestrator(self.project, self.graph)
        self.drained = 0
        """Events the agents stored while draining, since the last reset."""
        self.drain_timeouts = 0
        self.failures = 0
        """Services that failed (and were restarted by policy), since the reset."""
        self.slowest = ""
        """The service the last `up` waited for longest, and when it was ready."""
        self.orchestrator.outputs.listeners.append(self._on_line)
        self.orchestrator.bus.subscribe(self._on_transition)
        self._ready_at: dict[str, float] = {}

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['GATEWAY_PORT']}"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports['PG_PORT']}/overture"

    def _on_line(self, record: LogLine) -> None:
        if record.service not in AGENTS:
            return
        if found := _DRAINED.search(record.line):
            self.drained += int(found.group(1))
        elif "drain timed out" in record.line:
            self.drain_timeouts += 1

    def _on_transition(self, transition: Transition) -> None:
        if transition.target is S.READY:
            self._ready_at[transition.service] = transition.monotonic
        elif transition.target is S.FAILED:
            self.failures += 1

    async def up(self, names: Iterable[str] | None = None) -> float:
        """Bring `names` (default: everything) up; the seconds it took."""
        order = self.graph.select().order if names is None else list(names)
        self._ready_at.clear()
        began = time.monotonic()
        failed = await self.orchestrator.up(order)
        took = time.monotonic() - began
        if failed:
            raise StackFailed(self._why(failed))
        last = max(self._ready_at, key=self._ready_at.__getitem__, default="")
        if last:
            self.slowest = f"{last}@{self._ready_at[last] - began:.1f}"
        return took

    async def down(self) -> float:
        began = time.monotonic()
        try:
            async with asyncio.timeout(DOWN_TIMEOUT):
                await self.orchestrator.down()
        except TimeoutError:
            self.orchestrator.kill_all()
            raise StackFailed(f"down took more than {DOWN_TIMEOUT:g}s") from None
        return time.monotonic() - began

    def _why(self, failed: list[str]) -> str:
        lines = []
        for name in failed:
            runtime = self.orchestrator.runtimes[name]
            last = runtime.lifecycle.last
            lines.append(f"{name} {runtime.state}: {last.reason if last else '?'}")
            lines += [f"  | {r.line}" for r in list(runtime.output.tail)[-10:]]
        return "\n".join(lines)

    async def close(self) -> None:
        """Stop what runs, however it went; close the logs."""
        try:
            await self.down()
        finally:
            self.orchestrator.close()


class StackFailed(Exception):
    """A service of the demo did not come up, or a down did not end."""


@dataclass
class Load:
    """Posts events with unique ids to the gateway, `workers` at a time.

    An id is acknowledged only when the gateway answered 202. A worker ends
    when `stop` is set or when the gateway no longer takes connections.
    """

    url: str
    workers: int
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    acked: list[str] = field(default_factory=list)
    unacked: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    goal: int = 0
    _ids: Iterator[int] = field(default_factory=itertools.count)

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.workers)
        async with httpx.AsyncClient(limits=limits, timeout=20.0) as client:
            await asyncio.gather(*(self._worker(client) for _ in range(self.workers)))

    def until(self, acked: int) -> asyncio.Event:
        """An event set once `acked` events are acknowledged."""
        self.goal = acked
        self.reached = asyncio.Event()
        if len(self.acked) >= acked:
            self.reached.set()
        return self.reached

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            event_id = f"{self.prefix}-{next(self._ids)}"
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
                if len(self.acked) >= self.goal:
                    self.reached.set()
            else:
                self.unacked.append(event_id)

    @property
    def sent(self) -> int:
        return len(self.acked) + len(self.unacked)


@dataclass
class Cycle:
    sent: int = 0
    acked: int = 0
    found: int = 0
    lost: int = 0
    duplicates: int = 0
    kept_unacked: int = 0
    drained: int = 0
    drain_timeouts: int = 0
    rows: int = 0
    counter: int = 0
    down: float = 0.0
    up: float = 0.0
    slowest: str = ""
    failures: int = 0

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.counter == self.rows and self.duplicates == 0


HEADER = (
    f"{'cycle':>5} {'sent':>6} {'acked':>6} {'found':>6} {'lost':>5} "
    f"{'dup':>4} {'kept*':>5} {'drained':>7} {'rows':>6} {'counter':>7} "
    f"{'down s':>6} {'up s':>6}  last ready"
)


def row(label: str, c: Cycle) -> str:
    return (
        f"{label:>5} {c.sent:>6} {c.acked:>6} {c.found:>6} {c.lost:>5} "
        f"{c.duplicates:>4} {c.kept_unacked:>5} {c.drained:>7} {c.rows:>6} "
        f"{c.counter:>7} {c.down:>6.2f} {c.up:>6.2f}  {c.slowest}"
    )


async def load_and_down(stack: DemoStack, load: Load, goal: int, backlog: int) -> float:
    """Load until `goal` events are acknowledged, then down; the down's time."""

    def on_transition(transition: Transition) -> None:
        if transition.service == "gateway" and transition.target is S.STOPPED:
            load.stop.set()

    unsubscribe = stack.orchestrator.bus.subscribe(on_transition)
    loading = asyncio.create_task(load.run())
    try:
        if backlog:
            # The agents are absent: these stay in the topic until they come.
            await first_of(loading, load.until(backlog))
            await stack.up(AGENTS)
        else:
            await first_of(loading, load.until(goal))
        if loading.done():
            raise StackFailed(f"the load ended before the down: {loading.result()}")
        took = await stack.down()
    finally:
        load.stop.set()
        await loading
        unsubscribe()
    return took


async def first_of(task: asyncio.Task[None], event: asyncio.Event) -> None:
    waiting = asyncio.create_task(event.wait())
    await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()


async def verify(stack: DemoStack, load: Load, cycle: Cycle) -> None:
    conn = await asyncpg.connect(stack.dsn)
    try:
        ids = await conn.fetch(
            "SELECT id, count(*) AS n FROM events WHERE starts_with(id, $1) "
            "GROUP BY id",
            f"{load.prefix}-",
        )
        cycle.rows = await conn.fetchval("SELECT count(*) FROM events")
    finally:
        await conn.close()
    client = redis.Redis(port=stack.ports["REDIS_PORT"])
    try:
        cycle.counter = int(await client.get(COUNTER) or 0)
    finally:
        await client.aclose()

    stored = {r["id"] for r in ids}
    acked = set(load.acked)
    cycle.sent, cycle.acked = load.sent, len(acked)
    cycle.found = len(acked & stored)
    cycle.lost = len(acked - stored)
    cycle.duplicates = sum(r["n"] - 1 for r in ids)
    cycle.kept_unacked = len(stored - acked)


async def soak(args: argparse.Namespace, root: Path) -> list[Cycle]:
    rng = random.Random(args.seed)
    stack = DemoStack(root)
    cycles: list[Cycle] = []
    minimal = stack.graph.select(profile="minimal").order
    try:
        await stack.up(minimal if args.backlog else None)
        print(HEADER, flush=True)
        for number in range(1, args.cycles + 1):
            cycle = Cycle()
            load = Load(f"{stack.gateway}/events", args.workers)
            goal = rng.randint(max(1, args.events // 2), args.events)
            stack.drained = stack.drain_timeouts = stack.failures = 0

            cycle.down = await load_and_down(stack, load, goal, args.backlog)
            cycle.drained, cycle.drain_timeouts = stack.drained, stack.drain_timeouts
            cycle.up = await stack.up(minimal if args.backlog else None)
            cycle.slowest, cycle.failures = stack.slowest, stack.failures
            await verify(stack, load, cycle)

            cycles.append(cycle)
            flag = "" if cycle.ok else "  <-- LOSS"
            if cycle.drain_timeouts:
                flag += f"  ({cycle.drain_timeouts} drain timeouts)"
            if cycle.failures:
                flag += f"  ({cycle.failures} failures, restarted)"
            print(row(str(number), cycle) + flag, flush=True)
    finally:
        await stack.close()
    return cycles


def total(cycles: list[Cycle]) -> Cycle:
    whole = Cycle()
    for c in cycles:
        for name in ("sent", "acked", "found", "lost", "duplicates", "kept_unacked"):
            setattr(whole, name, getattr(whole, name) + getattr(c, name))
        whole.drained += c.drained
        whole.drain_timeouts += c.drain_timeouts
        whole.failures += c.failures
        whole.down += c.down / len(cycles)
        whole.up += c.up / len(cycles)
    if cycles:
        whole.rows, whole.counter = cycles[-1].rows, cycles[-1].counter
    return whole


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument(
        "--events", type=int, default=500, help="acknowledged before the down, at most"
    )
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="events acknowledged while the agents are absent, per cycle",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--keep", action="store_true", help="keep the directory (logs, data)"
    )
    args = parser.parse_args()

    child_environment()
    root = demo_directory()
    print(f"demo in {root}; load average {fmt_load()}", flush=True)
    began = time.monotonic()
    try:
        cycles = asyncio.run(soak(args, root))
    except StackFailed as exc:
        print(f"soak: the stack failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    whole = total(cycles)
    print(row("total", whole) + "   (down s, up s: means; rows, counter: at end)")
    print(
        "* kept: events not acknowledged (cut off by the stop) that were stored anyway."
    )
    print(f"services that failed and were restarted by policy: {whole.failures}")
    print(
        f"{len(cycles)} cycles in {time.monotonic() - began:.0f}s; "
        f"load average {fmt_load()}"
    )
    bad = [i + 1 for i, c in enumerate(cycles) if not c.ok]
    if bad:
        print(f"LOSS in cycles {bad}", file=sys.stderr)
        return 1
    print(f"no loss: {whole.acked} acknowledged events, every one stored once")
    return 0


def fmt_load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
