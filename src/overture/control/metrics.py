"""Prometheus metrics of the services, computed from their lifecycle events.

`Metrics.observe` listens to the event bus and keeps the counters, the
startup histogram and the uptime clocks; the gauges (state, last probe) are
read from the runtimes when `/metrics` is scraped. The text exposition
format (0.0.4) is simple enough to write here, with no client library in the
daemon.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from overture.lifecycle import ServiceState, Transition
from overture.runtime import ServiceRuntime

S = ServiceState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

STARTUP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STOP_OUTCOMES = ("clean", "forced", "unclean")

# States after which the service has no process of its own any more.
_ENDED = frozenset({S.STOPPED, S.FAILED, S.COMPLETED, S.BLOCKED, S.WAITING})


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1


@dataclass
class ServiceStats:
    """What one service's events add up to."""

    events: Counter[str] = field(default_factory=Counter)
    stops: Counter[str] = field(default_factory=Counter)
    startup: Histogram = field(default_factory=lambda: Histogram(STARTUP_BUCKETS))
    user_restarts: int = 0
    starting_since: float | None = None
    """Monotonic time it went to starting: its process's age (None: it has none)."""


def stop_outcome(transition: Transition) -> str:
    """clean, forced or unclean, from a `stop_done` transition."""
    given = transition.details.get("outcome")
    if isinstance(given, str) and given in STOP_OUTCOMES:
        return given
    # The runtime says it in the reason: "killed with SIGKILL: ignored ...",
    # "SIGTERM sent, exited with 1 (unclean)", "... (clean)".
    if transition.reason.startswith("killed with SIGKILL"):
        return "forced"
    return "unclean" if transition.reason.endswith("(unclean)") else "clean"


class Metrics:
    def __init__(self) -> None:
        self.stats: dict[str, ServiceStats] = {}
        self.started_at = time.time()

    def of(self, service: str) -> ServiceStats:
        stats = self.stats.get(service)
        if stats is None:
            stats = self.stats[service] = ServiceStats()
        return stats

    def observe(self, transition: Transition) -> None:
        """A bus listener: count the event and time the startup."""
        stats = self.of(transition.service)
        stats.events[transition.event] += 1
        target = transition.target
        if target is S.STARTING:
            stats.starting_since = transition.monotonic
        elif transition.event == "became_ready" and stats.starting_since:
            stats.startup.observe(transition.monotonic - stats.starting_since)
        elif transition.event == "stop_done":
            stats.stops[stop_outcome(transition)] += 1
        if target in _ENDED:
            stats.starting_since = None

    def uptime(self, service: str) -> float | None:
        """Seconds since its current process started; None if it has none."""
        stats = self.stats.get(service)
        if stats is None or stats.starting_since is None:
            return None
        return time.monotonic() - stats.starting_since

    def render(
        self, names: Iterable[str], runtimes: Mapping[str, ServiceRuntime]
    ) -> str:
        """Every metric of `names`, in the text exposition format."""
        names = list(names)
        out = _Writer()

        out.family(
            "overture_service_state",
            "gauge",
            "1 for the state each service is in, 0 for the others.",
        )
        for name in names:
            runtime = runtimes.get(name)
            current = runtime.state if runtime else S.STOPPED
            for state in S:
                out.sample(
                    "overture_service_state",
                    {"service": name, "state": state.value},
                    int(state is current),
                )

        out.family(
            "overture_transitions_total",
            "counter",
            "Lifecycle transitions, by service and event.",
        )
        for name in names:
            for event, count in sorted(self.of(name).events.items()):
                out.sample(
                    "overture_transitions_total",
                    {"service": name, "event": event},
                    count,
                )

        out.family(
            "overture_restarts_total",
            "counter",
            "Restarts, by service and cause: the restart policy, or a user request.",
        )
        for name in names:
            runtime = runtimes.get(name)
            by_policy = runtime.restarts if runtime else 0
            for cause, count in (
                ("policy", by_policy),
                ("user", self.of(name).user_restarts),
            ):
                out.sample(
                    "overture_restarts_total", {"service": name, "cause": cause}, count
                )

        self._render_startup(out, names)
        self._render_probes(out, names, runtimes)

        out.family(
            "overture_stops_total",
            "counter",
            "Stops of a service's process, by outcome: clean (it exited on the "
            "stop signal), forced (SIGKILL after the grace period), unclean.",
        )
        for name in names:
            stops = self.of(name).stops
            for outcome in STOP_OUTCOMES:
                out.sample(
                    "overture_stops_total",
                    {"service": name, "outcome": outcome},
                    stops[outcome],
                )

        out.family(
            "overture_daemon_start_time_seconds",
            "gauge",
            "When the daemon started, in seconds since the epoch.",
        )
        out.sample("overture_daemon_start_time_seconds", {}, self.started_at)
        return out.text()

    def _render_startup(self, out: _Writer, names: list[str]) -> None:
        metric = "overture_startup_duration_seconds"
        out.family(metric, "histogram", "Time from starting to ready.")
        for name in names:
            histogram = self.of(name).startup
            for bound, count in zip(histogram.buckets, histogram.counts, strict=True):
                out.sample(f"{metric}_bucket", {"service": name, "le": bound}, count)
            inf = {"service": name, "le": math.inf}
            out.sample(f"{metric}_bucket", inf, histogram.count)
            out.sample(f"{metric}_sum", {"service": name}, histogram.total)
            out.sample(f"{metric}_count", {"service": name}, histogram.count)

    @staticmethod
    def _render_probes(
        out: _Writer, names: list[str], runtimes: Mapping[str, ServiceRuntime]
    ) -> None:
        probed = []
        for name in names:
            runtime = runtimes.get(name)
            if runtime is not None and runtime.last_probe is not None:
                probed.append((name, runtime.last_probe))
        out.family(
            "overture_probe_latency_seconds",
            "gauge",
            "How long the last probe check of each service took.",
        )
        for name, probe in probed:
            out.sample(
                "overture_probe_latency_seconds", {"service": name}, probe.latency
            )
        out.family(
            "overture_probe_success",
            "gauge",
            "1 if the last probe check of each service passed, else 0.",
        )
        for name, probe in probed:
            out.sample("overture_probe_success", {"service": name}, int(probe.ok))


class _Writer:
    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, text: str) -> None:
        self._lines.append(f"# HELP {name} {_escape_help(text)}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: Mapping[str, object], value: float) -> None:
        if labels:
            pairs = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            name = f"{name}{{{pairs}}}"
        self._lines.append(f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _label(value: object) -> str:
    text = _number(value) if isinstance(value, float) else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
