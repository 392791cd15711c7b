"""Config problems as the user reads them: `FILE:LINE: PATH: message`.

pydantic reports each problem with a location (a tuple of keys and union
member names) and a terse message. Here the location becomes the key path of
the file, the line comes from the scanners in `lines`, and the message names
the bad value and what would be valid.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from overture.config.lines import KeyPath, LineMap, line_of
from overture.config.model import Project
from overture.errors import ConfigError

Problem = tuple[KeyPath, str]

# Set by the loader from where the file is, never written in it.
LOADER_KEYS: dict[type[BaseModel], tuple[str, ...]] = {Project: ("root", "source")}

_BARE = re.compile(r"[A-Za-z0-9_-]+")

# pydantic error types that mean "wrong type", and what was expected instead.
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "path_type": "a path",
}
_BOUNDS = {
    "greater_than_equal": ("ge", ">="),
    "greater_than": ("gt", ">"),
    "less_than_equal": ("le", "<="),
    "less_than": ("lt", "<"),
}


@dataclass(frozen=True)
class SourceMap:
    """A config file as the user named it, and the line of each key in it."""

    shown: str
    lines: LineMap

    def describe(self, path: KeyPath, message: str) -> str:
        where = f"{self.shown}:{line_of(self.lines, path)}"
        keys = dotted(path)
        return f"{where}: {keys}: {message}" if keys else f"{where}: {message}"

    def error(self, problems: list[Problem]) -> ConfigError:
        """One ConfigError listing each problem on its own line, in file order."""
        ordered = sorted(problems, key=lambda p: line_of(self.lines, p[0]))
        described = dict.fromkeys(self.describe(*p) for p in ordered)
        return ConfigError("\n".join(described))


def dotted(path: KeyPath) -> str:
    """`services.api.command[0]`; a key that is not bare is quoted."""
    text = ""
    for step in path:
        if isinstance(step, int):
            text += f"[{step}]"
            continue
        key = step if _BARE.fullmatch(step) else json.dumps(step)
        text = f"{text}.{key}" if text else key
    return text


def unknown_key(key: str, model: type[BaseModel]) -> str:
    """Says `key` is not valid here, with the nearest valid key or all of them."""
    valid = valid_keys(model)
    close = difflib.get_close_matches(key, valid, n=1)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}; valid keys: {', '.join(valid)}"


def valid_keys(model: type[BaseModel]) -> list[str]:
    """The keys a config file may write in a table of `model`, sorted."""
    hidden = LOADER_KEYS.get(model, ())
    return sorted(name for name in model.model_fields if name not in hidden)


def validation_problems(
    error: ValidationError, model: type[BaseModel]
) -> list[Problem]:
    """Each problem of a failed validation of `model`, by key path."""
    problems: list[Problem] = []
    unions: dict[KeyPath, list[tuple[_Place, ErrorDetails]]] = {}
    for details in error.errors():
        place = _place(model, details["loc"])
        if place.union_at is None:
            problems.append(_problem(place, details))
        else:
            unions.setdefault(place.path[: place.union_at], []).append((place, details))
    for path, members in unions.items():
        problems.extend(_union_problems(path, members))
    return problems


@dataclass(frozen=True)
class _Place:
    """Where a pydantic error is, in the terms of the config file."""

    path: KeyPath  # the keys, without pydantic's union member names
    parent: Any  # the type holding the last key
    leaf: Any  # the type of the value at the path, if known
    union_at: int | None  # length of the path where a union was entered


def _place(model: type[BaseModel], loc: tuple[int | str, ...]) -> _Place:
    path: list[str | int] = []
    kind: Any = model
    parent: Any = model
    union_at = None
    for step in loc:
        if step == "[key]":  # the problem is a dict key, not its value
            continue
        following, is_member = _step(kind, step)
        if is_member:
            union_at = len(path) if union_at is None else union_at
        else:
            parent = kind
            path.append(step)
        kind = following
    return _Place(tuple(path), parent, kind, union_at)


def _step(kind: Any, step: int | str) -> tuple[Any, bool]:
    """The type under `kind` at `step`, and whether `step` names a union member."""
    kind = _unwrap(kind)
    members = _union_members(kind)
    if members:
        return next((m for m in members if _member_name(m) == step), None), True
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        field = kind.model_fields.get(str(step))
        return (None if field is None else field.annotation), False
    if get_origin(kind) is dict:
        return get_args(kind)[1], False
    if get_origin(kind) is list:
        return get_args(kind)[0], False
    return None, False


def _unwrap(kind: Any) -> Any:
    """`kind` without Annotated and without None in an optional type."""
    while True:
        members = _union_members(kind)
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        elif len(members) == 1:
            kind = members[0]
        else:
            return kind


def _union_members(kind: Any) -> list[Any]:
    """The members of a union type other than None; [] for any other type."""
    if get_origin(kind) not in (Union, types.UnionType):
        return []
    return [arg for arg in get_args(kind) if arg is not type(None)]


def _member_name(kind: Any) -> str:
    # pydantic names a union member in a location as it prints the type.
    return kind.__name__ if isinstance(kind, type) else str(kind)


def _union_problems(
    path: KeyPath, members: list[tuple[_Place, ErrorDetails]]
) -> list[Problem]:
    """One problem for a value no member of a union accepts."""
    # A member whose error is deeper than the union matched the value's shape
    # (a list, but with a bad item): its errors are the helpful ones.
    deeper = [(p, d) for p, d in members if len(p.path) > len(path)]
    if deeper:
        return [_problem(p, d) for p, d in deeper]
    expected = [_EXPECTED.get(d["type"]) for _, d in members]
    if None in expected:
        return [_problem(p, d) for p, d in members]
    alternatives = " or ".join(dict.fromkeys(e for e in expected if e))
    return [(path, f"expected {alternatives}, got {_show(members[0][1]['input'])}")]


def _problem(place: _Place, details: ErrorDetails) -> Problem:
    if details["type"] == "missing" and place.path:
        return place.path[:-1], f"missing required key {str(place.path[-1])!r}"
    return place.path, _message(place, details)


def _message(place: _Place, details: ErrorDetails) -> str:
    kind = details["type"]
    if kind == "extra_forbidden":
        return _unknown(place)
    if kind in ("enum", "literal_error"):
        return _bad_choice(place.leaf, details)
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_show(details['input'])}"
    if kind in _BOUNDS:
        name, sign = _BOUNDS[kind]
        limit = details.get("ctx", {}).get(name)
        return f"must be {sign} {limit}, got {_show(details['input'])}"
    # A validator's own message already names the value and the rule.
    message = details["msg"].removeprefix("Value error, ")
    if kind in ("value_error", "assertion_error"):
        return message.removeprefix("Assertion failed, ")
    return f"{message[:1].lower()}{message[1:]}, got {_show(details['input'])}"


def _unknown(place: _Place) -> str:
    key = str(place.path[-1])
    if isinstance(place.parent, type) and issubclass(place.parent, BaseModel):
        return unknown_key(key, place.parent)
    return f"unknown key {key!r}"


def _bad_choice(leaf: Any, details: ErrorDetails) -> str:
    leaf = _unwrap(leaf)
    if isinstance(leaf, type) and issubclass(leaf, Enum):
        choices = ", ".join(str(member.value) for member in leaf)
    elif get_origin(leaf) is Literal:
        choices = ", ".join(str(arg) for arg in get_args(leaf))
    else:
        choices = str(details.get("ctx", {}).get("expected", "?"))
    message = f"{_show(details['input'])} is not valid; valid choices: {choices}"
    if isinstance(details["input"], bool):
        message += " (YAML reads a bare yes/no/on/off as a boolean; quote it)"
    return message


def _show(value: Any) -> str:
    """A value as the user wrote it, more or less."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return str(value)
