"""Wall time of `overture status` against a running daemon with 100 services.

Run: .venv/bin/python benchmarks/bench_status.py [--services 100] [--runs 20]

`overture up` (in the foreground, which runs the daemon) brings up the
services of the peer benchmark (Python TCP listeners, no probes); then
`overture status` and `overture status --json` each run `--runs` times from a
fresh process, as a user would type them. Skipped, with the reason, where the
`status` command does not exist yet or no daemon answers it.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import tools
from bench_peers import clean_up
from observe import Summary, summarize, wait_ports_closed

BASE_PORT = 22000


def has_status(overture: str) -> bool:
    probe = subprocess.run(
        [overture, "status", "--help"], capture_output=True, check=False
    )
    return probe.returncode == 0


def time_command(argv: list[str], cwd: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, check=False
        )
        times.append((time.perf_counter() - began) * 1000)
        if done.returncode != 0:
            first = (done.stderr or done.stdout).strip().splitlines()[:1]
            raise RuntimeError(f"rc={done.returncode}: {' '.join(first)}")
    return times


def measure(services: int, runs: int) -> dict[str, Summary | None] | str:
    """Summaries in ms per command, or the reason the benchmark was skipped."""
    tool = tools.Overture(tools.finder(None))
    if tool.missing():
        return f"skipped: {tool.missing()}"
    overture = tool.exe("overture")
    if not has_status(overture):
        return "skipped: this overture has no `status` command yet"
    ports = list(range(BASE_PORT, BASE_PORT + services))
    if not wait_ports_closed(ports):
        return "skipped: the ports are in use"
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        workdir = Path(tmp)
        tool.prepare(workdir, ports)
        try:
            tool.launch()
            if tool.wait_running(time.monotonic() + 120) is None:
                return f"skipped: {services} services did not come up"
            base = [overture, "-f", "overture.toml", "status"]
            return {
                "status": summarize(time_command(base, workdir, runs)),
                "status --json": summarize(
                    time_command([*base, "--json"], workdir, runs)
                ),
            }
        except RuntimeError as exc:
            return f"skipped: `overture status` failed ({exc})"
        finally:
            tool.request_stop()
            clean_up(tool)


def describe(result: dict[str, Summary | None] | str) -> str:
    if isinstance(result, str):
        return result
    lines = [f"{'command':<16}{'median':>9}{'min':>9}{'max':>9}  (ms)"]
    for command, s in result.items():
        assert s is not None
        lines.append(f"{command:<16}{s.median:>9.1f}{s.low:>9.1f}{s.high:>9.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(describe(measure(args.services, args.runs)))


if __name__ == "__main__":
    main()
