"""All user-facing terminal output goes through one printer.

Human format: each service's lines behind a coloured `name |` prefix, and
Overture's own lines behind `overture |`. JSON format: one object per line,
for lifecycle events and for service output alike.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from typing import TextIO

from overture.lifecycle import ServiceState, Transition
from overture.observe.output import LogLine

_PALETTE = (36, 33, 32, 35, 34, 96, 93, 92, 95, 94)
STATE_COLOURS = {
    ServiceState.STOPPED: "bright_black",
    ServiceState.WAITING: "blue",
    ServiceState.STARTING: "yellow",
    ServiceState.READY: "green",
    ServiceState.DEGRADED: "dark_orange",
    ServiceState.STOPPING: "magenta",
    ServiceState.FAILED: "red",
    ServiceState.BLOCKED: "red",
    ServiceState.COMPLETED: "cyan",
}
_LOUD = frozenset({ServiceState.FAILED, ServiceState.BLOCKED, ServiceState.DEGRADED})

log = logging.getLogger("overture.output")


def wants_colour(stream: TextIO) -> bool:
    if "NO_COLOR" in os.environ:
        return False
    return "FORCE_COLOR" in os.environ or stream.isatty()


class Printer:
    def __init__(
        self,
        names: list[str],
        *,
        fmt: str = "human",
        stream: TextIO | None = None,
        colour: bool | None = None,
    ) -> None:
        self.fmt = fmt
        self._stream = stream
        self.colour = wants_colour(self.stream) if colour is None else colour
        self.width = max([len(n) for n in names] + [len("overture")])
        self._prefixes: dict[str, str] = {}
        for index, name in enumerate([*names, "overture"]):
            code = 1 if name == "overture" else _PALETTE[index % len(_PALETTE)]
            label = f"{name:<{self.width}} |"
            self._prefixes[name] = (
                f"\x1b[{code}m{label}\x1b[0m" if self.colour else label
            )
        self.quiet_transitions = False
        """While a live view shows the states, print only the loud transitions."""
        self.detached = False
        """The terminal or pipe went away: nothing more is printed."""

    @property
    def stream(self) -> TextIO:
        # Looked up each time: a live view swaps sys.stdout for a proxy.
        return self._stream or sys.stdout

    def _prefix(self, name: str) -> str:
        prefix = self._prefixes.get(name)
        if prefix is None:
            prefix = self._prefixes[name] = f"{name:<{self.width}} |"
        return prefix

    def line(self, record: LogLine) -> None:
        if self.fmt == "json":
            self._json(
                type="log",
                service=record.service,
                stream=record.stream,
                line=record.line,
                at=record.at,
            )
            return
        self._emit(f"{self._prefix(record.service)} {record.line}\n")

    def transition(self, t: Transition) -> None:
        if self.fmt == "json":
            self._json(type="event", **t.as_dict())
            return
        if self.quiet_transitions and t.target not in _LOUD:
            return
        text = f"{t.service} {t.source} -> {t.target}: {t.reason}"
        if self.colour and t.target in _LOUD:
            text = f"\x1b[31m{text}\x1b[0m"
        self.message(text)

    def message(self, text: str) -> None:
        if self.fmt == "json":
            self._json(type="message", service="overture", line=text)
            return
        self._emit(f"{self._prefix('overture')} {text}\n")

    def _json(self, **fields: object) -> None:
        self._emit(json.dumps(fields, default=str) + "\n")

    def _emit(self, text: str) -> None:
        # Flushed per line: behind a pipe (CI, tee) output must not wait.
        if self.detached:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError as exc:
            self._detach(exc)

    def _detach(self, exc: OSError) -> None:
        """The reader of our output is gone (a closed pipe, a hung-up terminal).

        The services go on and so does their log in .overture/logs; a stop
        must still run to its end, so nothing here may raise. Our standard
        output then points at /dev/null: a live view or the interpreter's
        last flush would otherwise meet the same error.
        """
        self.detached = True
        log.warning("terminal output stopped: %s; service logs go on", exc)
        if self._stream is None and sys.__stdout__ is not None:
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.__stdout__.fileno())
                os.close(devnull)
