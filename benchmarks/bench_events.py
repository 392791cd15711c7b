"""Time from a child's exit to Overture's state event for it, in-process.

Run: .venv/bin/python benchmarks/bench_events.py [--exits 200]

An Orchestrator brings up `--exits` one-shot services. Each child opens its
own FIFO, prints "waiting", blocks on a read and, when told, prints
`time.monotonic()` and calls `os._exit(0)`. CLOCK_MONOTONIC is the same clock
in every process, so the latency of one exit is the time the `completed`
event reached a bus listener minus the child's last stamp: an upper bound on
Overture's share (the exit itself takes microseconds).

Two passes: *sequential* tells one child at a time and waits for its event
(an otherwise idle orchestrator); *burst* tells all of them at once (the
event loop under load: each latency includes the queue in front of it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from observe import CHILD_PYTHON, percentile

from overture.config.model import Project
from overture.graph import Graph
from overture.lifecycle import ServiceState, Transition
from overture.observe.output import LogLine
from overture.orchestrator import Orchestrator

CHILD = (
    "import os,sys,time;fd=os.open(sys.argv[1],os.O_RDWR);"
    "print('waiting',flush=True);os.read(fd,1);"
    "os.write(1,b'exit %r\\n' % time.monotonic());os._exit(0)"
)
_ENDED = (ServiceState.COMPLETED, ServiceState.FAILED)


class ExitBench:
    def __init__(self, root: Path, count: int) -> None:
        self.names = [f"job-{i:03d}" for i in range(count)]
        self.fifos = {name: root / f"{name}.fifo" for name in self.names}
        services = {}
        for name, fifo in self.fifos.items():
            os.mkfifo(fifo)
            services[name] = {
                "command": [CHILD_PYTHON, "-c", CHILD, str(fifo)],
                "oneshot": True,
            }
        project = Project.model_validate({"services": services, "root": root})
        self.orchestrator = Orchestrator(project, Graph.from_project(project))
        self.orchestrator.bus.subscribe(self._on_event)
        self.orchestrator.outputs.listeners.append(self._on_line)
        self.exited: dict[str, float] = {}
        self.waiting: set[str] = set()
        self.evented: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[None]] = {}

    def _on_event(self, transition: Transition) -> None:
        if transition.target in _ENDED:
            self.evented[transition.service] = time.monotonic()
            waiter = self.waiters.pop(transition.service, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _on_line(self, record: LogLine) -> None:
        if record.line == "waiting":
            self.waiting.add(record.service)
        elif record.line.startswith("exit "):
            self.exited[record.service] = float(record.line.split()[1])

    def tell(self, name: str) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        self.waiters[name] = waiter
        fd = os.open(self.fifos[name], os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"x")
        os.close(fd)
        return waiter

    async def up(self, names: list[str]) -> None:
        self.exited.clear()
        self.evented.clear()
        self.waiting.clear()
        failed = await self.orchestrator.up(names)
        if failed:
            raise RuntimeError(f"{len(failed)} services did not start: {failed[:3]}")
        # No log ready probe: it misses a line printed before it subscribes
        # (see docs/performance.md), so the benchmark waits for the lines.
        for _ in range(3000):
            if len(self.waiting) == len(names):
                return
            await asyncio.sleep(0.01)
        raise RuntimeError(f"only {len(self.waiting)} children said 'waiting'")

    async def sequential(self) -> list[float]:
        await self.up(self.names)
        for name in self.names:
            await asyncio.wait_for(self.tell(name), 10)
            await asyncio.sleep(0.002)
        return await self._latencies()

    async def burst(self) -> list[float]:
        await self.up(self.names)
        waiters = [self.tell(name) for name in self.names]
        await asyncio.wait_for(asyncio.gather(*waiters), 30)
        return await self._latencies()

    async def _latencies(self) -> list[float]:
        # The stamp line may arrive after the exit was seen; give it a moment.
        for _ in range(100):
            if len(self.exited) == len(self.names):
                break
            await asyncio.sleep(0.01)
        return [
            (self.evented[n] - self.exited[n]) * 1000
            for n in self.names
            if n in self.exited and n in self.evented
        ]

    async def close(self) -> None:
        await self.orchestrator.down()
        self.orchestrator.outputs.close()


async def measure(count: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        bench = ExitBench(Path(tmp), count)
        try:
            sequential = await bench.sequential()
            await bench.orchestrator.down()
            burst = await bench.burst()
        finally:
            await bench.close()
    return {"sequential": sequential, "burst": burst}


def describe(results: dict[str, list[float]]) -> str:
    lines = [f"{'pass':<12}{'exits':>6}{'p50':>9}{'p99':>9}{'max':>9}  (ms)"]
    for name, values in results.items():
        if not values:
            lines.append(f"{name:<12}{0:>6}  no exits measured")
            continue
        lines.append(
            f"{name:<12}{len(values):>6}{percentile(values, 0.5):>9.2f}"
            f"{percentile(values, 0.99):>9.2f}{max(values):>9.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exits", type=int, default=200)
    args = parser.parse_args()
    results = asyncio.run(measure(args.exits))
    print(describe(results))
    sys.exit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    main()
