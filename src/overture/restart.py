"""Restart policies: when a failed service comes back, and when it stops trying.

The delay grows exponentially from `initial_delay` by `factor` up to
`max_delay`, spread by +/- `jitter` so that services failing together do not
come back together. At most `max` restarts fit in any `window` of time; past
that the circuit opens and the service stays failed until a user restarts it.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable

from overture.config.model import Restart, RestartPolicy

_RNG = random.Random()
"""One generator for every service: a Random each costs memory per service."""


class RestartBudget:
    def __init__(
        self,
        policy: Restart,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.rng = rng or _RNG
        self._recent: deque[float] = deque()

    def applies(self, clean_exit: bool) -> bool:
        """Does the policy restart after this kind of failure at all?"""
        if self.policy.policy is RestartPolicy.ALWAYS:
            return True
        return self.policy.policy is RestartPolicy.ON_FAILURE and not clean_exit

    def next_delay(self) -> float | None:
        """The backoff before the next restart, or None: the circuit is open."""
        now = self.clock()
        while self._recent and now - self._recent[0] > self.policy.window:
            self._recent.popleft()
        if len(self._recent) >= self.policy.max:
            return None
        # The exponent is the number of restarts still inside the window, so
        # a service that stays up for a whole window starts again from the
        # first delay.
        base = self.policy.initial_delay * self.policy.factor ** len(self._recent)
        self._recent.append(now)
        delay = min(base, self.policy.max_delay)
        spread = self.policy.jitter * delay
        return max(0.0, delay + self.rng.uniform(-spread, spread))

    @property
    def used(self) -> int:
        """Restarts inside the current window."""
        return len(self._recent)

    def reset(self) -> None:
        """A user restart closes the circuit."""
        self._recent.clear()
