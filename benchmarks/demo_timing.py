"""How long the demo stack takes to come up cold and warm, and to go down.

    .venv/bin/python benchmarks/demo_timing.py [--repeat 3] [--in-process]

Each repetition copies the root overture.toml into a fresh directory under
/tmp (free ports, no data directories) and measures, through the real CLI:

- cold: `overture up -d` until it returns, which it does once every service
  is ready (PostgreSQL runs initdb; the broker creates its topic);
- down: `overture down` until it returns, once the daemon has stopped;
- warm: `overture up -d` again, the data directories now in place;
- down again.

Only the data directories are cold: the page cache, the Python bytecode
caches and the wheels' binaries are warm after the first repetition. Each
`up` is checked afterwards with `overture status --json` (every service
ready), and the line of each sample says when each service became ready,
relative to the start of the command, and when the daemon's orchestrator
received the request (`requested@`, from the event log), so the critical
path is visible: the CLI and the daemon's own start come before it.

`--in-process` times an `Orchestrator` instead (no daemon, no CLI), for
comparison. Goals on the development machine: cold < 5 s, warm < 3 s,
down < 3 s. The load average is printed with every sample: the machine's
two cores are often shared, and a busy machine slows every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from soak import PORTS, DemoStack, child_environment, demo_directory, free_port

GOALS = {"cold": 5.0, "warm": 3.0, "down": 3.0}
TIMEOUT = 120.0
OVERTURE = [str(Path(sys.executable).parent / "overture")]
"""The CLI of the venv running this script."""


def load_average() -> float:
    return os.getloadavg()[0]


class CliDemo:
    """The demo in `root`, driven with the `overture` command."""

    def __init__(self, root: Path) -> None:
        self.root = root
        ports = {name: str(free_port()) for name in PORTS}
        self.env = {**os.environ, **ports}

    def run(self, *args: str) -> tuple[float, str]:
        """Run `overture args...` in the project; its time and output."""
        began = time.monotonic()
        done = subprocess.run(
            [*OVERTURE, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        took = time.monotonic() - began
        if done.returncode != 0:
            raise SystemExit(
                f"`overture {' '.join(args)}` exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )
        return took, done.stdout

    def up(self) -> tuple[float, str]:
        """`overture up -d`; its time, and when each service became ready."""
        began = time.time()
        took, _ = self.run("up", "-d")
        _, text = self.run("status", "--json")
        services = json.loads(text)
        not_ready = [s["name"] for s in services if s["state"] != "ready"]
        if not_ready:
            raise SystemExit(f"not ready after `up -d`: {not_ready}\n{text}")
        ready = sorted((s["since"] - began, s["name"]) for s in services)
        detail = " ".join(f"{name}@{at:.1f}" for at, name in ready)
        requested = self._first_request_after(began)
        if requested is not None:
            detail = f"requested@{requested - began:.1f} {detail}"
        return took, detail

    def _first_request_after(self, began: float) -> float | None:
        """When the daemon's orchestrator got the `up`: its first start event.

        Read from the event log (`.overture/logs/overture.log`, local time to
        the millisecond); None if the line is not found there.
        """
        path = self.root / ".overture" / "logs" / "overture.log"
        if not path.exists():
            return None
        for line in path.read_text().splitlines():
            if " event=start " not in line:
                continue
            try:
                at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            except ValueError:
                return None
            if at.timestamp() >= began - 0.001:
                return at.timestamp()
        return None

    def down(self) -> float:
        took, _ = self.run("down")
        return took

    def close(self) -> None:
        """Stop the daemon if a failed sample left it running."""
        subprocess.run(
            [*OVERTURE, "down"],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )


class InProcessDemo:
    """The demo in `root`, driven by an Orchestrator in this process."""

    def __init__(self, root: Path) -> None:
        self.stack = DemoStack(root)
        self.loop = asyncio.new_event_loop()

    def up(self) -> tuple[float, str]:
        began = time.monotonic()
        took = self.loop.run_until_complete(self.stack.up())
        ready = sorted(
            (r.ready_at - began, name)
            for name, r in self.stack.orchestrator.runtimes.items()
            if r.ready_at is not None
        )
        return took, " ".join(f"{name}@{at:.1f}" for at, name in ready)

    def down(self) -> float:
        return self.loop.run_until_complete(self.stack.down())

    def close(self) -> None:
        self.loop.run_until_complete(self.stack.close())
        self.loop.close()


def summary(name: str, samples: list[float]) -> str:
    goal = GOALS[name]
    median = statistics.median(samples)
    verdict = "meets" if median < goal else "MISSES"
    return (
        f"{name:>5}: median {median:.2f}s, range {min(samples):.2f}-"
        f"{max(samples):.2f}s over {len(samples)} ({verdict} the goal < {goal:g}s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--in-process", action="store_true", help="an Orchestrator, not the CLI"
    )
    args = parser.parse_args()

    child_environment()
    how = "in process (Orchestrator)" if args.in_process else "CLI: overture up -d"
    print(f"demo timing, {how}, {args.repeat} repetitions")
    samples: dict[str, list[float]] = {"cold": [], "warm": [], "down": []}
    loads: list[float] = []

    def sample(kind: str, took: float, detail: str = "") -> None:
        samples[kind].append(took)
        loads.append(load_average())
        print(f"  {kind:>5} {took:6.2f}s  load {loads[-1]:5.1f}  {detail}", flush=True)

    for repetition in range(1, args.repeat + 1):
        print(f"repetition {repetition}")
        root = demo_directory()
        demo = InProcessDemo(root) if args.in_process else CliDemo(root)
        try:
            sample("cold", *demo.up())
            sample("down", demo.down())
            sample("warm", *demo.up())
            sample("down", demo.down())
        finally:
            demo.close()
            shutil.rmtree(root, ignore_errors=True)

    print()
    for kind in ("cold", "warm", "down"):
        print(summary(kind, samples[kind]))
    print(
        f"load average (1 min) during the samples: {min(loads):.1f}-"
        f"{max(loads):.1f} on {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
