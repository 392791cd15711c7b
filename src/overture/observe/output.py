"""Service output: every line a child prints, kept in a file and a short tail.

Each service writes to `.overture/logs/<service>.log` (appended across runs),
keeps its last lines in memory for `logs` and the API, and hands each line to
listeners: the terminal printer and the log probes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True, slots=True)
class LogLine:
    service: str
    stream: str
    line: str
    at: float


LineListener = Callable[[LogLine], None]


class ServiceOutput:
    """The output of one service."""

    def __init__(self, service: str, path: Path, tail: int) -> None:
        self.service = service
        self.path = path
        self.tail: deque[LogLine] = deque(maxlen=tail)
        self.listeners: list[LineListener] = []
        self._file: IO[str] | None = None

    def write(self, stream: str, line: str) -> None:
        record = LogLine(self.service, stream, line, time.time())
        self.tail.append(record)
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", buffering=1, encoding="utf-8")
        self._file.write(f"{line}\n")
        for listener in tuple(self.listeners):
            listener(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class OutputStore:
    """The outputs of every service of a project, and listeners to them all."""

    def __init__(self, directory: Path, tail: int = 500) -> None:
        self.directory = directory
        self.tail = tail
        self.listeners: list[LineListener] = []
        self._outputs: dict[str, ServiceOutput] = {}

    def of(self, service: str) -> ServiceOutput:
        output = self._outputs.get(service)
        if output is None:
            output = ServiceOutput(
                service, self.directory / f"{service}.log", self.tail
            )
            output.listeners.append(self._broadcast)
            self._outputs[service] = output
        return output

    def _broadcast(self, record: LogLine) -> None:
        for listener in tuple(self.listeners):
            listener(record)

    def close(self) -> None:
        for output in self._outputs.values():
            output.close()
