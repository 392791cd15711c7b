"""The whole benchmark suite in one command, and its report.

Run: .venv/bin/python benchmarks/run.py [--quick] [--update-doc docs/performance.md]

Runs, in this order: Overture against its peers (bench_peers.py), child exit
to state event (bench_events.py), orchestration overhead on a DAG
(bench_dag.py), `overture status` against a daemon (bench_status.py) and the
dependency graph on 10,000 services (bench_graph.py). Prints the report in
Markdown; `--update-doc` also puts it into a document, between the lines
`<!-- results:start -->` and `<!-- results:end -->`.

`--quick`: the peers at N=100 only, once each, and fewer runs elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import random
import sys
import time
from pathlib import Path

import bench_dag
import bench_events
import bench_graph
import bench_peers
import bench_status
import report
import tools
from observe import percentile, summarize

from overture.graph import Graph

START, END = "<!-- results:start -->", "<!-- results:end -->"


def graph_times(runs: int) -> list[float]:
    """Milliseconds to build, validate and select a 10,000-service graph."""
    deps = bench_graph.random_dag(10_000, random.Random(bench_graph.SEED))
    return bench_graph.measure(runs, lambda: Graph(deps).select())


def _ms(values: list[float], digits: int = 1) -> str:
    s = summarize(values)
    if s is None:
        return "-"
    return f"{s.median:.{digits}f} ms [{s.low:.{digits}f}-{s.high:.{digits}f}]"


def overture_rows(args: argparse.Namespace, extra: dict[str, float | None]) -> str:
    """The benchmarks of Overture alone, as table rows."""
    rows = []
    print("child exit -> event ...", flush=True)
    exits = asyncio.run(bench_events.measure(200))
    for name, values in exits.items():
        if values:
            rows.append(
                f"| child exit -> `completed` event, {name} ({len(values)} exits) "
                f"| p50 {percentile(values, 0.5):.2f} ms, "
                f"p99 {percentile(values, 0.99):.2f} ms |"
            )
    sequential = exits.get("sequential")
    extra["event_p99"] = percentile(sequential, 0.99) if sequential else None

    print("DAG overhead ...", flush=True)
    dag = asyncio.run(bench_dag.measure(50, 1 if args.quick else 3))
    for workload, by_tool in dag.items():
        for tool, figures in by_tool.items():
            who = "Overture" if tool == "overture" else "the floor"
            rows.append(
                f"| 50-service DAG, {workload} children, {who}: all ready "
                f"| {_ms(figures['took'])} |"
            )
            rows.append(
                f"| ... overhead per service on the critical path "
                f"({figures['services on path'][0]:.0f} services) "
                f"| {_ms(figures['overhead/service'])} |"
            )
            rows.append(
                "| ... per hop of the chain that finished last: "
                f"react / spawn / probe | {_ms(figures['react per hop'])} / "
                f"{_ms(figures['spawn per hop'])} / {_ms(figures['probe per hop'])} |"
            )
        ours = summarize(by_tool["overture"]["overhead/service"])
        extra[f"dag_overhead_{workload}"] = ours.median if ours else None
        took = summarize(by_tool["overture"]["took"])
        floor = summarize(by_tool["floor"]["took"])
        ratio = took.median / floor.median if took and floor else None
        extra[f"dag_vs_floor_{workload}"] = ratio

    print("overture status ...", flush=True)
    status = bench_status.measure(100, 5 if args.quick else 20)
    if isinstance(status, str):
        rows.append(f"| `overture status`, 100 services | {status} |")
    else:
        for command, s in status.items():
            assert s is not None
            rows.append(
                f"| `overture {command}`, daemon with 100 services, wall time "
                f"| {s.median:.1f} ms [{s.low:.1f}-{s.high:.1f}] |"
            )
        extra["status"] = max(s.median for s in status.values() if s)

    print("dependency graph ...", flush=True)
    graph = graph_times(5 if args.quick else 20)
    rows.append(
        "| dependency graph, 10,000 services: build + validate + select() "
        f"| {_ms(graph)} |"
    )
    summary = summarize(graph)
    extra["graph"] = summary.median if summary else None
    return "\n".join(["| benchmark | median [range] |", "|---|---:|", *rows])


def build_report(args: argparse.Namespace, began: float) -> str:
    version = report.overture_version()  # before: a commit may land meanwhile
    samples = bench_peers.samples_from(args)
    extra: dict[str, float | None] = {}
    overture = overture_rows(args, extra)
    names = sorted({s.tool for s in samples})
    find = tools.finder(args.peers_path)
    if args.quick:
        mode = "quick (N=100, 1 repetition)"
    else:
        reps = f"{args.repeat} repetition{'s' if args.repeat > 1 else ''}"
        mode = f"N={', '.join(map(str, args.sizes))}, {reps}"
    minutes = (time.monotonic() - began) / 60
    return "\n\n".join(
        [
            f"Run on {datetime.date.today().isoformat()}: {report.machine()}. "
            f"Mode: {mode}, {args.idle:g} s idle window, {minutes:.0f} min. "
            f"Overture: {version}. "
            f"Peers: {report.peer_versions(names, find) or 'none'}.",
            "### Goals",
            report.goals(samples, extra),
            "### Overture against its peers",
            "Medians over the repetitions, [min-max] where there were several. "
            "Ratio: Overture's median / the tool's (below 1.00x, Overture "
            "took less time or used less).",
            report.peers_tables(samples),
            "### Overture alone",
            overture,
        ]
    )


def update_doc(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else f"{START}\n{END}\n"
    if START not in doc or END not in doc:
        sys.exit(f"{path} has no {START} ... {END} section to replace")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_peers.add_arguments(parser)
    parser.add_argument("--update-doc", type=Path, help="e.g. docs/performance.md")
    args = parser.parse_args()
    try:
        text = build_report(args, time.monotonic())
    except KeyboardInterrupt:
        sys.exit("interrupted: the tool under test was stopped")
    print()
    print(text)
    if args.update_doc:
        update_doc(args.update_doc, text)
        print(f"\nwritten into {args.update_doc}")


if __name__ == "__main__":
    main()
