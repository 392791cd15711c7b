"""When probes check: the ready probe's polling and the live probe's beat.

The runtime decides what an answer does to the service (ready, degraded,
failed); this module decides when to ask again, and counts the answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from overture.config.model import Probe
from overture.probes.base import Checker, ProbeResult

FIRST_DELAY = 0.001
"""The ready probe's first pause: most services are ready within tens of ms."""

NOTIFIED_POLL = 0.05
"""A ready checker that is told when its answer may change polls at least
this slowly, in case the notice never comes (a listener in another network
namespace), and ten times slower than the orchestrator's pace: with 500
services starting, once a second each."""


async def until_ready(
    probe: Probe,
    checker: Checker,
    wake: asyncio.Event,
    pace: Callable[[], float],
    seen: Callable[[ProbeResult], None],
) -> None:
    """Check until `success_threshold` checks in a row pass.

    Quickly at first, the pause doubling up to the probe's interval if the
    config sets one, else up to `pace()`: the orchestrator's, often while few
    services start and less often while hundreds compete for the same cores.
    `wake` cuts a pause short (a log line matched, a port listens). A checker
    that is told when its answer may change (`notified`) skips the quick
    start: the notice is the fast path, its polling only a fallback.
    """
    if probe.start_period:
        await asyncio.sleep(probe.start_period)
    delay, passes = FIRST_DELAY, 0
    while True:
        result = await checker.check()
        seen(result)
        passes = passes + 1 if result.ok else 0
        if passes >= probe.success_threshold:
            return
        if "interval" in probe.model_fields_set:
            ceiling = probe.interval
        elif checker.notified:
            ceiling = max(10 * pace(), NOTIFIED_POLL)
        else:
            ceiling = pace()
        delay = ceiling if checker.notified else min(delay * 2, ceiling)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await wake.wait()
        wake.clear()


async def on_beat(
    probe: Probe, checker: Checker, answer: Callable[[ProbeResult, int], bool]
) -> None:
    """Check every `interval` after `start_period`, on a fixed beat.

    `answer(result, streak)` hears each result with how many results in a row,
    this one included, had the same outcome; the beat ends when it returns
    False.
    """
    await asyncio.sleep(probe.start_period)
    beat = time.monotonic()
    streak, last_ok = 0, None
    while True:
        result = await checker.check()
        streak = streak + 1 if result.ok == last_ok else 1
        last_ok = result.ok
        if not answer(result, streak):
            return
        beat += probe.interval
        await asyncio.sleep(max(0.0, beat - time.monotonic()))
