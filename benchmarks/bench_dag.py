"""Orchestration overhead on a 50-service DAG: all-ready minus the critical path.

Run: .venv/bin/python benchmarks/bench_dag.py [--services 50] [--runs 3]
    [--workloads light python]

Each service is a TCP listener that sleeps 20-100 ms (seeded) before it
listens, with a tcp ready probe; each depends (condition `healthy`) on one
to three earlier services. A child prints `time.monotonic()` the moment it
listens, so its own readiness is that stamp minus the moment its spawn
returned. The critical path is the longest dependency chain by own readiness;
the overhead is the time until every service is ready minus that path,
divided by the services on it.

Two workloads, the same DAG:

- light: the listener on a bare interpreter (`python -S -I`, the C socket
  module), about 10 ms of CPU to start. The two cores have room, so the
  overhead is what the launcher itself adds to each hop.
- python: the listener as the peer benchmark runs it (the full interpreter
  start-up and `socket`), about 45 ms of CPU each. With several branches
  starting at once both cores are busy, and every hop also waits for the
  scheduler, whoever launches it.

Each workload also runs under a minimal launcher written for this benchmark
(the `floor`): one asyncio loop, a bare `Popen` the moment the dependencies
are ready, a connect every millisecond as the ready check, and nothing else
(no state machine, no logs, no restart policy, no API). The floor shows how
much of the overhead any Python launcher pays on the machine at hand.
Overture and the floor alternate run by run.

Along the chain that actually finished last, each hop splits into:

- react: the last dependency's ready -> this service's spawn begins;
- spawn: the spawn call itself (fork and exec; the launcher's loop waits);
- probe: the child listens -> the launcher sees it ready.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from observe import CHILD_PYTHON, summarize, wait_ports_closed

from overture.config.model import Project
from overture.graph import Graph
from overture.lifecycle import ServiceState, Transition
from overture.observe.output import LogLine
from overture.orchestrator import Orchestrator
from overture.runners import process

SEED = 20240601
BASE_PORT = 21000
CHILDREN = {
    "light": [
        "-S",
        "-I",
        "-c",
        "import _socket,os,sys,time;time.sleep(float(sys.argv[2]));"
        "s=_socket.socket(2,1);s.setsockopt(1,2,1);"
        "s.bind(('127.0.0.1',int(sys.argv[1])));s.listen(128);"
        "print('listening',time.monotonic(),flush=True);"
        "any(os.close(s._accept()[0]) for _ in iter(int,1))",
    ],
    "python": [
        "-c",
        "import socket,sys,time;time.sleep(float(sys.argv[2]));s=socket.socket();"
        "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
        "s.bind(('127.0.0.1',int(sys.argv[1])));s.listen(128);"
        "print('listening',time.monotonic(),flush=True);"
        "any(s.accept()[0].close() for _ in iter(int,1))",
    ],
}
"""The child's interpreter options and script, by workload."""
WORKLOADS = tuple(CHILDREN)
TOOLS = ("overture", "floor")


def random_dag(size: int) -> tuple[dict[str, list[str]], dict[str, float]]:
    rng = random.Random(SEED)
    names = [f"svc-{i:02d}" for i in range(size)]
    deps = {
        name: rng.sample(names[:i], min(i, rng.randint(1, 3)))
        for i, name in enumerate(names)
    }
    delays = {name: rng.uniform(0.02, 0.1) for name in names}
    return deps, delays


def child_argv(workload: str, index: int, delay: float) -> list[str]:
    port = str(BASE_PORT + index)
    return [CHILD_PYTHON, *CHILDREN[workload], port, f"{delay:.3f}"]


@dataclass
class Timeline:
    """When each service was asked for, spawned, listened and seen ready."""

    began: float = 0.0
    spawn_began: dict[str, float] = field(default_factory=dict)
    spawned: dict[str, float] = field(default_factory=dict)
    listening: dict[str, float] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)


# Overture


def project(root: Path, size: int, workload: str) -> Project:
    deps, delays = random_dag(size)
    services = {
        name: {
            "command": child_argv(workload, i, delays[name]),
            "depends_on": {d: "healthy" for d in deps[name]},
            "ready": {"tcp": BASE_PORT + i},
        }
        for i, name in enumerate(deps)
    }
    return Project.model_validate({"services": services, "root": root})


class _TimedPopen(subprocess.Popen[bytes]):
    """Notes when the runner's spawn call began, by the service marker."""

    began: dict[str, float] = {}

    def __init__(self, *args: object, **kwargs: object) -> None:
        began = time.monotonic()
        super().__init__(*args, **kwargs)  # type: ignore[call-overload]
        env = kwargs["env"]
        assert isinstance(env, dict)
        self.began[env[process.MARKER]] = began


async def run_overture(size: int, workload: str) -> Timeline:
    timeline = Timeline()
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        proj = project(Path(tmp), size, workload)
        graph = Graph.from_project(proj)
        orchestrator = Orchestrator(proj, graph)

        def on_line(record: LogLine) -> None:
            if record.line.startswith("listening "):
                timeline.listening[record.service] = float(record.line.split()[1])

        def on_event(t: Transition) -> None:
            if t.target is ServiceState.READY:
                timeline.ready[t.service] = t.monotonic

        orchestrator.outputs.listeners.append(on_line)
        orchestrator.bus.subscribe(on_event)
        _TimedPopen.began = timeline.spawn_began
        plain, process.subprocess.Popen = process.subprocess.Popen, _TimedPopen  # type: ignore[misc]
        try:
            timeline.began = time.monotonic()
            failed = await orchestrator.up(graph.names)
        finally:
            process.subprocess.Popen = plain  # type: ignore[misc]
        for name, runtime in orchestrator.runtimes.items():
            assert runtime.runner is not None
            timeline.spawned[name] = runtime.runner.started_at
        await orchestrator.down()
        orchestrator.close()
    if failed:
        raise RuntimeError(f"{len(failed)} services failed: {failed[:3]}")
    return timeline


# The floor


async def run_floor(size: int, workload: str) -> Timeline:
    """The same DAG under the least a Python launcher can do."""
    deps, delays = random_dag(size)
    timeline = Timeline()
    ready = {name: asyncio.Event() for name in deps}
    stamped = asyncio.Event()
    children: list[subprocess.Popen[bytes]] = []
    loop = asyncio.get_running_loop()

    def read_stamp(name: str, pipe: int, pending: list[bytes]) -> None:
        chunk = os.read(pipe, 256)
        pending.append(chunk)
        text = b"".join(pending)
        if text.endswith(b"\n") or not chunk:
            loop.remove_reader(pipe)
            if text.startswith(b"listening "):
                timeline.listening[name] = float(text.split()[1])
            if len(timeline.listening) == size:
                stamped.set()

    async def start(index: int, name: str) -> None:
        for dep in deps[name]:
            await ready[dep].wait()
        timeline.spawn_began[name] = time.monotonic()
        child = subprocess.Popen(
            child_argv(workload, index, delays[name]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
            bufsize=0,
        )
        timeline.spawned[name] = time.monotonic()
        children.append(child)
        assert child.stdout is not None
        loop.add_reader(
            child.stdout.fileno(), read_stamp, name, child.stdout.fileno(), []
        )
        while not await _accepts(BASE_PORT + index):  # noqa: ASYNC110 - the floor polls
            await asyncio.sleep(0.001)
        timeline.ready[name] = time.monotonic()
        ready[name].set()

    timeline.began = time.monotonic()
    try:
        await asyncio.gather(*(start(i, name) for i, name in enumerate(deps)))
        async with asyncio.timeout(10):  # the last stamps may lag the connect
            await stamped.wait()
    finally:
        for child in children:
            child.kill()
            child.wait()
            assert child.stdout is not None
            child.stdout.close()
    return timeline


async def _accepts(port: int) -> bool:
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except OSError:
        return False
    finally:
        sock.close()
    return True


# Analysis


def analyze(size: int, timeline: Timeline) -> dict[str, float]:
    deps, _ = random_dag(size)
    t = timeline
    own = {n: t.listening[n] - t.spawned[n] for n in deps}
    path = _critical_path(deps, own)
    took = max(t.ready.values()) - t.began
    length = sum(own[n] for n in path)

    # The chain that finished last: from the last ready service back through
    # the dependency whose readiness let it start.
    chain: list[str] = []
    name: str | None = max(t.ready, key=t.ready.__getitem__)
    while name is not None:
        chain.append(name)
        name = max(deps[name], key=t.ready.__getitem__) if deps[name] else None
    hops = {"react": 0.0, "spawn": 0.0, "probe": 0.0}
    for name in chain:
        after = max((t.ready[d] for d in deps[name]), default=t.began)
        hops["react"] += t.spawn_began[name] - after
        hops["spawn"] += t.spawned[name] - t.spawn_began[name]
        hops["probe"] += t.ready[name] - t.listening[name]
    return {
        "took": took * 1000,
        "critical": length * 1000,
        "services on path": len(path),
        "overhead/service": (took - length) / len(path) * 1000,
        **{f"{k} per hop": v / len(chain) * 1000 for k, v in hops.items()},
    }


def _critical_path(deps: dict[str, list[str]], own: dict[str, float]) -> list[str]:
    """The chain of dependencies with the largest sum of own readiness."""
    best: dict[str, tuple[float, list[str]]] = {}
    for name, before_names in deps.items():  # dependencies come first here
        before = [best[d] for d in before_names]
        length, path = max(before, key=lambda x: x[0]) if before else (0.0, [])
        best[name] = (length + own[name], [*path, name])
    return max(best.values(), key=lambda x: x[0])[1]


Results = dict[str, dict[str, dict[str, list[float]]]]
"""workload -> tool -> figure -> one value per run."""


async def measure(
    size: int, runs: int, workloads: tuple[str, ...] = WORKLOADS
) -> Results:
    """Overture and the floor, alternating, `runs` times each per workload."""
    results: Results = {w: {tool: {} for tool in TOOLS} for w in workloads}
    ports = range(BASE_PORT, BASE_PORT + size)
    for run in range(runs):
        order = TOOLS if run % 2 == 0 else TOOLS[::-1]
        for workload in workloads:
            for tool in order:
                wait_ports_closed(ports)
                runner = run_overture if tool == "overture" else run_floor
                figures = analyze(size, await runner(size, workload))
                for key, value in figures.items():
                    results[workload][tool].setdefault(key, []).append(value)
    return results


def describe(results: Results) -> str:
    lines = []
    for workload, tools in results.items():
        lines.append(f"== {workload} children")
        for tool, figures in tools.items():
            runs = len(figures["took"])
            lines.append(f"{tool}: median [min-max] over {runs} runs")
            for key, values in figures.items():
                s = summarize(values)
                assert s is not None
                unit = "" if key == "services on path" else " ms"
                lines.append(
                    f"  {key:<18}{s.median:>8.1f} [{s.low:.1f}-{s.high:.1f}]{unit}"
                )
        ours = summarize(tools["overture"]["took"])
        floor = summarize(tools["floor"]["took"])
        if ours and floor:
            ratio = ours.median / floor.median
            lines.append(f"all ready, overture / floor: {ratio:.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS)
    )
    args = parser.parse_args()
    results = measure(args.services, args.runs, tuple(args.workloads))
    print(describe(asyncio.run(results)))


if __name__ == "__main__":
    main()
