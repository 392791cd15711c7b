"""Overture against the supervisors that install here, on the same workload.

Run: .venv/bin/python benchmarks/bench_peers.py [--quick] [--sizes 100 500]
     [--repeat 3] [--idle 10] [--tools overture,s6,...] [--peers-path DIR]

For each size N and each repetition, every tool in turn (the order rotates
from one repetition to the next) starts N copies of the same Python TCP
listener. One launch measures, in this order:

- running: launch -> the tool itself reports all N running;
- ports: launch -> every port accepts a connection (an independent checker);
- uss, rss: the tool's own processes, children excluded, with N up;
- cpu: the tool's own CPU over `--idle` seconds with N up;
- stop: the graceful stop request -> every child has exited.

Overture runs twice: `overture` has no probes, like the peers; `overture+tcp`
has a tcp ready probe and a 1 s tcp live probe on every service.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import peers
import psutil
import tools
from observe import (
    PortWatch,
    cpu_seconds,
    memory_mb,
    split_tree,
    wait_gone,
    wait_ports_closed,
)

BASE_PORT = 20000
SETTLE = 1.0
"""Seconds between all-ready and the memory reading; and between launches."""


@dataclass
class Sample:
    tool: str
    size: int
    repeat: int
    running: float | None = None
    ports: float | None = None
    uss: float | None = None
    rss: float | None = None
    cpu: float | None = None
    stop: float | None = None
    note: str = ""


def start_timeout(size: int) -> float:
    return 30.0 + size * 0.3


def measure(tool: tools.Tool, sample: Sample, idle: float) -> None:
    """Launch, watch it come up, read memory and idle CPU, stop it."""
    ports, deadline = tool.ports, time.monotonic() + start_timeout(sample.size)
    watch = PortWatch(ports)
    tool.before_launch()

    # Start: the clock runs from the launch to the tool's status and the ports.
    watch.start()
    began = time.monotonic()
    tool.launch()
    running = tool.wait_running(deadline)
    watch.done.wait(max(0.0, deadline - time.monotonic()))
    watch.stop()
    sample.running = running - began if running else None
    accepted = watch.all_at()
    sample.ports = accepted - began if accepted else None
    if running is None:
        sample.note += "no all-running status in time; "
    if accepted is None:
        sample.note += f"{len(watch.pending)} ports never accepted; "

    # Up: the tool's own processes (not the children) with N up, then idle.
    time.sleep(SETTLE)
    own, children = split_tree(tool.roots())
    tool.seen = own + children
    if len(children) != sample.size:
        sample.note += f"{len(children)} of {sample.size} children found; "
    sample.uss, sample.rss = memory_mb(own)
    before = cpu_seconds(own)
    time.sleep(idle)
    after = cpu_seconds(own)
    used = sum(after[pid] - before[pid] for pid in after if pid in before)
    sample.cpu = used / idle * 100

    # Stop: from the request until the last child has exited.
    requested = time.monotonic()
    tool.request_stop()
    gone = wait_gone([c.pid for c in children], timeout=60.0)
    sample.stop = gone - requested if gone else None
    if gone is None:
        sample.note += "children still running 60 s after the stop request; "


def clean_up(tool: tools.Tool) -> None:
    """Whatever the measurement left: the tool's processes, then the ports.

    Some exit on their own shortly after the tool's top process (each runsv
    after runsvdir), so they are waited for, or killed, before the tool's
    directory goes.
    """
    with contextlib.suppress(Exception):
        tool.finish(timeout=30.0)
    own, children = split_tree(tool.roots())
    left = {p.pid: p for p in [*tool.seen, *own, *children] if p.is_running()}
    _, alive = psutil.wait_procs(list(left.values()), timeout=5.0)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5.0)
    if not wait_ports_closed(tool.ports):
        print(f"  warning: ports still open after {tool.name}", file=sys.stderr)


def run_one(tool: tools.Tool, size: int, repeat: int, idle: float) -> Sample:
    sample = Sample(tool.name, size, repeat)
    ports = list(range(BASE_PORT, BASE_PORT + size))
    if not wait_ports_closed(ports, timeout=10.0):
        sample.note = "ports in use before the launch"
        return sample
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{tool.name}-{size}-"))
    try:
        tool.prepare(workdir, ports)
        measure(tool, sample, idle)
    except Exception as exc:  # one failed launch must not end the run
        sample.note += f"{type(exc).__name__}: {exc}"
    finally:
        clean_up(tool)
    if sample.note:
        sample.note += f"(kept {workdir})"
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return sample


def available(names: list[str] | None, peers_path: str | None) -> list[tools.Tool]:
    find = tools.finder(peers_path)
    chosen = []
    for kind in peers.ALL:
        if names and kind.name not in names:
            continue
        tool = kind(find)
        reason = tool.missing()
        if reason:
            print(f"skipping {kind.name}: {reason} (see benchmarks/README.md)")
        else:
            chosen.append(tool)
    return chosen


def run(
    chosen: list[tools.Tool], sizes: list[int], repeats: int, idle: float
) -> list[Sample]:
    samples = []
    for repeat in range(repeats):
        for size in sizes:
            shift = repeat % len(chosen)
            for tool in chosen[shift:] + chosen[:shift]:
                sample = run_one(tool, size, repeat, idle)
                samples.append(sample)
                print(_line(sample), flush=True)
                time.sleep(SETTLE)
    return samples


def _line(s: Sample) -> str:
    def f(value: float | None, unit: str, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}{unit}"

    return (
        f"  {s.tool:<13} N={s.size:<4} #{s.repeat + 1} running {f(s.running, 's')}"
        f"  ports {f(s.ports, 's')}  stop {f(s.stop, 's')}  uss {f(s.uss, 'MB', 1)}"
        f"  rss {f(s.rss, 'MB', 1)}  cpu {f(s.cpu, '%')}  {s.note}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="N=100, 1 repetition")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0, help="CPU window (s)")
    parser.add_argument("--tools", help="comma-separated subset, e.g. overture,s6")
    parser.add_argument("--peers-path", help="directories searched before PATH")
    parser.add_argument("--json", type=Path, help="write every sample here")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def samples_from(args: argparse.Namespace) -> list[Sample]:
    sizes, repeats = ([100], 1) if args.quick else (args.sizes, args.repeat)
    names = args.tools.split(",") if args.tools else None
    chosen = available(names, args.peers_path)
    if not chosen:
        return []
    print(f"sizes {sizes}, {repeats} repetition(s), {args.idle:g} s idle window")
    # A SIGTERM (`timeout`, a killed terminal) unwinds like Ctrl-C: the tool
    # under test is stopped and its children killed, or the next run finds
    # hundreds of ports taken and a peer's daemon still respawning them.
    signal.signal(signal.SIGTERM, _interrupt)
    samples = run(chosen, sizes, repeats, args.idle)
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in samples], indent=1))
    return samples


def main() -> None:
    from report import peers_tables

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        samples = samples_from(parser.parse_args())
    except KeyboardInterrupt:
        sys.exit("interrupted: the tool under test was stopped")
    print()
    print(peers_tables(samples))


if __name__ == "__main__":
    main()
