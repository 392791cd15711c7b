"""Reading a project: find the file, parse it, substitute variables, validate.

Every problem found on the way is a ConfigError whose message gives the file
and line of each problem (see `report`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from overture.config.dotenv import parse_env
from overture.config.formats import parse_file
from overture.config.interpolate import interpolate
from overture.config.model import Project, Service
from overture.config.report import (
    LOADER_KEYS,
    Problem,
    SourceMap,
    unknown_key,
    validation_problems,
)
from overture.errors import ConfigError

CONFIG_NAMES = ("overture.toml", "overture.yaml", "overture.yml", "overture.json")


def find_config(path: Path | None, cwd: Path) -> Path:
    """The config file: `path` (the `-f` option) if given, else one in `cwd`."""
    if path is not None:
        found = cwd / path
        if not found.exists():
            raise ConfigError(f"config file '{path}' does not exist")
        if not found.is_file():
            raise ConfigError(f"config file '{path}' is not a file")
        return found
    for name in CONFIG_NAMES:
        if (cwd / name).is_file():
            return cwd / name
    raise ConfigError(
        f"no overture.toml (or .yaml/.yml/.json) in {cwd}; create one or pass -f FILE"
    )


def load_project(
    path: Path | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Project:
    """The validated project of a config file (see `find_config`).

    Variables in values come from `environ` (default: the process
    environment) over the `.env` file next to the config, as in docker
    compose. `root` is the config's directory and `source` the config file.
    """
    cwd = Path.cwd() if cwd is None else cwd
    environ = os.environ if environ is None else environ
    file = find_config(path, cwd)
    root = file.parent.resolve()

    # Parse, keeping the line of each key for the messages.
    data, lines = parse_file(file, _shown(file, cwd))
    source = SourceMap(_shown(file, cwd), lines)

    # Substitute variables; the process environment wins over `.env`.
    variables = {**_dotenv(file.parent / ".env", cwd), **environ}
    data, problems = interpolate(data, variables)
    if problems:
        raise source.error(problems)

    project = _validate(data, source)
    project = _with_env_files(project, root, source)
    return project.model_copy(update={"root": root, "source": file.resolve()})


def _shown(file: Path, cwd: Path) -> str:
    """A file's name as messages print it: relative to `cwd` if it is inside."""
    try:
        return str(file.relative_to(cwd))
    except ValueError:
        return str(file)


def _dotenv(path: Path, cwd: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"'{_shown(path, cwd)}' cannot be read: {exc}") from None
    return parse_env(text, _shown(path, cwd))


def _validate(data: dict[str, Any], source: SourceMap) -> Project:
    # The loader sets these from the file's place; a file may not.
    problems: list[Problem] = [
        ((key,), unknown_key(key, Project))
        for key in LOADER_KEYS[Project]
        if key in data
    ]
    try:
        project = Project.model_validate(data)
    except ValidationError as exc:
        raise source.error(problems + validation_problems(exc, Project)) from None
    if problems:
        raise source.error(problems)
    return project


def _with_env_files(project: Project, root: Path, source: SourceMap) -> Project:
    """The project with each `env_file` made absolute; a missing one is an error.

    Checking now rather than at start-up reports every missing file at once,
    with its line, before anything runs.
    """
    problems: list[Problem] = []
    services: dict[str, Service] = {}
    for name, service in project.services.items():
        files = [root / file for file in service.env_file]
        problems.extend(
            (("services", name, "env_file"), f"env file '{given}' does not exist")
            for given, file in zip(service.env_file, files, strict=True)
            if not file.is_file()
        )
        services[name] = service.model_copy(update={"env_file": files})
    if problems:
        raise source.error(problems)
    return project.model_copy(update={"services": services})
