"""The daemon's listeners: the unix socket, and an optional TCP port.

Both sockets are bound here rather than by uvicorn, for two reasons: the unix
socket must never exist with a wider mode than asked (uvicorn would create it
0666 and chmod it afterwards), and a TCP address must be checked, and a port
in use reported, before anything starts. Standard library only: the client
checks a `--listen` value before it spawns a daemon.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

from overture.control.paths import socket_address
from overture.errors import OvertureError, UsageError

_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


class ListenError(OvertureError):
    """A listener could not be opened (the port is taken, say)."""


def is_loopback(host: str) -> bool:
    """True for a loopback address or name (`127.0.0.1`, `::1`, `localhost`)."""
    if host.lower().rstrip(".") in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(value: str, allow_remote: bool = False) -> tuple[str, int]:
    """(host, port) from `PORT`, `HOST:PORT` or `[V6]:PORT`; host 127.0.0.1.

    Raises `UsageError` for a malformed value, and for a host that is not a
    loopback address unless `allow_remote`.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(
            f"--listen {value!r}: the port must be a number from 0 to 65535 "
            "(0: any free port); valid forms: PORT, HOST:PORT, [V6]:PORT"
        )
    if not is_loopback(host) and not allow_remote:
        raise UsageError(
            f"--listen {value!r}: {host} is not a loopback address, so other "
            "machines could reach the API; use 127.0.0.1 or ::1, or add "
            "--allow-remote (every call then needs the token)"
        )
    return host, int(port_text)


_BACKLOG = 2048


def bind_unix(path: Path, mode: int) -> socket.socket:
    """A listening unix socket at `path` with exactly `mode`.

    Only the holder of the project lock may call this: it replaces whatever
    socket a dead daemon left there.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The mode of a new socket file comes from the umask: set it so that the
    # file never exists, even for a moment, with more access than `mode`.
    previous = os.umask(0o777 & ~mode)
    try:
        with socket_address(path) as address:
            sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot create the socket {path}: {exc.strerror}") from None
    finally:
        os.umask(previous)
    os.chmod(path, mode)
    # Listening at once: a client that comes before the API server has
    # started waits in the backlog instead of being refused.
    sock.listen(_BACKLOG)
    sock.setblocking(False)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port); port 0 takes a free one."""
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ListenError(
            f"cannot listen on {host}:{port}: {exc.strerror}; "
            "choose another port with --listen, or 0 for any free one"
        ) from None
    sock.listen(_BACKLOG)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    """`http://HOST:PORT/` of a bound TCP socket (with its real port)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"
