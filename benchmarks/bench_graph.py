"""Time the dependency graph on a random DAG of 10,000 services.

Run: .venv/bin/python benchmarks/bench_graph.py [--services N] [--runs N]

Each service depends on 0 to 4 earlier-numbered services (so the graph has no
cycle), a fifth of the edges optional. The graph data is built once, outside
the timings, from plain dicts, so pydantic parsing is not measured.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from overture.config.model import Condition, Dependency
from overture.graph import Graph

SEED = 20240601
DEPENDENCIES = [
    Dependency(condition=condition, required=required)
    for condition in Condition
    for required in (True, False)
]


def random_dag(size: int, rng: random.Random) -> dict[str, dict[str, Dependency]]:
    """Service i depends on up to four of services 0..i-1."""
    names = [f"svc-{i:05d}" for i in range(size)]
    deps: dict[str, dict[str, Dependency]] = {}
    for i, name in enumerate(names):
        picks = rng.sample(range(i), min(i, rng.randint(0, 4)))
        deps[name] = {
            names[j]: DEPENDENCIES[
                rng.randrange(len(Condition)) * 2 + (rng.random() < 0.2)
            ]
            for j in picks
        }
    return deps


def measure(runs: int, step: Callable[[], object]) -> list[float]:
    """Milliseconds per call of `step`, `runs` times."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        step()
        times.append((time.perf_counter() - began) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    rng = random.Random(SEED)
    deps = random_dag(args.services, rng)
    graph = Graph(deps)
    picks = [rng.sample(graph.names, 10) for _ in range(args.runs)]
    edges = sum(len(needs) for needs in deps.values())
    print(f"{args.services} services, {edges} dependencies, {args.runs} runs")

    sizes = [len(graph.select(pick).names) for pick in picks]
    print(f"10 random services select {statistics.median(sizes):.0f} (median)")

    # select() with no arguments reuses the order computed while building, so
    # "order(all)" shows what a fresh topological sort of every service costs.
    results = {
        "build + validate": measure(args.runs, lambda: Graph(deps)),
        "select() all": measure(args.runs, graph.select),
        "build + select()": measure(args.runs, lambda: Graph(deps).select()),
        "order(all)": measure(args.runs, lambda: graph.order(graph.names)),
        "select(10 random)": measure(args.runs, lambda: graph.select(picks.pop())),
    }
    print(f"{'step':<20}{'median':>10}{'min':>10}{'max':>10}  (ms)")
    for step, times in results.items():
        print(
            f"{step:<20}{statistics.median(times):>10.2f}"
            f"{min(times):>10.2f}{max(times):>10.2f}"
        )


if __name__ == "__main__":
    main()
