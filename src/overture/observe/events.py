"""The event stream: every lifecycle transition, in order, to every listener.

Transitions are the single source for the logs, the terminal view and (via
the control API) the event stream and metrics. Listeners are plain callables
run synchronously in publication order; one that raises is logged and kept.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from overture.lifecycle import Transition

log = logging.getLogger("overture.events")

Listener = Callable[[Transition], None]


class EventBus:
    def __init__(self, history: int = 10_000) -> None:
        self.history: deque[Transition] = deque(maxlen=history)
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns the function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def publish(self, transition: Transition) -> None:
        self.history.append(transition)
        for listener in tuple(self._listeners):
            try:
                listener(transition)
            except Exception:
                log.exception("event listener %r failed", listener)
