"""Live streams for the API: lifecycle events and service output, fanned out.

Every subscriber has its own bounded queue, filled synchronously by the
publisher on the event loop. A subscriber that falls `limit` items behind
(a client that stopped reading) is cut off: its stream ends rather than the
daemon's memory growing. Closing a fan-out ends every stream, which lets the
HTTP servers shut down without waiting on open connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar

from overture.lifecycle import Transition
from overture.observe.events import EventBus

T = TypeVar("T")

KEEPALIVE = 15.0
"""Seconds between comments on an idle stream, so dead peers are noticed."""


class Fanout(Generic[T]):
    """Items published once, delivered to every subscriber's queue in order."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._queues: set[asyncio.Queue[T | None]] = set()
        self.closed = False

    def publish(self, item: T) -> None:
        for queue in tuple(self._queues):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                self._end(queue)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[T | None]]:
        """A queue of items; None in it means the stream is over."""
        queue: asyncio.Queue[T | None] = asyncio.Queue(self.limit)
        if self.closed:
            queue.put_nowait(None)
        else:
            self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    def close(self) -> None:
        self.closed = True
        for queue in tuple(self._queues):
            self._end(queue)

    def _end(self, queue: asyncio.Queue[T | None]) -> None:
        self._queues.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)


class EventFeed:
    """The bus's transitions, numbered from 1 in publication order.

    The numbers let a client resume (`since`) and check that it saw every
    transition. Replay reads the bus's own history, which keeps the last
    10,000 transitions.
    """

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.count = len(bus.history)
        self.fanout: Fanout[tuple[int, Transition]] = Fanout()
        bus.subscribe(self._publish)

    def _publish(self, transition: Transition) -> None:
        self.count += 1
        self.fanout.publish((self.count, transition))

    def since(self, seq: int) -> list[tuple[int, Transition]]:
        """Kept transitions numbered above `seq`."""
        history = list(self.bus.history)
        first = self.count - len(history) + 1
        skip = max(0, seq - first + 1)
        return [(first + i, t) for i, t in enumerate(history) if i >= skip]


def encode(kind: str, data: Any, ident: int | None = None) -> bytes:
    """One server-sent event (`data` as one line of JSON)."""
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def drain(queue: asyncio.Queue[T | None]) -> AsyncIterator[T | None]:
    """Items from `queue` until it ends; None now and then when it is idle."""
    while True:
        try:
            async with asyncio.timeout(KEEPALIVE):
                item = await queue.get()
        except TimeoutError:
            yield None
            continue
        if item is None:
            return
        yield item
