"""Where each key of a config file is: key paths mapped to line numbers.

The parsers give values without positions (tomllib keeps none), so the error
messages look the line up here. The TOML and JSON scanners run only on text
their parser has already accepted: they skip values rather than check them,
and if they meet something they do not understand they stop and keep what
they have, so a message falls back to the line of an enclosing key.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import re
import tomllib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import yaml


KeyPath = tuple[str | int, ...]
LineMap = dict[KeyPath, int]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def line_of(lines: LineMap, path: KeyPath) -> int:
    """The line of `path`, else of its longest prefix that has one, else 1."""
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return 1


class _Stop(Exception):
    """The scanner met text it does not understand; keep what is mapped."""


class _Scanner:
    """A cursor over the text that knows the line of its position."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: LineMap = {}
        self._newlines = [i for i, char in enumerate(text) if char == "\n"]

    def line(self) -> int:
        return bisect.bisect_left(self._newlines, self.pos) + 1

    def peek(self, size: int = 1) -> str:
        return self.text[self.pos : self.pos + size]

    def mark(self, path: KeyPath, line: int | None = None) -> None:
        self.lines.setdefault(path, self.line() if line is None else line)

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise _Stop
        self.pos += 1

    def skip_basic_string(self) -> str:
        """Skip a one-line double-quoted string; return it with its quotes."""
        start = self.pos
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 2 if char == "\\" else 1
            if char == '"':
                return self.text[start : self.pos]
        raise _Stop


class _TomlScanner(_Scanner):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        # Each array of tables ([[a.b]]) and how many elements it has so far.
        self._arrays: dict[KeyPath, int] = {}

    def scan(self) -> LineMap:
        table: KeyPath = ()
        with contextlib.suppress(_Stop, IndexError):
            while self._skip(newlines=True):
                if self.peek(2) == "[[":
                    table = self._header(array=True)
                elif self.peek() == "[":
                    table = self._header(array=False)
                else:
                    self._key_value(table)
        return self.lines

    def _skip(self, newlines: bool) -> bool:
        """Skip blanks and comments (and newlines if asked); False at the end."""
        blanks = " \t\r\n" if newlines else " \t\r"
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            elif char in blanks:
                self.pos += 1
            else:
                return True
        return False

    def _header(self, array: bool) -> KeyPath:
        line = self.line()
        self.pos += 2 if array else 1
        keys = self._keys()
        self.pos += 2 if array else 1

        # A header walks through arrays of tables to their last element.
        path: KeyPath = ()
        for key in keys[:-1]:
            path = self._into_array((*path, key))
            self.mark(path, line)
        path = (*path, keys[-1])
        self.mark(path, line)
        if array:
            count = self._arrays.get(path, 0)
            self._arrays[path] = count + 1
            path = (*path, count)
            self.mark(path, line)
        return path

    def _into_array(self, path: KeyPath) -> KeyPath:
        count = self._arrays.get(path)
        return path if count is None else (*path, count - 1)

    def _keys(self) -> list[str]:
        """A dotted key such as `a."b.c".d`, as its parts."""
        keys = []
        while True:
            self._skip(newlines=False)
            keys.append(self._simple_key())
            self._skip(newlines=False)
            if self.peek() != ".":
                return keys
            self.pos += 1

    def _simple_key(self) -> str:
        if self.peek() in ("'", '"'):
            token = self._string()
            # Let tomllib decode the escapes of a quoted key.
            return str(tomllib.loads(f"k = {token}")["k"])
        match = _BARE_KEY.match(self.text, self.pos)
        if match is None:
            raise _Stop
        self.pos = match.end()
        return match.group()

    def _key_value(self, table: KeyPath) -> None:
        line = self.line()
        path = table
        for key in self._keys():
            path = (*path, key)
            self.mark(path, line)
        self.expect("=")
        self._skip(newlines=False)
        self._value(path)

    def _value(self, path: KeyPath) -> None:
        char = self.peek()
        if char == "{":
            self._inline_table(path)
        elif char == "[":
            self._array(path)
        elif char in ("'", '"'):
            self._string()
        else:
            while self.pos < len(self.text) and self.text[self.pos] not in ",]}\n#":
                self.pos += 1

    def _inline_table(self, path: KeyPath) -> None:
        self.pos += 1
        while self._skip(newlines=True):
            if self.peek() == "}":
                self.pos += 1
                return
            self._key_value(path)
            self._skip(newlines=True)
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "}":
                raise _Stop
        raise _Stop

    def _array(self, path: KeyPath) -> None:
        self.pos += 1
        index = 0
        while self._skip(newlines=True):
            if self.peek() == "]":
                self.pos += 1
                return
            self.mark((*path, index))
            self._value((*path, index))
            self._skip(newlines=True)
            if self.peek() == ",":
                self.pos += 1
                index += 1
            elif self.peek() != "]":
                raise _Stop
        raise _Stop

    def _string(self) -> str:
        """Skip any of the four TOML string forms; return it with its quotes."""
        start = self.pos
        quote = self.peek(3)
        if quote in ('"""', "'''"):
            self._skip_multiline(quote)
        elif quote[0] == '"':
            self.skip_basic_string()
        else:
            end = self.text.find("'", self.pos + 1)
            if end < 0:
                raise _Stop
            self.pos = end + 1
        return self.text[start : self.pos]

    def _skip_multiline(self, quote: str) -> None:
        self.pos += 3
        while self.pos < len(self.text):
            if quote == '"""' and self.peek() == "\\":
                self.pos += 2
            elif self.peek(3) == quote:
                # Up to two more quotes may close it: """a "quoted" b""""".
                self.pos += 3
                for _ in range(2):
                    if self.peek() == quote[0]:
                        self.pos += 1
                return
            else:
                self.pos += 1
        raise _Stop


def toml_lines(text: str) -> LineMap:
    """The line of every table, key and array element in TOML `text`."""
    return _TomlScanner(text).scan()


class _JsonScanner(_Scanner):
    def scan(self) -> LineMap:
        with contextlib.suppress(_Stop, IndexError):
            self._value(())
        return self.lines

    def _skip(self) -> None:
        while self.peek() in (" ", "\t", "\r", "\n"):
            self.pos += 1

    def _value(self, path: KeyPath) -> None:
        self._skip()
        char = self.peek()
        if char == "{":
            self._items(path, "}", self._member)
        elif char == "[":
            self._items(path, "]", self._element)
        elif char == '"':
            self.skip_basic_string()
        else:
            while self.peek() not in ("", ",", "]", "}", " ", "\t", "\r", "\n"):
                self.pos += 1

    def _items(
        self, path: KeyPath, close: str, item: Callable[[KeyPath, int], None]
    ) -> None:
        self.pos += 1
        index = 0
        while True:
            self._skip()
            if self.peek() == close:
                self.pos += 1
                return
            item(path, index)
            self._skip()
            if self.peek() == ",":
                self.pos += 1
                index += 1
            elif self.peek() != close:
                raise _Stop

    def _member(self, path: KeyPath, index: int) -> None:
        line = self.line()
        key = json.loads(self.skip_basic_string())
        self.mark((*path, key), line)
        self._skip()
        self.expect(":")
        self._value((*path, key))

    def _element(self, path: KeyPath, index: int) -> None:
        self.mark((*path, index))
        self._value((*path, index))


def json_lines(text: str) -> LineMap:
    """The line of every key and array element in JSON `text`."""
    return _JsonScanner(text).scan()


def yaml_lines(root: yaml.Node | None) -> LineMap:
    """The line of every key and sequence item under a composed YAML node."""
    lines: LineMap = {}
    _walk_yaml(root, (), lines, ())
    return lines


def _walk_yaml(
    node: yaml.Node | None, path: KeyPath, lines: LineMap, above: tuple[int, ...]
) -> None:
    import yaml  # only YAML projects pay for its import

    # An alias can make a node its own descendant; do not follow it round.
    if node is None or id(node) in above:
        return
    above = (*above, id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, str(key_node.value))
            lines.setdefault(key, key_node.start_mark.line + 1)
            _walk_yaml(value_node, key, lines, above)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.setdefault((*path, index), item.start_mark.line + 1)
            _walk_yaml(item, (*path, index), lines, above)
