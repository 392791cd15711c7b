"""How the client commands print: the status table, events, output lines.

Standard library only, like the rest of the client. The colours are the
terminal codes of the printer's state colours (`observe.printer`), repeated
here because importing that module loads the state machine library.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

STATE_COLOURS = {
    "stopped": "90",
    "waiting": "34",
    "starting": "33",
    "ready": "32",
    "degraded": "38;5;208",
    "stopping": "35",
    "failed": "31",
    "blocked": "31",
    "completed": "36",
}
_PALETTE = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")
_COLUMNS = ("SERVICE", "STATE", "PID", "UPTIME", "RESTARTS", "PROBE", "REASON")


def wants_colour(stream: TextIO) -> bool:
    if "NO_COLOR" in os.environ:
        return False
    return "FORCE_COLOR" in os.environ or stream.isatty()


def paint(text: str, code: str | None, colour: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code else text


def duration(seconds: float | None) -> str:
    """`45s`, `3m12s`, `2h05m`, `3d04h`; `-` for none."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _probe(probe: Mapping[str, Any] | None) -> str:
    if not probe:
        return "-"
    verdict = "ok" if probe.get("ok") else "fail"
    return f"{verdict} {float(probe.get('latency', 0.0)) * 1000:.0f}ms"


def status_table(
    services: Sequence[Mapping[str, Any]], colour: bool, width: int | None
) -> str:
    """One row per service; the reason is cut to fit `width` (None: never)."""
    rows = [
        (
            str(s["name"]),
            str(s["state"]),
            "-" if s.get("pid") is None else str(s["pid"]),
            duration(s.get("uptime")),
            str(s.get("restarts", 0)),
            _probe(s.get("last_probe")),
            str(s.get("reason") or ""),
        )
        for s in services
    ]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(_COLUMNS)]
    room = None if width is None else max(10, width - sum(widths[:-1]) - 12)
    header = "  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True))
    lines = [header.rstrip()]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        cells[1] = paint(cells[1], STATE_COLOURS.get(row[1]), colour)
        reason = row[-1]
        if room is not None and len(reason) > room:
            reason = reason[: room - 1] + "…"
        lines.append("  ".join([*cells, reason]).rstrip())
    return "\n".join(lines)


def clock(at: float) -> str:
    """`14:03:27.512`, local time."""
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"


def event_line(event: Mapping[str, Any], colour: bool) -> str:
    """`14:03:27.512 api ready -> stopping: stop requested`."""
    target = str(event.get("to"))
    arrow = f"{event.get('from')} -> {paint(target, STATE_COLOURS.get(target), colour)}"
    return f"{clock(float(event.get('at', 0)))} {event.get('service')} {arrow}: " + str(
        event.get("reason", "")
    )


class LinePrefixes:
    """`name |` before each output line, each service in its own colour."""

    def __init__(self, names: Sequence[str], colour: bool) -> None:
        self.colour = colour
        self.width = max([len(n) for n in names] + [8])
        self._codes = {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(names)}

    def line(self, service: str, text: str) -> str:
        code = self._codes.setdefault(
            service, _PALETTE[len(self._codes) % len(_PALETTE)]
        )
        return f"{paint(f'{service:<{self.width}} |', code, self.colour)} {text}"


def outcome_lines(outcome: Mapping[str, Any], colour: bool) -> list[str]:
    """Each touched service and its state, then each failure with its output."""
    lines = []
    services = outcome.get("services", [])
    width = max([len(s["name"]) for s in services] + [1])
    for service in services:
        state = str(service["state"])
        pid = f" (pid {service['pid']})" if service.get("pid") else ""
        shown = paint(state, STATE_COLOURS.get(state), colour)
        lines.append(f"{service['name']:<{width}}  {shown}{pid}")
    for failure in outcome.get("failed", []):
        lines.append(f"{failure['name']} {failure['state']}: {failure['reason']}")
        lines.extend(f"  {failure['name']} | {line}" for line in failure["logs"])
    return lines
