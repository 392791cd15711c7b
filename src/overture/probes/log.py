"""log probe: passes once a line of the service's output matches a pattern.

The match is remembered: a ready line printed once keeps the probe passing.
"""

from __future__ import annotations

import re

from overture.config.model import Probe
from overture.probes.base import Checker, ProbeContext, ProbeResult


class LogChecker(Checker):
    def __init__(self, probe: Probe, context: ProbeContext) -> None:
        super().__init__(probe, context)
        assert probe.log is not None
        self.pattern = re.compile(probe.log)
        self.matched: str | None = None
        if context.subscribe_lines is not None:
            context.subscribe_lines(self._feed)

    @property
    def notified(self) -> bool:
        return (
            self.context.wake is not None and self.context.subscribe_lines is not None
        )

    def _feed(self, line: str) -> None:
        if self.matched is None and self.pattern.search(line):
            self.matched = line
            if self.context.wake is not None:
                self.context.wake()

    async def check(self) -> ProbeResult:
        if self.matched is None:
            return ProbeResult(
                False, f"no line matched {self.pattern.pattern!r} yet", 0.0
            )
        return ProbeResult(True, f"matched {self.matched[:80]!r}", 0.0)


def create(probe: Probe, context: ProbeContext) -> Checker:
    return LogChecker(probe, context)
