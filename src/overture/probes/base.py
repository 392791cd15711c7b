"""The probe contract: a checker answers one question, once, within a timeout.

A checker is built once per service and reused for every check, so it may
keep a connection open between checks (and must then close it in `close`).
Scheduling (interval, thresholds, start period) belongs to the caller.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from overture.config.model import Probe

if TYPE_CHECKING:
    from overture.probes.listening import ListenWatch


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    detail: str
    latency: float
    """Seconds the check took."""


@dataclass(slots=True)
class ProbeContext:
    """What a checker may need from the service it checks."""

    service: str
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    subscribe_lines: Callable[[Callable[[str], None]], None] | None = None
    """Registers a callback for each output line of the service (log probes)."""
    wake: Callable[[], None] | None = None
    """Asks the scheduler to check again now (a log line just matched)."""
    listening: ListenWatch | None = None
    """Given to ready probes: wakes a tcp probe when its port listens."""


class Checker(abc.ABC):
    """One kind of probe, bound to one target."""

    def __init__(self, probe: Probe, context: ProbeContext) -> None:
        self.probe = probe
        self.context = context

    @property
    def notified(self) -> bool:
        """True while a change of the answer will wake the scheduler.

        The scheduler then only polls as a fallback, and may poll slowly.
        """
        return False

    @abc.abstractmethod
    async def check(self) -> ProbeResult:
        """Run the check once; never raise for a failed check, return it."""

    async def close(self) -> None:  # noqa: B027 - most checkers hold nothing
        """Release what the checker keeps between checks."""


def compile_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Drop a probe's connection now, and wait until its socket is closed.

    The socket only closes once the loop runs again; a server stopped right
    after a probe's `close` must see no client left (Tansu waits 5 s for open
    connections before it exits).
    """
    writer.transport.abort()  # nothing left to say; no flush
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


def describe_failure(exc: BaseException) -> str:
    """Why a protocol check got no answer, in a few words."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, EOFError):
        return "connection closed before the answer"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
