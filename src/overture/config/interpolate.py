"""Variable substitution in config values, with docker compose's rules.

- `$VAR` and `${VAR}`: the value; an unset variable gives an empty string
  (and a warning in the log).
- `${VAR:-default}` when VAR is unset or empty, `${VAR-default}` when unset.
- `${VAR:+other}` when VAR is set and not empty, `${VAR+other}` when set.
- `${VAR:?message}` fails when VAR is unset or empty, `${VAR?message}` when
  unset.
- `$$` is a literal `$`; any other `$` is an error, as in docker compose, so
  that a shell snippet in a config value cannot lose a `$1` silently.

Defaults and messages may themselves contain substitutions. Only values are
substituted, never keys.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from overture.config.lines import KeyPath

log = logging.getLogger("overture.config")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+?])(.*))?", re.DOTALL)


def interpolate(
    data: Any, variables: Mapping[str, str]
) -> tuple[Any, list[tuple[KeyPath, str]]]:
    """`data` with every string value expanded, and each failure by key path."""
    problems: list[tuple[KeyPath, str]] = []

    def walk(value: Any, path: KeyPath) -> Any:
        if isinstance(value, str):
            try:
                return expand(value, variables)
            except ValueError as exc:
                problems.append((path, str(exc)))
                return value
        if isinstance(value, dict):
            return {key: walk(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, (*path, index)) for index, item in enumerate(value)]
        return value

    return walk(data, ()), problems


def expand(text: str, variables: Mapping[str, str]) -> str:
    """`text` with its `$` forms replaced; a ValueError says what is wrong."""
    pieces: list[str] = []
    pos = 0
    while (start := text.find("$", pos)) >= 0:
        pieces.append(text[pos:start])
        piece, pos = _substitute(text, start, variables)
        pieces.append(piece)
    pieces.append(text[pos:])
    return "".join(pieces)


def _substitute(text: str, start: int, variables: Mapping[str, str]) -> tuple[str, int]:
    """The replacement for the `$` form at `start`, and where the form ends."""
    after = start + 1
    if text.startswith("$", after):
        return "$", after + 1
    if text.startswith("{", after):
        end = _closing_brace(text, after + 1)
        return _braced(text[after + 1 : end], variables), end + 1
    name = _NAME.match(text, after)
    if name is not None:
        return _lookup(name.group(), variables), name.end()
    raise ValueError(
        f"'$' in {text!r} must be followed by a name, '{{' or '$'; "
        "write '$$' for a literal '$'"
    )


def _closing_brace(text: str, pos: int) -> int:
    depth = 1
    for index in range(pos, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise ValueError(f"'${{' in {text!r} has no closing '}}'")


def _braced(expression: str, variables: Mapping[str, str]) -> str:
    """The value of the inside of one `${...}`."""
    match = _BRACED.fullmatch(expression)
    if match is None:
        raise ValueError(
            f"'${{{expression}}}' is not a valid substitution; use ${{NAME}}, "
            "${NAME:-default}, ${NAME-default}, ${NAME:+other}, ${NAME:?message}"
        )
    name, operator, argument = match.groups()
    if operator is None:
        return _lookup(name, variables)

    value = variables.get(name)
    if operator.startswith(":") and value == "":
        value = None  # the ':' forms treat an empty variable as unset
    kind = operator[-1]
    if kind == "-":
        return expand(argument, variables) if value is None else value
    if kind == "+":
        return "" if value is None else expand(argument, variables)
    if value is not None:
        return value
    state = "not set or empty" if operator == ":?" else "not set"
    message = expand(argument, variables)
    raise ValueError(
        f"variable {name} is {state}" + (f": {message}" if message else "")
    )


def _lookup(name: str, variables: Mapping[str, str]) -> str:
    value = variables.get(name)
    if value is None:
        log.warning("variable=%s is not set; substituting an empty string", name)
        return ""
    return value
