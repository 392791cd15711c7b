"""redis preset: a Redis server persisting into the service's data directory.

Every start writes `redis.conf` in the data directory from the config (the
file is Overture's: edits to it are overwritten) and runs `redis-server` on
it in the foreground. The append-only file is on by default (`appendonly`),
fsynced every second; SIGTERM makes Redis flush it (and write a final RDB
snapshot) before it exits, so a graceful stop keeps every acknowledged write.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from urllib.parse import quote

from overture.config.model import Probe, Stop
from overture.presets.base import Launch, Preset

DEFAULT_PORT = 6379
CONFIG_NAME = "redis.conf"

# The final save on SIGTERM grows with the data set; give it time.
STOP = Stop(signal=signal.SIGTERM, timeout=30.0)


class RedisPreset(Preset):
    executable = "redis-server"
    default_port = DEFAULT_PORT

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_NAME

    def url(self) -> str:
        credentials = ""
        if self.service.password:
            credentials = ":" + quote(self.service.password, safe="") + "@"
        host = self.service.host
        host = f"[{host}]" if ":" in host else host
        return f"redis://{credentials}{host}:{self.port}/0"

    def probe(self) -> Probe:
        return Probe(redis=self.url())

    def launch(self) -> Launch:
        argv = [str(self.binary), str(self.config_path)]
        return Launch(argv=argv, ready=self.probe(), stop=STOP)

    def config_text(self) -> str:
        """The redis.conf this service runs with."""
        lines = [
            f"# Written by Overture for service {self.name}; rewritten at every start.",
            f"bind {self.service.host}",
            f"port {self.port}",
            f"dir {_quote(str(self.data_dir))}",
            "daemonize no",
            'logfile ""',
            f"appendonly {'yes' if self.service.appendonly else 'no'}",
            "appendfsync everysec",
        ]
        if self.service.password:
            lines.append(f"requirepass {_quote(self.service.password)}")
        return "\n".join(lines) + "\n"

    async def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        text = self.config_text()
        path = self.config_path
        if path.exists() and path.read_text() == text:
            return
        # Private: it may hold the password.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text)


def _quote(value: str) -> str:
    """A redis.conf string argument (double-quoted, escapes for `\\` and `"`)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


PRESET = RedisPreset
