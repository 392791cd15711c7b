"""The config model: what a project file may say, with types and defaults.

TOML, YAML and JSON all load to these classes. Every model forbids unknown
keys, so a typo is an error (the loader turns it into a message with the file,
the line and the nearest valid key).
"""

from __future__ import annotations

import math
import re
import signal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds from `1.5`, `"1.5"`, `"250ms"`, `"10s"`, `"2m"` or `"1h30m"`."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        # Interpolated values are always strings: "${TIMEOUT:-10}" is 10 seconds.
        value = float(value)
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{value!r} is not a duration; it must be finite and >= 0")
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _DURATION.findall(text)
        if text and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    raise ValueError(
        f"{value!r} is not a duration; use a number of seconds or a string "
        "like '500ms', '10s', '2m', '1h30m' (units: ms, s, m, h)"
    )


def parse_signal(value: Any) -> signal.Signals:
    """A signal from `"SIGTERM"`, `"TERM"`, `"term"` or its number."""
    valid = sorted(s.name for s in signal.Signals if not s.name.startswith("SIGRT"))
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # an interpolated "${STOPSIGNAL:-15}" is text
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal.Signals(value)
        except ValueError:
            pass
    elif isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name in valid:
            return signal.Signals[name]
    raise ValueError(f"{value!r} is not a signal; valid signals: {', '.join(valid)}")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Signal = Annotated[signal.Signals, BeforeValidator(parse_signal)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(StrEnum):
    STARTED = "started"
    HEALTHY = "healthy"
    COMPLETED = "completed"


class OnFailure(StrEnum):
    """What a dependent does when this dependency fails or restarts."""

    IGNORE = "ignore"
    DEGRADE = "degrade"
    RESTART = "restart"
    STOP = "stop"


class Dependency(_Model):
    condition: Condition = Condition.STARTED
    required: bool = True
    on_failure: OnFailure = OnFailure.DEGRADE


PROBE_KINDS = ("tcp", "http", "exec", "log", "postgres", "redis", "kafka")


class Probe(_Model):
    """A check; exactly one kind key is set.

    - `tcp`: `"host:port"` or a port (on 127.0.0.1); connects.
    - `http`: a URL; a GET answering 2xx or 3xx (or `status`) passes.
    - `exec`: an argument list; exit status 0 passes.
    - `log`: a regular expression; passes once a line of the service matches.
    - `postgres`: a DSN; connects and runs `SELECT 1`.
    - `redis`: a URL; PING answers and the server is not LOADING.
    - `kafka`: `"host:port"` bootstrap; a metadata request answers (and shows
      `topics`, if given).
    """

    tcp: str | int | None = None
    http: str | None = None
    exec: list[str] | None = None
    log: str | None = None
    postgres: str | None = None
    redis: str | None = None
    kafka: str | None = None

    status: list[int] | None = None
    topics: list[str] = []
    interval: Duration = 1.0
    """Between live checks; a ready probe without one polls adaptively."""
    timeout: Duration = 1.0
    start_period: Duration = 0.0
    failure_threshold: int = Field(3, ge=1)
    success_threshold: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _one_kind(self) -> Probe:
        kinds = [k for k in PROBE_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            given = ", ".join(kinds) or "none"
            raise ValueError(
                f"a probe needs exactly one kind (given: {given}); "
                f"valid kinds: {', '.join(PROBE_KINDS)}"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in PROBE_KINDS if getattr(self, k) is not None)

    @property
    def target(self) -> Any:
        return getattr(self, self.kind)


class Stop(_Model):
    signal: Signal = signal.SIGTERM
    timeout: Duration = 10.0
    command: list[str] | None = None


class RestartPolicy(StrEnum):
    NO = "no"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"


class Restart(_Model):
    policy: RestartPolicy = RestartPolicy.NO
    max: int = Field(5, ge=0)
    window: Duration = 60.0
    initial_delay: Duration = 0.5
    factor: float = Field(2.0, ge=1.0)
    max_delay: Duration = 30.0
    jitter: float = Field(0.1, ge=0.0, le=1.0)


class Topic(_Model):
    name: str
    partitions: int = Field(1, ge=1)


RUNNERS = ("process", "external")
PRESETS = ("postgres", "redis", "kafka")


class Service(_Model):
    # How it runs.
    runner: Literal["process", "external"] = "process"
    preset: Literal["postgres", "redis", "kafka"] | None = None
    command: list[str] | str | None = None
    shell: bool = False
    cwd: Path | None = None
    env: dict[str, str] = {}
    env_file: list[Path] = []
    user: str | None = None
    oneshot: bool = False

    # How it relates to the others.
    depends_on: dict[str, Dependency] = {}
    groups: list[str] = []

    # How it is watched, stopped and restarted.
    ready: Probe | None = None
    live: Probe | None = None
    startup_timeout: Duration = 60.0
    stop: Stop = Stop()
    restart: Restart = Restart()

    # Preset options (meaningful only with `preset`).
    binary: Path | None = None
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535)
    data_dir: Path | None = None
    database: str | None = None
    db_user: str | None = None
    password: str | None = None
    appendonly: bool = True
    topics: list[Topic] = []

    @field_validator("env_file", mode="before")
    @classmethod
    def _env_file_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | Path) else value

    @field_validator("depends_on", mode="before")
    @classmethod
    def _depends_on_forms(cls, value: Any) -> Any:
        # ["a", "b"] means started; {a = "healthy"} is a condition; a table is
        # the full form.
        if isinstance(value, list):
            return {name: {} for name in value}
        if isinstance(value, dict):
            return {
                name: {"condition": dep} if isinstance(dep, str) else dep
                for name, dep in value.items()
            }
        return value

    @field_validator("topics", mode="before")
    @classmethod
    def _topic_forms(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": t} if isinstance(t, str) else t for t in value]
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_values(cls, value: Any) -> Any:
        # Numbers and booleans in env tables are common; keep their text.
        if isinstance(value, dict):
            return {
                k: (str(v).lower() if isinstance(v, bool) else str(v))
                if isinstance(v, int | float | bool)
                else v
                for k, v in value.items()
            }
        return value

    @model_validator(mode="after")
    def _command_rules(self) -> Service:
        if isinstance(self.command, str) and not self.shell:
            raise ValueError(
                "command is a string but shell is false; give an argument list "
                '(command = ["prog", "arg"]) or set shell = true'
            )
        if self.runner == "process" and self.command is None and self.preset is None:
            raise ValueError(
                "a process service needs a command (or a preset: "
                f'{", ".join(PRESETS)}), or runner = "external"'
            )
        if self.runner == "external" and self.ready is None and self.preset is None:
            raise ValueError(
                "an external service needs a ready probe: Overture only watches it"
            )
        return self

    def argv(self) -> list[str]:
        """The command as an argument list (through /bin/sh only with shell)."""
        if isinstance(self.command, str):
            return ["/bin/sh", "-c", self.command]
        return list(self.command or [])


class Project(_Model):
    """A whole config file, after interpolation."""

    services: dict[str, Service]
    profiles: dict[str, list[str]] = {}

    # Where the file was, so relative paths and `.overture/` resolve there.
    root: Path = Path(".")
    source: Path | None = None

    @field_validator("services")
    @classmethod
    def _service_names(cls, value: dict[str, Service]) -> dict[str, Service]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ValueError(
                    f"service name {name!r} is not valid; use letters, digits, "
                    "'_', '.' and '-', starting with a letter or digit"
                )
        return value

    @property
    def state_dir(self) -> Path:
        return self.root / ".overture"
