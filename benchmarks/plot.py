"""Plots of the peer benchmark's samples: time to ready against N, per tool.

Run (matplotlib is in the `plot` dependency group, not needed by the tests):

    uv run --group plot python benchmarks/plot.py SAMPLES.json [--out docs/img]

SAMPLES.json is what `bench_peers.py --json` (or `run.py --json`) wrote.
Writes `ports-vs-n.png` (every port accepting, by an independent checker)
and `stop-vs-n.png` (graceful stop request -> every child gone): medians,
with the range of the repetitions as error bars.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

FIGURES = {
    "ports": ("Time until every port accepts a connection", "ports-vs-n.png"),
    "stop": ("Graceful stop request -> every child gone", "stop-vs-n.png"),
}


def series(
    samples: list[dict[str, object]], metric: str
) -> dict[str, list[tuple[int, float, float, float]]]:
    """tool -> [(N, median, min, max)] for one metric, sorted by N."""
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for sample in samples:
        value = sample.get(metric)
        if isinstance(value, int | float):
            size = sample["size"]
            assert isinstance(size, int)
            values[str(sample["tool"])][size].append(float(value))
    return {
        tool: [
            (n, statistics.median(v), min(v), max(v)) for n, v in sorted(sizes.items())
        ]
        for tool, sizes in sorted(values.items())
    }


def plot(samples: list[dict[str, object]], metric: str, out: Path) -> Path:
    title, filename = FIGURES[metric]
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for tool, points in series(samples, metric).items():
        sizes = [p[0] for p in points]
        medians = [p[1] for p in points]
        below = [p[1] - p[2] for p in points]
        above = [p[3] - p[1] for p in points]
        bold = tool.startswith("overture")
        axes.errorbar(
            sizes,
            medians,
            yerr=[below, above],
            label=tool,
            marker="o",
            capsize=3,
            linewidth=2.2 if bold else 1.2,
        )
    axes.set_title(title)
    axes.set_xlabel("services (N)")
    axes.set_ylabel("seconds (median, range)")
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    path = out / filename
    figure.savefig(path)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    samples = json.loads(args.samples.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    for metric in FIGURES:
        print(plot(samples, metric, args.out))


if __name__ == "__main__":
    main()
