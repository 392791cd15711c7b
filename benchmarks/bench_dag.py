"""Orchestration overhead on a 50-service DAG: all-ready minus the critical path.

Run: .venv/bin/python benchmarks/bench_dag.py [--services 50] [--runs 3]

Each service is a Python TCP listener that sleeps 20-100 ms (seeded) before
it listens, with a tcp ready probe; each depends (condition `healthy`) on one
to three earlier services. A child prints `time.monotonic()` the moment it
listens, so its own readiness is that stamp minus the moment its Popen
returned. The critical path is the longest dependency chain by own readiness;
the overhead is the time `up` took minus that path, divided by the services
on it. Along the path it splits into:

- spawn lag: the last dependency's ready event -> this service's Popen returned
  (Overture reacting to the event, plus fork and exec);
- probe lag: the child listens -> its ready event (the ready probe's polling).

It runs with the default probe interval (0.1 s) and with 10 ms, which shows
how much of the overhead is the probe's polling.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from observe import CHILD_PYTHON, summarize, wait_ports_closed

from overture.config.model import Project
from overture.graph import Graph
from overture.lifecycle import ServiceState, Transition
from overture.observe.output import LogLine
from overture.orchestrator import Orchestrator

SEED = 20240601
BASE_PORT = 21000
CHILD = (
    "import socket,sys,time;time.sleep(float(sys.argv[2]));s=socket.socket();"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
    "s.bind(('127.0.0.1',int(sys.argv[1])));s.listen(128);"
    "print('listening',time.monotonic(),flush=True);"
    "any(s.accept()[0].close() for _ in iter(int,1))"
)


def random_dag(size: int) -> tuple[dict[str, list[str]], dict[str, float]]:
    rng = random.Random(SEED)
    names = [f"svc-{i:02d}" for i in range(size)]
    deps = {
        name: rng.sample(names[:i], min(i, rng.randint(1, 3)))
        for i, name in enumerate(names)
    }
    delays = {name: rng.uniform(0.02, 0.1) for name in names}
    return deps, delays


def project(root: Path, size: int, interval: str | None) -> Project:
    deps, delays = random_dag(size)
    services = {}
    for i, name in enumerate(deps):
        port = BASE_PORT + i
        ready: dict[str, object] = {"tcp": port}
        if interval:
            ready["interval"] = interval
        services[name] = {
            "command": [CHILD_PYTHON, "-c", CHILD, str(port), f"{delays[name]:.3f}"],
            "depends_on": {d: "healthy" for d in deps[name]},
            "ready": ready,
        }
    return Project.model_validate({"services": services, "root": root})


def critical_path(graph: Graph, own: dict[str, float]) -> list[str]:
    """The chain of dependencies with the largest sum of own readiness."""
    best: dict[str, tuple[float, list[str]]] = {}
    for name in graph.order(graph.names):
        deps = [best[d] for d in graph.dependencies(name)]
        length, path = max(deps, key=lambda x: x[0]) if deps else (0.0, [])
        best[name] = (length + own[name], [*path, name])
    return max(best.values(), key=lambda x: x[0])[1]


async def run_once(size: int, interval: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        proj = project(Path(tmp), size, interval)
        graph = Graph.from_project(proj)
        orchestrator = Orchestrator(proj, graph)
        listening: dict[str, float] = {}
        ready_at: dict[str, float] = {}

        def on_line(record: LogLine) -> None:
            if record.line.startswith("listening "):
                listening[record.service] = float(record.line.split()[1])

        def on_event(t: Transition) -> None:
            if t.target is ServiceState.READY:
                ready_at[t.service] = t.monotonic

        orchestrator.outputs.listeners.append(on_line)
        orchestrator.bus.subscribe(on_event)
        began = time.monotonic()
        failed = await orchestrator.up(graph.names)
        took = max(ready_at.values()) - began
        spawned = {n: r.runner.started_at for n, r in orchestrator.runtimes.items()}
        await orchestrator.down()
        orchestrator.outputs.close()
    if failed:
        raise RuntimeError(f"{len(failed)} services failed: {failed[:3]}")

    own = {n: listening[n] - spawned[n] for n in graph.names}
    path = critical_path(graph, own)
    length = sum(own[n] for n in path)
    spawn_lag, probe_lag = [], []
    for name in path:
        after = [ready_at[d] for d in graph.dependencies(name)]
        spawn_lag.append(spawned[name] - (max(after) if after else began))
        probe_lag.append(ready_at[name] - listening[name])
    return {
        "took": took * 1000,
        "critical": length * 1000,
        "services on path": len(path),
        "overhead/service": (took - length) / len(path) * 1000,
        "spawn lag": statistics.median(spawn_lag) * 1000,
        "probe lag": statistics.median(probe_lag) * 1000,
    }


async def measure(size: int, runs: int) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {}
    ports = range(BASE_PORT, BASE_PORT + size)
    for label, interval in (("default interval", None), ("interval 10ms", "10ms")):
        results[label] = {}
        for _ in range(runs):
            wait_ports_closed(ports)
            for key, value in (await run_once(size, interval)).items():
                results[label].setdefault(key, []).append(value)
    return results


def describe(results: dict[str, dict[str, list[float]]]) -> str:
    lines = []
    for label, figures in results.items():
        lines.append(f"{label}: median [min-max] over {len(figures['took'])} runs")
        for key, values in figures.items():
            s = summarize(values)
            assert s is not None
            unit = "" if key == "services on path" else " ms"
            lines.append(
                f"  {key:<18}{s.median:>8.1f} [{s.low:.1f}-{s.high:.1f}]{unit}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(describe(asyncio.run(measure(args.services, args.runs))))


if __name__ == "__main__":
    main()
