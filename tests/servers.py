"""Real PostgreSQL, Redis and Tansu servers for the preset and probe tests.

A test builds a preset, runs its `prepare`, starts its launch command line
the way the process runner does (its own session, the launch user and
environment) and waits on the preset's native probe: readiness is a probe
answer, never a sleep. `Servers` ends every process it started when the test
ends, passed or failed.

pytest's `tmp_path` is private to root (mode 0700), and PostgreSQL runs as
an unprivileged account when the tests run as root, so the servers' data
lives in `reachable_dir()` instead: a fresh directory that others may enter
but not list.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from overture.config.model import Project, Service
from overture.presets import Launch, Preset, load_preset
from overture.probes import Checker, ProbeContext, ProbeResult, build_checker

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on a fresh event loop in debug mode (leaks become errors)."""
    return asyncio.run(coro, debug=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def reachable_dir() -> Iterator[Path]:
    """A new directory under /tmp that any user may enter; removed at the end."""
    path = Path(tempfile.mkdtemp(prefix="overture-test-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_preset(kind: str, root: Path, **options: Any) -> Preset:
    """The preset for a service `kind` with `options`, data in `root/kind`."""
    options.setdefault("port", free_port())
    options.setdefault("data_dir", root / kind)
    service = Service.model_validate({"preset": kind, **options})
    project = Project(services={kind: service}, root=root)
    return load_preset(kind, service, project)


@dataclass
class Server:
    launch: Launch
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Servers:
    """Starts launches as processes; `close` kills whatever is still running."""

    def __init__(self) -> None:
        self.started: list[Server] = []

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(
        self,
        launch: Launch,
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> Server:
        """Spawn `launch` as the runner would: `env` over ours, then its own."""
        uid: int | None = None
        gid: int | None = None
        groups: list[int] | None = None
        if launch.user is not None and os.geteuid() == 0:
            account = pwd.getpwnam(launch.user)
            uid, gid, groups = account.pw_uid, account.pw_gid, []
        with log.open("ab") as out:
            process = subprocess.Popen(
                [*launch.argv, *(extra_args or [])],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {}), **launch.env},
                cwd=launch.cwd,
                user=uid,
                group=gid,
                extra_groups=groups,
                start_new_session=True,
            )
        server = Server(launch, process, log)
        self.started.append(server)
        return server

    def stop(self, server: Server) -> int:
        """The launch's stop signal to the group; the exit status."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, server.launch.stop.signal)
        return server.process.wait(timeout=server.launch.stop.timeout)

    def close(self) -> None:
        for server in self.started:
            if server.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.process.pid, signal.SIGKILL)
                server.process.wait()


async def wait_ready(
    checker: Checker, server: Server | None = None, timeout: float = 30.0
) -> list[ProbeResult]:
    """Check until ready; every answer, the passing one last.

    Fails at once, with the server's last log lines, if the server exits.
    """
    answers: list[ProbeResult] = []
    try:
        async with asyncio.timeout(timeout):
            while not (answer := await checker.check()).ok:
                answers.append(answer)
                if server is not None and server.process.poll() is not None:
                    raise AssertionError(
                        f"server exited ({server.process.returncode}) before "
                        f"ready:\n{server.log_tail()}"
                    )
                # Polling the probe is the wait: a server offers no event.
                await asyncio.sleep(0.005)
    except TimeoutError:
        last = answers[-1].detail if answers else "no answer"
        raise AssertionError(f"not ready after {timeout}s: {last}") from None
    answers.append(answer)
    return answers


async def start_ready(
    servers: Servers, preset: Preset, log: Path, **start: Any
) -> tuple[Server, list[ProbeResult]]:
    """prepare, launch, wait for the native probe: the start sequence."""
    await preset.prepare()
    launch = preset.launch()
    server = servers.start(launch, log, **start)
    checker = build_checker(launch.ready, ProbeContext(preset.name))
    try:
        answers = await wait_ready(checker, server)
    finally:
        await checker.close()
    return server, answers
