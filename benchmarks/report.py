"""Tables for the benchmark results: medians, ranges, and Overture's ratios.

Each peer table compares one metric across tools, one column pair per size:
the median with its range [min-max] over the repetitions, and the ratio
Overture / tool (below 1.00 means Overture took less, used less).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from observe import Summary, summarize

# metric: (title, unit, digits, the Overture run it is compared from)
METRICS = {
    "running": ("Time to all running, by each tool's own status", "s", 2, "overture"),
    "ports": (
        "Time until every port accepts a connection (independent checker)",
        "s",
        2,
        "overture+tcp",
    ),
    "stop": ("Graceful stop request -> every child gone", "s", 2, "overture"),
    "uss": ("The tool's own memory, USS, children excluded", "MB", 1, "overture+tcp"),
    "rss": ("The tool's own memory, RSS, children excluded", "MB", 1, "overture+tcp"),
    "cpu": ("The tool's own CPU while idle", "% of a core", 2, "overture+tcp"),
}
OVERTURES = ("overture", "overture+tcp")


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[-1].strip() if lines else ""


def overture_version() -> str:
    """The commit, and whether src/ had changes not yet committed."""
    root = Path(__file__).resolve().parent.parent
    commit = _output(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "-C", str(root), "status", "--porcelain", "src"])
    text = f"commit {commit or '?'}"
    if dirty:
        text += " plus uncommitted changes in src/"
    if os.environ.get("PYTHONPATH"):
        # The source that ran is a copy; the work tree only says where it was.
        text = f"the source in PYTHONPATH={os.environ['PYTHONPATH']}; " + (
            f"the work tree was at {text}"
        )
    return text


def peer_versions(names: Sequence[str], find: Callable[[str], str | None]) -> str:
    found = []
    for name, exe, argv in (
        ("supervisord", "supervisord", ["--version"]),
        ("circus", "circusd", ["--version"]),
        ("honcho", "honcho", ["--version"]),
    ):
        path = find(exe)
        if name in names and path:
            found.append(f"{name} {_output([path, *argv]).split()[-1]}")
    # Not `pm2 --version`: it starts a daemon in ~/.pm2 when none runs.
    pm2 = find("pm2")
    if "pm2" in names and pm2:
        package = Path(pm2).resolve().parent.parent / "package.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            found.append(f"pm2 {json.loads(package.read_text())['version']}")
    for name in ("s6", "runit"):
        if name in names:
            version = _output(["dpkg-query", "-W", "-f", "${Version}", name])
            found.append(f"{name} {version or '?'}")
    return ", ".join(found)


def cell(summary: Summary | None, digits: int) -> str:
    if summary is None:
        return "-"
    text = f"{summary.median:.{digits}f}"
    if summary.count > 1:
        text += f" [{summary.low:.{digits}f}-{summary.high:.{digits}f}]"
    return text


def ratio(ours: Summary | None, theirs: Summary | None) -> str:
    if ours is None or theirs is None or theirs.median <= 0:
        return "-"
    return f"{ours.median / theirs.median:.2f}x"


Table = dict[str, dict[str, dict[int, Summary]]]
"""metric -> tool -> size -> summary over the repetitions."""


def collect(samples: Sequence[Any]) -> Table:
    table: Table = {m: {} for m in METRICS}
    keys = sorted({(s.tool, s.size) for s in samples})
    for metric in METRICS:
        for tool, size in keys:
            values = [
                getattr(s, metric)
                for s in samples
                if (s.tool, s.size) == (tool, size) and getattr(s, metric) is not None
            ]
            summary = summarize(values)
            if summary is not None:
                table[metric].setdefault(tool, {})[size] = summary
    return table


def peers_tables(samples: Sequence[Any]) -> str:
    if not samples:
        return "No peer comparison ran."
    table = collect(samples)
    sizes = sorted({s.size for s in samples})
    tools = list(dict.fromkeys(s.tool for s in samples))
    tools.sort(key=lambda t: (t not in OVERTURES, t))
    parts = []
    for metric, (title, unit, digits, reference) in METRICS.items():
        rows = table[metric]
        head = "| tool |" + "".join(
            f" N={n} ({unit}) | {reference} / tool |" for n in sizes
        )
        lines = [f"**{title}**", "", head, "|---|" + "---:|---:|" * len(sizes)]
        for tool in tools:
            line = f"| {tool} |"
            for n in sizes:
                ours = rows.get(reference, {}).get(n)
                theirs = rows.get(tool, {}).get(n)
                shown = "" if tool in OVERTURES else ratio(ours, theirs)
                line += f" {cell(theirs, digits)} | {shown} |"
            lines.append(line)
        parts.append("\n".join(lines))
    notes = sorted(
        {f"{s.tool} N={s.size}: {s.note.strip('; ')}" for s in samples if s.note}
    )
    if notes:
        parts.append("Notes:\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts)


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return ours / theirs if ours and theirs else None


def goals(samples: Sequence[Any], extra: dict[str, float | None]) -> str:
    """Each goal of the benchmark suite: the figure, and met or not met."""
    table = collect(samples)

    def median(metric: str, tool: str, size: int = 500) -> float | None:
        summary = table[metric].get(tool, {}).get(size)
        return summary.median if summary else None

    ready = median("ports", "overture+tcp")
    stops = [median("stop", t) for t in table["stop"] if t not in OVERTURES]
    fastest = min((s for s in stops if s), default=None)
    # (goal, figure, passes, format of the figure)
    checks: list[tuple[str, float | None, Callable[[float], bool], str]] = [
        *(
            (
                f"500 tcp-ready: faster than {peer}",
                _ratio(ready, median("ports", peer)),
                lambda v: v < 1.0,
                "{:.2f}x",
            )
            for peer in ("supervisord", "circus", "honcho")
        ),
        (
            "500 tcp-ready: within 1.2x of s6",
            _ratio(ready, median("ports", "s6")),
            lambda v: v <= 1.2,
            "{:.2f}x",
        ),
        (
            "stop 500: within 1.5x of the fastest peer",
            _ratio(median("stop", "overture"), fastest),
            lambda v: v <= 1.5,
            "{:.2f}x",
        ),
        (
            "USS with 100 services <= 50 MB",
            median("uss", "overture+tcp", 100),
            lambda v: v <= 50,
            "{:.1f} MB",
        ),
        (
            "USS with 500 services <= 80 MB",
            median("uss", "overture+tcp", 500),
            lambda v: v <= 80,
            "{:.1f} MB",
        ),
        (
            "idle CPU, 100 services, 1 s live probes < 3 %",
            median("cpu", "overture+tcp", 100),
            lambda v: v < 3,
            "{:.2f} %",
        ),
        (
            "child exit -> event p99 < 50 ms",
            extra.get("event_p99"),
            lambda v: v < 50,
            "{:.2f} ms",
        ),
        (
            "`overture status` (and `--json`), 100 services < 150 ms",
            extra.get("status"),
            lambda v: v < 150,
            "{:.1f} ms",
        ),
        (
            "10,000-service dependency resolution < 100 ms",
            extra.get("graph"),
            lambda v: v < 100,
            "{:.1f} ms",
        ),
        (
            "DAG overhead < 5 ms per service on the critical path (light children)",
            extra.get("dag_overhead_light"),
            lambda v: v < 5,
            "{:.1f} ms",
        ),
        (
            "DAG, Python children (both cores busy): all ready within 1.1x of "
            "the floor",
            extra.get("dag_vs_floor_python"),
            lambda v: v <= 1.1,
            "{:.2f}x",
        ),
    ]
    rows = ["| goal | figure | verdict |", "|---|---:|---|"]
    for goal, value, passes, shown in checks:
        if value is None:
            rows.append(f"| {goal} | - | not measured |")
        else:
            verdict = "met" if passes(value) else "NOT met"
            rows.append(f"| {goal} | {shown.format(value)} | {verdict} |")
    return "\n".join(rows)
