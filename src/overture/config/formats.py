"""The three config formats: parse a file, and map its keys to lines.

The file suffix decides the format. A syntax error becomes a ConfigError that
names the file, the line and the parser's own explanation.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from overture.config.lines import LineMap, json_lines, toml_lines, yaml_lines
from overture.errors import ConfigError

SUFFIXES = (".toml", ".yaml", ".yml", ".json")

_TOML_WHERE = re.compile(r"(.*) \(at line (\d+), column (\d+)\)", re.DOTALL)


def parse_file(path: Path, shown: str) -> tuple[dict[str, Any], LineMap]:
    """The top-level table of a config file and the line of each key in it.

    `shown` is the file's name as messages print it.
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"config file '{shown}' has an unknown format; "
            f"name it with one of: {', '.join(SUFFIXES)}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file '{shown}' cannot be read: {exc}") from None

    if suffix == ".toml":
        data, lines = _toml(text, shown)
    elif suffix == ".json":
        data, lines = _json(text, shown)
    else:
        data, lines = _yaml(text, shown)

    # An empty YAML file is null; let validation say `services` is missing.
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else "a single value"
        raise ConfigError(
            f"{shown}:1: the file must hold a table of keys (services, profiles); "
            f"it holds {kind}"
        )
    return data, lines


def _toml(text: str, shown: str) -> tuple[Any, LineMap]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib puts the position only in its message.
        match = _TOML_WHERE.fullmatch(str(exc))
        if match is None:
            line, what = text.count("\n") + 1, str(exc)
        else:
            line = int(match.group(2))
            what = f"{match.group(1)} (column {match.group(3)})"
        raise ConfigError(f"{shown}:{line}: TOML syntax error: {what}") from None
    return data, toml_lines(text)


def _json(text: str, shown: str) -> tuple[Any, LineMap]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{shown}:{exc.lineno}: JSON syntax error: {exc.msg} (column {exc.colno})"
        ) from None
    return data, json_lines(text)


def _yaml(text: str, shown: str) -> tuple[Any, LineMap]:
    import yaml  # only YAML projects pay for its import

    # One pass gives both the node tree (with lines) and the values.
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = 1 if mark is None else mark.line + 1
        what = exc.problem or str(exc)
        if exc.context:
            what = f"{what} ({exc.context})"
        raise ConfigError(f"{shown}:{line}: YAML syntax error: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{shown}: YAML syntax error: {exc}") from None
    finally:
        loader.dispose()
    return data, yaml_lines(node)
