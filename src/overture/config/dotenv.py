"""`.env` files: `KEY=VALUE` lines, read the way docker compose reads them.

A line is `KEY=VALUE`, optionally prefixed by `export `; blank lines and lines
starting with `#` are skipped. An unquoted value is trimmed and ends at a `#`
that follows a blank. A single-quoted value is taken literally; a
double-quoted one understands `\\n`, `\\t`, `\\r`, `\\"`, `\\\\` and `\\$`.
Either kind of quote may span lines.

Unlike docker compose, `${VAR}` inside a value is not expanded: values are
taken as written. Expanding them would need the variables read so far and the
process environment here, which is what `interpolate.expand` already does if
a caller needs it.
"""

from __future__ import annotations

import re
from pathlib import Path

from overture.errors import ConfigError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_INLINE_COMMENT = re.compile(r"\s#")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of an env file; a missing or malformed file is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"env file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"env file '{path}' cannot be read: {exc}") from None
    return parse_env(text, str(path))


def parse_env(text: str, name: str = "<env>") -> dict[str, str]:
    """The variables in env-file `text`; `name` labels error messages."""
    lines = text.splitlines()
    values: dict[str, str] = {}
    index = 0
    while index < len(lines):
        start = index
        statement = lines[index].lstrip()
        index += 1
        if not statement.strip() or statement.startswith("#"):
            continue

        key, sep, rest = statement.removeprefix("export ").partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ConfigError(
                f"{name}:{start + 1}: expected KEY=VALUE, got {statement.strip()!r}"
            )

        rest = rest.lstrip()
        if rest[:1] in ("'", '"'):
            values[key], index = _quoted(lines, start, rest, name)
        else:
            values[key] = _INLINE_COMMENT.split(rest, maxsplit=1)[0].strip()
    return values


def _quoted(lines: list[str], start: int, rest: str, name: str) -> tuple[str, int]:
    """A quoted value that starts on line `start`, and the index after it."""
    index = start + 1
    split = _split_quoted(rest)
    while split is None and index < len(lines):
        rest += "\n" + lines[index]
        index += 1
        split = _split_quoted(rest)
    if split is None:
        raise ConfigError(f"{name}:{start + 1}: the closing {rest[0]} is missing")

    body, tail = split
    if tail.strip() and not tail.strip().startswith("#"):
        raise ConfigError(
            f"{name}:{index}: unexpected text after the closing quote: {tail.strip()!r}"
        )
    if rest[0] == "'":
        return body, index
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group()), body), index


def _split_quoted(text: str) -> tuple[str, str] | None:
    """The body of the quoted string opening `text` and what follows it."""
    quote = text[0]
    pos = 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and quote == '"':
            pos += 2
            continue
        if char == quote:
            return text[1:pos], text[pos + 1 :]
        pos += 1
    return None
