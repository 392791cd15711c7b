"""The shapes of the control API's requests and answers.

These models are the API's contract: FastAPI validates requests against them
and publishes them in the OpenAPI schema (`/openapi.json`), which the
property-based tests check the daemon against.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from overture.config.model import Condition, OnFailure
from overture.lifecycle import ServiceState


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UpRequest(_Request):
    """What `overture up` selects; nothing named means every service."""

    services: list[str] = Field(default=[], max_length=1000)
    profile: str | None = Field(default=None, max_length=200)
    group: str | None = Field(default=None, max_length=200)
    keep_going: bool = Field(
        default=False,
        description="keep what started when a service fails (default: roll back)",
    )


class DownRequest(_Request):
    """Services to stop with their dependents; nothing named means all."""

    services: list[str] = Field(default=[], max_length=1000)


class Probe(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    ok: bool
    detail: str
    latency: float = Field(description="seconds the check took")


class Service(BaseModel):
    """One service as the daemon sees it now."""

    name: str
    state: ServiceState
    pid: int | None = Field(description="its process (group leader), if it has one")
    uptime: float | None = Field(
        description="seconds since its current process started"
    )
    restarts: int = Field(description="by its restart policy and by request")
    last_probe: Probe | None
    reason: str | None = Field(description="why it went to its current state")
    since: float | None = Field(
        description="when it went to its current state (seconds since the epoch)"
    )
    depends_on: list[str]


class Failure(BaseModel):
    """A service an operation could not bring up, and why."""

    name: str
    state: ServiceState
    reason: str
    logs: list[str] = Field(description="its last output lines")


class Outcome(BaseModel):
    """The result of an operation, once every service it touched has settled."""

    ok: bool = Field(description="false if a service failed or was blocked")
    services: list[Service]
    failed: list[Failure]
    rolled_back: bool = Field(
        default=False, description="what the operation started was stopped again"
    )


class Node(BaseModel):
    name: str
    state: ServiceState


class Edge(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    service: str = Field(alias="from", description="the dependent")
    dependency: str = Field(alias="to")
    condition: Condition
    required: bool
    on_failure: OnFailure


class GraphView(BaseModel):
    """Every service (in start order) and every dependency edge."""

    nodes: list[Node]
    edges: list[Edge]
    seq: int = Field(
        default=0,
        description="the number of the last transition the states reflect; "
        "`/events?since=seq` continues from there",
    )


class LogLine(BaseModel):
    """One line a service printed."""

    model_config = ConfigDict(from_attributes=True)

    service: str
    stream: str
    line: str
    at: float = Field(description="seconds since the epoch")


class Logs(BaseModel):
    lines: list[LogLine]


class Health(BaseModel):
    """The daemon itself."""

    status: Literal["ok", "stopping"]
    pid: int
    version: str
    root: str = Field(description="the project directory")
    uptime: float
    socket: str
    url: str | None = Field(description="the TCP listener, if there is one")


class Error(BaseModel):
    """Every 4xx and 5xx answer: what was wrong, in one sentence."""

    error: str
