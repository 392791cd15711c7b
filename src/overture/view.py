"""The live view: every service's state and time in it, while starting and stopping."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from overture.observe.printer import STATE_COLOURS
from overture.runtime import ServiceRuntime


class LiveView:
    """A table refreshed in place; output printed meanwhile scrolls above it."""

    def __init__(self, runtimes: dict[str, ServiceRuntime], title: str) -> None:
        self.runtimes = runtimes
        self.title = title
        self.began = time.monotonic()
        self._live = Live(
            get_renderable=self._render,
            console=Console(),
            refresh_per_second=8,
            transient=False,
            redirect_stdout=True,
            redirect_stderr=True,
        )

    def _render(self) -> Table:
        now = time.monotonic()
        elapsed = now - self.began
        table = Table(title=f"{self.title} ({elapsed:.1f}s)", title_justify="left")
        table.add_column("service")
        table.add_column("state")
        table.add_column("for", justify="right")
        table.add_column("reason", overflow="ellipsis", no_wrap=True, max_width=60)
        for name, runtime in self.runtimes.items():
            last = runtime.lifecycle.last
            since = now - last.monotonic if last else 0.0
            state = runtime.state
            table.add_row(
                name,
                Text(state.value, style=STATE_COLOURS[state]),
                f"{since:.1f}s",
                last.reason if last else "",
            )
        return table

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.stop()
