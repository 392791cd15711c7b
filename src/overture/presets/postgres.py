"""postgres preset: a PostgreSQL cluster in the service's data directory.

First start: `initdb` creates the cluster with the configured superuser
(`db_user`, default "postgres"); with a `password` it requires SCRAM password
authentication, without one it trusts connections from loopback (the server
listens on `host` only and pg_hba.conf admits only 127.0.0.1 and ::1). Once
the server is ready, `database` is created if it is missing. A warm start
finds PG_VERSION and runs nothing before the server.

PostgreSQL refuses to run as root. When Overture runs as root the server
runs as `user` if set, else as the system account "overture", created with
useradd on first use; that account owns the data directory and must be able
to enter every directory above it.

The server is started in the foreground with its settings on the command
line (port, listen address, no Unix socket), so a changed port needs no
edit of postgresql.conf. A changed `password` or `db_user` after the first
start is not applied: the cluster keeps the role it was created with.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import signal
import stat
import time
from pathlib import Path
from urllib.parse import quote

from overture.config.model import Probe, Stop
from overture.errors import StartError
from overture.presets.base import Launch, Preset

log = logging.getLogger(__name__)

DEFAULT_PORT = 5432
DEFAULT_SUPERUSER = "postgres"
SERVICE_ACCOUNT = "overture"
"""The system account the server runs as when Overture runs as root."""

# SIGINT is PostgreSQL's fast shutdown: it ends client sessions and writes a
# checkpoint. SIGTERM (smart shutdown) would wait for every client to leave.
STOP = Stop(signal=signal.SIGINT, timeout=30.0)


class PostgresPreset(Preset):
    executable = "postgres"
    default_port = DEFAULT_PORT

    @property
    def superuser(self) -> str:
        return self.service.db_user or DEFAULT_SUPERUSER

    @property
    def account(self) -> str | None:
        """The OS user the server runs as; None: the one running Overture."""
        if self.service.user is not None:
            return self.service.user
        return SERVICE_ACCOUNT if os.geteuid() == 0 else None

    def dsn(self, database: str = "postgres") -> str:
        """A URL for `database` as the superuser, over TCP."""
        credentials = quote(self.superuser, safe="")
        if self.service.password:
            credentials += ":" + quote(self.service.password, safe="")
        host = self.service.host
        host = f"[{host}]" if ":" in host else host
        return f"postgresql://{credentials}@{host}:{self.port}/{quote(database)}"

    def probe(self) -> Probe:
        # The maintenance database: `database` only exists after after_ready.
        return Probe(postgres=self.dsn())

    def launch(self) -> Launch:
        argv = [
            str(self.binary),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.service.host}",
            # A socket path under a deep data directory can pass the 107-byte
            # limit, and the distribution default (/var/run/postgresql) may not
            # be writable by the account: TCP on loopback is enough.
            "-c",
            "unix_socket_directories=",
        ]
        return Launch(argv=argv, ready=self.probe(), stop=STOP, user=self.account)

    async def prepare(self) -> None:
        account = await self._ensure_account()
        self._ensure_reachable(account)
        if (self.data_dir / "PG_VERSION").exists():
            return
        await self._initdb(account)

    async def after_ready(self) -> None:
        database = self.service.database
        if not database:
            return
        import asyncpg  # here: most commands that load presets never need it

        conn = await asyncpg.connect(self.dsn(), timeout=10)
        try:
            found = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", database
            )
            if found:
                return
            try:
                await conn.execute(f"CREATE DATABASE {quote_ident(database)}")
            except asyncpg.DuplicateDatabaseError:
                return  # created meanwhile by someone else: the goal holds
            log.info("service=%s created database=%s", self.name, database)
        finally:
            await conn.close()

    async def _ensure_account(self) -> pwd.struct_passwd | None:
        """The account's passwd entry, creating "overture" if it is missing."""
        name = self.account
        if name is None:
            return None
        try:
            return pwd.getpwnam(name)
        except KeyError:
            if name != SERVICE_ACCOUNT:
                raise StartError(
                    f"user {name!r} (from `user`) does not exist on this system"
                ) from None
        await _create_system_account(name)
        log.info("service=%s created system user=%s", self.name, name)
        return pwd.getpwnam(name)

    def _ensure_reachable(self, account: pwd.struct_passwd | None) -> None:
        """Create the data directory, owned by `account`, and check its path."""
        data_dir = self.data_dir
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if account is None:
            return
        fresh = not (data_dir / "PG_VERSION").exists()
        if fresh and data_dir.stat().st_uid != account.pw_uid:
            os.chown(data_dir, account.pw_uid, account.pw_gid)
        blocked = _first_closed_parent(data_dir, account)
        if blocked is not None:
            mode = stat.S_IMODE(blocked.stat().st_mode)
            raise StartError(
                f"user {account.pw_name!r} runs PostgreSQL but cannot enter "
                f"{blocked} (mode {mode:04o}) on the way to its data directory "
                f"{data_dir}; allow it (chmod o+x {blocked}), or set `data_dir` "
                "to a directory it can reach, or set `user`"
            )
        blocked = _first_closed_parent(self.binary, account)
        if blocked is not None:
            mode = stat.S_IMODE(blocked.stat().st_mode)
            raise StartError(
                f"user {account.pw_name!r} runs PostgreSQL but cannot enter "
                f"{blocked} (mode {mode:04o}) on the way to its program "
                f"{self.binary}; allow it (chmod o+x {blocked}), or set `binary` "
                "to a PostgreSQL it can reach"
            )

    async def _initdb(self, account: pwd.struct_passwd | None) -> None:
        initdb = _initdb_beside(self.binary)
        argv = [
            str(initdb),
            "-D",
            str(self.data_dir),
            "-U",
            self.superuser,
            "--encoding=UTF8",
            "--locale=C",
        ]
        # The password travels in a file beside the data directory (initdb
        # wants that directory empty), readable only by the account.
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pwfile"
        if self.service.password:
            _write_private(pwfile, self.service.password + "\n", account)
            argv += [
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
            ]
        else:
            argv.append("--auth=trust")

        began = time.monotonic()
        try:
            code, output = await _run(argv, account)
        finally:
            pwfile.unlink(missing_ok=True)
        if code != 0:
            tail = "\n".join(output.splitlines()[-5:])
            raise StartError(f"initdb failed (exit status {code}):\n{tail}")
        log.info(
            "service=%s initdb done after=%.2fs data_dir=%s",
            self.name,
            time.monotonic() - began,
            self.data_dir,
        )


def quote_ident(name: str) -> str:
    """`name` as an SQL identifier, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def _initdb_beside(binary: Path) -> Path:
    # A symlinked postgres (/usr/local/bin/postgres -> .../15/bin/postgres)
    # may have initdb beside the link or only beside its target.
    for directory in (binary.parent, binary.resolve().parent):
        candidate = directory / "initdb"
        if os.access(candidate, os.X_OK):
            return candidate
    raise StartError(
        f"no initdb beside {binary}; `binary` must name the postgres executable "
        "of an installation that also has initdb"
    )


def _first_closed_parent(path: Path, account: pwd.struct_passwd) -> Path | None:
    """The first directory above `path` that `account` may not enter."""
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for directory in reversed(path.parents):
        info = directory.stat()
        if info.st_uid == account.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return directory
    return None


def _write_private(path: Path, text: str, account: pwd.struct_passwd | None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        if account is not None:
            os.fchown(file.fileno(), account.pw_uid, account.pw_gid)
        file.write(text)


async def _run(argv: list[str], account: pwd.struct_passwd | None) -> tuple[int, str]:
    """Run `argv` to completion as `account`; its exit status and output."""
    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None
    if account is not None and account.pw_uid != os.geteuid():
        uid, gid, groups = account.pw_uid, account.pw_gid, []
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        user=uid,
        group=gid,
        extra_groups=groups,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def _create_system_account(name: str) -> None:
    argv = [
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        name,
    ]
    try:
        code, output = await _run(argv, None)
    except FileNotFoundError:
        code, output = 127, "useradd not found"
    # Exit status 9: created meanwhile (by another service's prepare).
    if code not in (0, 9):
        raise StartError(
            f"cannot create system user {name!r} to run PostgreSQL as "
            f"(useradd: {output.strip()}); create it, or set `user` to an "
            "unprivileged account"
        )


PRESET = PostgresPreset
