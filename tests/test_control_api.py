"""The HTTP API under bad and random requests, over the TCP listener.

One daemon serves the whole module, on the unix socket and on a loopback TCP
port with a bearer token. Property-based tests (schemathesis, on hypothesis)
generate requests from the daemon's own OpenAPI schema, valid and invalid,
and check that none gets a 5xx and every refusal says why.
"""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from helpers import children_tagged, long_running
from test_control import Project, overture, write_project

SERVICES: dict[str, Any] = {
    "a": {"command": long_running("a ready")},
    "b": {"command": long_running("b ready"), "depends_on": ["a"]},
}
# Streams never end by themselves; /shutdown would end the daemon under test.
NOT_FUZZED = ("/events", "/logs/stream", "/shutdown")
EXAMPLES = 12


class Tcp:
    def __init__(self, project: Project) -> None:
        self.project = project
        self.url = str(project.record()["url"])
        self.token = (project.state / "token").read_text().strip()

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def tcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tcp]:
    """A daemon with `a` and `b` up, listening on 127.0.0.1 too."""
    monkeypatch = pytest.MonkeyPatch()
    root = write_project(tmp_path_factory.mktemp("api") / "project", SERVICES)
    project = Project(root)
    with children_tagged(monkeypatch):
        try:
            result = overture(root, "up", "-d", "--listen", "127.0.0.1:0")
            assert result.returncode == 0, result.stderr
            yield Tcp(project)
        finally:
            project.stop_daemon()
    monkeypatch.undo()


def test_the_socket_and_the_token_are_private(tcp: Tcp) -> None:
    """Only the owner can use the socket or read the token."""
    state = tcp.project.state
    assert stat.S_IMODE((state / "daemon.sock").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "token").stat().st_mode) == 0o600
    assert len(tcp.token) >= 32


def test_over_tcp_reads_are_open_and_changes_need_the_token(tcp: Tcp) -> None:
    """GET works without a token; POST without it, or with a wrong one, is 401."""
    with tcp.client() as anonymous:
        assert anonymous.get("/services").status_code == 200
        refused = anonymous.post("/services/a/restart")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "needs the bearer token" in refused.json()["error"]
        for path in ("/up", "/down", "/shutdown", "/services/b/stop"):
            assert anonymous.post(path).status_code == 401, path
    with tcp.client("not-the-token") as wrong:
        refused = wrong.post("/services/a/restart")
        assert refused.status_code == 401
        assert (
            refused.json()["error"] == "the bearer token is wrong; see .overture/token"
        )
    with tcp.client(tcp.token) as allowed:
        outcome = allowed.post("/services/a/restart")
        assert outcome.status_code == 200
        assert outcome.json()["ok"] is True
    with tcp.project.api() as local:
        assert local.post("/services/b/start").status_code == 200  # socket: no token


def test_a_foreign_host_header_is_refused(tcp: Tcp) -> None:
    """A page reaching the port under another name (DNS rebinding) gets 403."""
    with tcp.client(Host="evil.example") as rebound:
        refused = rebound.get("/services")
    assert refused.status_code == 403
    assert "evil.example" in refused.json()["error"]


BAD_REQUESTS = [
    ("GET /services/nope", None, 404, "unknown service 'nope'; valid services: a, b"),
    ("GET /logs?service=a&service=zz", None, 404, "unknown service 'zz'"),
    ("GET /services/a/logs?n=-1", None, 422, "query.n: Input should be greater"),
    ("GET /events?since=x", None, 422, "query.since: Input should be a valid integer"),
    ("POST /up", {"services": "a"}, 422, "body.services: Input should be a valid list"),
    ("POST /up", {"service": ["a"]}, 422, "body.service: Extra inputs"),
    ("POST /up", {"profile": "nope"}, 404, "unknown profile 'nope'"),
    ("POST /down", {"services": ["a", "x"]}, 404, "unknown service 'x'"),
    ("GET /nowhere", None, 404, "no route for GET /nowhere"),
    ("DELETE /services/a", None, 405, "DELETE /services/a is not allowed"),
]


@pytest.mark.parametrize(("request_line", "body", "status", "says"), BAD_REQUESTS)
def test_bad_requests_get_a_4xx_that_says_why(
    tcp: Tcp, request_line: str, body: Any, status: int, says: str
) -> None:
    """Each malformed or unknown request is refused with a one-line reason."""
    method, path = request_line.split(" ")
    with tcp.client(tcp.token) as client:
        response = client.request(method, path, json=body)
    assert response.status_code == status
    assert says in response.json()["error"]


def test_a_malformed_json_body_is_a_422(tcp: Tcp) -> None:
    """A body that is not JSON is refused, not a crash."""
    with tcp.client(tcp.token) as client:
        response = client.post(
            "/up", content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422
    assert response.json()["error"].startswith("body.")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"X-Note: a\x00b", "illegal header line: bytearray(b'X-Note: a\\x00b')"),
        (b"X-Note: a\x0cb", "illegal header line: bytearray(b'X-Note: a\\x0cb')"),
        (b"Bad Header: x", "illegal header line: bytearray(b'Bad Header: x')"),
    ],
)
def test_a_request_http_cannot_parse_is_refused_in_json(
    tcp: Tcp, header: bytes, reason: str
) -> None:
    """Below the routes too, a malformed request gets `{"error": why}`."""
    host, port = tcp.url.removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: %s\r\n%s\r\n\r\n"
            % (f"{host}:{port}".encode(), header)
        )
        answer = b""
        while chunk := conn.recv(65536):  # the server closes after the answer
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"] == f"invalid HTTP request: {reason}"


def test_random_requests_from_the_schema_never_get_a_5xx(tcp: Tcp) -> None:
    """Valid and invalid requests from /openapi.json: no 5xx; each 4xx says why."""
    with tcp.client() as client:
        raw = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(raw)
    headers = {"Authorization": f"Bearer {tcp.token}"}
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results)  # the schema itself is valid
    fuzzed = [op for op in operations if op.path not in NOT_FUZZED]
    assert len(fuzzed) >= 12

    for operation, mode, names in _variants(fuzzed):

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            # No shrinking: each step is a request, and a long search would
            # outlast the test's timeout. The failing request is in the message.
            phases=[Phase.generate],
        )
        @given(case=operation.as_strategy(mode, path_parameters=names))
        def check(case: Any) -> None:
            response = case.call(base_url=tcp.url, headers=headers, timeout=30)
            assert response.status_code < 500, (case.as_curl_command(), response.text)
            if response.status_code >= 400:
                assert response.json()["error"], case.as_curl_command()

        check()


def _variants(
    operations: list[Any],
) -> Iterator[tuple[Any, GenerationMode, dict[str, str] | None]]:
    """Each operation with valid and invalid inputs; with a real service too."""
    for operation in operations:
        has_inputs = bool(list(operation.iter_parameters())) or bool(operation.body)
        for mode in GenerationMode:
            if mode is GenerationMode.POSITIVE or has_inputs:
                yield operation, mode, None
        if "{name}" in operation.path:
            yield operation, GenerationMode.POSITIVE, {"name": "b"}


def test_the_openapi_schema_names_every_route(tcp: Tcp) -> None:
    """The schema documents the API's routes with the token as its security."""
    with tcp.client() as client:
        raw = client.get("/openapi.json").json()
    assert set(raw["paths"]) == {
        "/healthz",
        "/services",
        "/services/{name}",
        "/services/{name}/start",
        "/services/{name}/stop",
        "/services/{name}/restart",
        "/services/{name}/logs",
        "/up",
        "/down",
        "/shutdown",
        "/graph",
        "/logs",
        "/logs/stream",
        "/events",
        "/metrics",
    }
    assert "HTTPBearer" in raw["components"]["securitySchemes"]
