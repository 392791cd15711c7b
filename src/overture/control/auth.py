"""Who may call the API, decided by the listener a request came through.

- The unix socket: whoever can open it. Its mode (0600 by default) is the
  check, as for any local daemon's socket.
- A TCP listener on a loopback address: reads are open, so the dashboard's
  page and event stream work in a browser; every call that changes
  something needs the bearer token. A Host header that names no loopback
  host is refused, which defeats DNS rebinding (a web page making the browser
  read the API through a name that resolves to 127.0.0.1).
- A TCP listener on any other address (only when explicitly forced): every
  call needs the token.

Each server wraps the app with `tag`, which records its listener in the ASGI
scope; a request without a tag is treated as remote, the strictest case.
"""

from __future__ import annotations

import hmac
from enum import StrEnum
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from overture.control.listen import is_loopback

SCOPE_KEY = "overture.listener"

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Listener(StrEnum):
    UNIX = "unix"
    LOOPBACK = "loopback"
    REMOTE = "remote"


def tag(app: ASGIApp, listener: Listener) -> ASGIApp:
    """`app` with every request marked as having come through `listener`."""

    async def tagged(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, SCOPE_KEY: listener.value}, receive, send)

    return tagged


def _host_name(header: str) -> str:
    """The host of a Host header, without its port (`[::1]:80` -> `::1`)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


_bearer = HTTPBearer(
    auto_error=False,
    description="The token in `.overture/token`; needed over TCP for every "
    "call that changes something (for every call on a non-loopback address).",
)


class TokenCheck:
    """A FastAPI dependency that applies the rules above to one request."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[
            HTTPAuthorizationCredentials | None, Security(_bearer)
        ] = None,
    ) -> None:
        listener = request.scope.get(SCOPE_KEY, Listener.REMOTE.value)
        if listener == Listener.UNIX:
            return
        if listener == Listener.LOOPBACK:
            host = _host_name(request.headers.get("host", ""))
            if not is_loopback(host):
                raise HTTPException(
                    403,
                    f"the Host header names {host!r}; this listener answers "
                    "only for a loopback host (127.0.0.1, ::1, localhost)",
                )
            if request.method in _SAFE_METHODS:
                return
        self._check(credentials)

    def _check(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise HTTPException(
                401,
                "this call needs the bearer token over TCP: send "
                "'Authorization: Bearer <token>' with the token from .overture/token",
                headers=challenge,
            )
        given = credentials.credentials.encode()
        if self.token is None or not hmac.compare_digest(given, self.token.encode()):
            raise HTTPException(
                401, "the bearer token is wrong; see .overture/token", headers=challenge
            )
