"""Where a project's daemon keeps its files, and how a client finds them.

Everything lives in the project's `.overture/` directory, next to the config
file: the API socket, a record of the daemon (pid, socket, TCP address), the
bearer token of the TCP listener and the daemon's own log. The project lock is
the guard's (`.overture/lock`): whoever holds it is the project's daemon.

This module imports only the standard library, because the client commands
must answer in well under 150 ms and the config loader pulls in pydantic.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The config file names the loader looks for, in its order. Repeated here
# rather than imported: `overture.config.load` imports pydantic (~100 ms).
CONFIG_NAMES = ("overture.toml", "overture.yaml", "overture.yml", "overture.json")

# sun_path holds 108 bytes with its terminating NUL; leave a margin.
_SUN_PATH_MAX = 100


class DaemonPaths:
    """The files of one project's daemon.

    A plain class rather than a dataclass: `dataclasses` imports `inspect`,
    which alone costs the client commands several milliseconds.
    """

    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def state_dir(self) -> Path:
        return self.root / ".overture"

    @property
    def socket(self) -> Path:
        return self.state_dir / "daemon.sock"

    @property
    def record(self) -> Path:
        """`daemon.json`: pid, socket path and TCP address of the daemon."""
        return self.state_dir / "daemon.json"

    @property
    def token(self) -> Path:
        return self.state_dir / "token"

    @property
    def lock(self) -> Path:
        return self.state_dir / "lock"

    @property
    def log(self) -> Path:
        return self.state_dir / "logs" / "daemon.log"

    def read_record(self) -> dict[str, Any]:
        """The daemon's record, or an empty dict when there is none."""
        try:
            data = json.loads(self.record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


def find_root(file: Path | None, cwd: Path | None = None) -> Path:
    """The project directory: the config's, found from `cwd` upwards.

    With `-f FILE` it is the file's directory. Otherwise the nearest of `cwd`
    and its parents that holds a config file, so that a client works from any
    subdirectory of the project; `cwd` itself when none does.
    """
    here = (cwd or Path.cwd()).resolve()
    if file is not None:
        return (here / file).parent.resolve()
    for directory in (here, *here.parents):
        if any((directory / name).is_file() for name in CONFIG_NAMES):
            return directory
    return here


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """A name under which `path` can be bound or connected to.

    A unix socket path must fit in 108 bytes. A longer one is reached through
    an O_PATH descriptor of its directory (`/proc/self/fd/N/daemon.sock`),
    which Linux resolves like the real path.
    """
    if len(os.fsencode(path)) < _SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
