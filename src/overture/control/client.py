"""The client of the control API: HTTP/1.1 over the daemon's unix socket.

Built on `http.client` and nothing outside the standard library, so that a
client command (`overture status`) starts, asks and prints in well under
150 ms; httpx alone takes longer than that to import.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

from overture.control.paths import DaemonPaths, socket_address
from overture.errors import NotRunningError, OvertureError

# Statuses that mean the request named something wrong: a usage error.
_USAGE_STATUSES = frozenset({400, 404, 422})


class DaemonError(OvertureError):
    """The daemon refused a request, or went away while answering it."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.exit_code = 2 if status in _USAGE_STATUSES else 1


class ConnectionLostError(DaemonError):
    """The daemon closed the connection before it answered (it may be exiting)."""


class Event(NamedTuple):
    """One server-sent event."""

    kind: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: DaemonPaths, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._paths = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            with socket_address(self._paths.socket) as address:
                sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError):
            # No socket, or one left by a daemon that died: nobody listens.
            sock.close()
            raise NotRunningError(
                f"no daemon is running for {self._paths.root}; "
                "start one with `overture up -d`"
            ) from None
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def path_of(*parts: str, **query: Any) -> str:
    """`/a/b?k=v`: parts quoted, list values repeated, None values left out."""
    path = "/" + "/".join(quote(part, safe="") for part in parts)
    pairs = [
        (key, item)
        for key, value in query.items()
        if value is not None
        for item in (value if isinstance(value, list | tuple) else [value])
    ]
    return f"{path}?{urlencode(pairs)}" if pairs else path


class Client:
    """Requests to one project's daemon; each opens its own connection."""

    def __init__(self, paths: DaemonPaths, timeout: float | None = 10.0) -> None:
        self.paths = paths
        self.timeout = timeout

    def get(self, path: str) -> Any:
        return self._json(self._open("GET", path, None, self.timeout))

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """A mutating call; it waits as long as the services take (no timeout)."""
        return self._json(self._open("POST", path, body, None))

    def stream(self, path: str) -> Iterator[Event]:
        """The server-sent events of `path`, until the daemon ends the stream."""
        response = self._open("GET", path, None, None)
        try:
            yield from _read_events(response)
        except (ConnectionError, http.client.HTTPException):
            return  # the daemon went away: the stream is over
        finally:
            response.close()

    def _open(
        self, method: str, path: str, body: dict[str, Any] | None, timeout: float | None
    ) -> http.client.HTTPResponse:
        connection = _UnixConnection(self.paths, timeout)
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
        except TimeoutError:
            connection.close()
            raise DaemonError(
                f"the daemon did not answer {method} {path} within {timeout:g}s"
            ) from None
        except (ConnectionError, http.client.HTTPException) as exc:
            connection.close()
            raise ConnectionLostError(
                f"the daemon closed the connection: {exc}"
            ) from None
        if response.status >= 400:
            raise DaemonError(_error_message(response), response.status)
        return response

    @staticmethod
    def _json(response: http.client.HTTPResponse) -> Any:
        try:
            return json.loads(response.read())
        finally:
            response.close()


def _error_message(response: http.client.HTTPResponse) -> str:
    raw = response.read()
    response.close()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return f"the daemon answered {response.status} {response.reason}"


def _read_events(response: http.client.HTTPResponse) -> Iterator[Event]:
    """Parse `text/event-stream`: fields per line, a blank line ends an event."""
    kind, ident = "message", None
    data: list[str] = []
    while raw := response.readline():
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield Event(kind, "\n".join(data), ident)
            kind, data = "message", []
            continue
        if line.startswith(":"):
            continue  # a comment: the keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            ident = value
