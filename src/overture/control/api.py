"""The control API: the daemon's services, operations, streams and metrics.

Every answer is JSON except the two event streams (`text/event-stream`), the
metrics (Prometheus text) and the dashboard's files. Every error is JSON too,
`{"error": "<one sentence>"}`: 401 without the token where one is needed,
404 for an unknown service, profile, group or path, 422 for a malformed
request (with pydantic's `detail` list as well), 503 while shutting down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from overture import __version__
from overture.control import schema
from overture.control.auth import TokenCheck
from overture.control.controller import Controller, ShuttingDown
from overture.control.metrics import CONTENT_TYPE, Metrics
from overture.control.streams import EventFeed, Fanout, drain, encode
from overture.errors import UsageError
from overture.observe.output import LogLine

ServiceName = Annotated[str, PathParam(max_length=200, description="a service")]
Lines = Annotated[int, Query(ge=0, le=10_000, description="how many lines")]

_KEEPALIVE = b": keep-alive\n\n"
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": schema.Error, "description": "no bearer token, or a wrong one"},
    403: {"model": schema.Error, "description": "the Host is not loopback"},
    404: {"model": schema.Error, "description": "an unknown name"},
    503: {"model": schema.Error, "description": "the daemon is shutting down"},
}
_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "server-sent events, until the daemon stops",
    }
}


@dataclass
class Backend:
    """What the API serves: the daemon's parts, seen from the routes."""

    controller: Controller
    events: EventFeed
    lines: Fanout[LogLine]
    metrics: Metrics
    health: Callable[[], schema.Health]
    shutdown: Callable[[], Awaitable[schema.Outcome]]
    """Stops every service, then the daemon."""
    token: str | None = None


def create_app(backend: Backend) -> FastAPI:
    app = FastAPI(
        title="Overture control API",
        version=__version__,
        description="Services, their states and operations on them, "
        "lifecycle events, output and metrics of one project's daemon.",
    )
    app.include_router(_routes(backend))
    _add_error_handlers(app)
    _add_dashboard(app)
    return app


def _routes(backend: Backend) -> APIRouter:
    controller = backend.controller
    router = APIRouter(
        dependencies=[Depends(TokenCheck(backend.token))], responses=_ERRORS
    )

    @router.get("/healthz", tags=["daemon"])
    async def healthz() -> schema.Health:
        """The daemon itself: answers as long as it runs."""
        return backend.health()

    @router.get("/services", tags=["services"])
    async def services() -> list[schema.Service]:
        """Every service, in start order, with its state and why."""
        return controller.services()

    @router.get("/services/{name}", tags=["services"])
    async def service(name: ServiceName) -> schema.Service:
        return controller.service(name)

    @router.post("/services/{name}/start", tags=["services"])
    async def start(name: ServiceName) -> schema.Outcome:
        """Start the service and what it needs; answers once they settled."""
        return await controller.start(name)

    @router.post("/services/{name}/stop", tags=["services"])
    async def stop(name: ServiceName) -> schema.Outcome:
        """Stop the service, and first every service that depends on it."""
        return await controller.stop(name)

    @router.post("/services/{name}/restart", tags=["services"])
    async def restart(name: ServiceName) -> schema.Outcome:
        """Stop the service and its running dependents, then start them again."""
        return await controller.restart(name)

    @router.get("/services/{name}/logs", tags=["output"])
    async def service_logs(name: ServiceName, n: Lines = 100) -> schema.Logs:
        """The service's last output lines (kept in memory since it started)."""
        return controller.logs([name], n)

    @router.post("/up", tags=["services"])
    async def up(
        request: Annotated[schema.UpRequest | None, Body()] = None,
    ) -> schema.Outcome:
        """Start a selection (as `overture up`); answers once it settled."""
        request = request or schema.UpRequest()
        return await controller.up(
            request.services, request.profile, request.group, request.keep_going
        )

    @router.post("/down", tags=["services"])
    async def down(
        request: Annotated[schema.DownRequest | None, Body()] = None,
    ) -> schema.Outcome:
        """Stop services and their dependents (all of them if none is named)."""
        return await controller.down((request or schema.DownRequest()).services)

    @router.post("/shutdown", tags=["daemon"])
    async def shutdown() -> schema.Outcome:
        """Stop every service, then the daemon."""
        return await backend.shutdown()

    @router.get("/graph", tags=["services"])
    async def graph() -> schema.GraphView:
        """The dependency graph; an edge goes from a service to a dependency."""
        return controller.graph_view().model_copy(update={"seq": backend.events.count})

    @router.get("/logs", tags=["output"])
    async def logs(
        service: Annotated[list[str] | None, Query(max_length=1000)] = None,
        n: Lines = 100,
    ) -> schema.Logs:
        """The last lines of some services (all if none named), by time."""
        return controller.logs(service or [], n)

    @router.get("/logs/stream", tags=["output"], responses=_STREAM)
    async def logs_stream(
        service: Annotated[list[str] | None, Query(max_length=1000)] = None,
        n: Lines = 0,
    ) -> StreamingResponse:
        """The last `n` lines, then every new line, as `line` events."""
        names = service or []
        controller.logs(names, 0)  # unknown names answer 404 before streaming
        return _sse(_log_events(backend, names, n))

    @router.get("/events", tags=["events"], responses=_STREAM)
    async def events(
        since: Annotated[int | None, Query(ge=0)] = None,
        last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    ) -> StreamingResponse:
        """Lifecycle transitions as `transition` events, numbered from 1.

        With `since` (or `Last-Event-ID`), the kept transitions numbered above
        it come first; `since=0` replays the whole kept history.
        """
        if since is None and last_event_id is not None and last_event_id.isdigit():
            since = int(last_event_id)
        return _sse(_transition_events(backend.events, since))

    @router.get(
        "/metrics",
        tags=["daemon"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        """Prometheus metrics of every service."""
        names = controller.graph.select().order
        text = backend.metrics.render(names, controller.orchestrator.runtimes)
        return Response(text, media_type=CONTENT_TYPE)

    return router


def _sse(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _transition_events(
    feed: EventFeed, since: int | None
) -> AsyncIterator[bytes]:
    # Subscribing and reading the history happen with no await between them,
    # so no transition can fall between the replay and the live stream.
    with feed.fanout.subscribe() as queue:
        for seq, transition in feed.since(since) if since is not None else ():
            yield encode("transition", {"seq": seq, **transition.as_dict()}, seq)
        async for item in drain(queue):
            if item is None:
                yield _KEEPALIVE
                continue
            seq, transition = item
            yield encode("transition", {"seq": seq, **transition.as_dict()}, seq)


async def _log_events(
    backend: Backend, names: list[str], lines: int
) -> AsyncIterator[bytes]:
    wanted = set(names)
    with backend.lines.subscribe() as queue:
        for line in backend.controller.logs(names, lines).lines:
            yield encode("line", line.model_dump())
        async for record in drain(queue):
            if record is None:
                yield _KEEPALIVE
            elif not wanted or record.service in wanted:
                yield encode("line", schema.LogLine.model_validate(record).model_dump())


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UsageError)
    async def unknown(request: Request, exc: UsageError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 404)

    @app.exception_handler(ShuttingDown)
    async def shutting_down(request: Request, exc: ShuttingDown) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 503)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail)
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route for {where}; the routes are in /openapi.json"
        elif exc.status_code == 405:
            message = f"{where} is not allowed; the routes are in /openapi.json"
        return JSONResponse({"error": message}, exc.status_code, exc.headers)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback (to the daemon's log) after this.
        message = f"internal error in {request.method} {request.url.path}: {exc!r}"
        return JSONResponse({"error": message}, 500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_problem(e) for e in exc.errors()]
        body = {"error": "; ".join(problems), "detail": _plain(exc.errors())}
        return JSONResponse(body, 422)


def _problem(error: dict[str, Any]) -> str:
    """`query.n: Input should be less than or equal to 10000 (got 20000)`."""
    where = ".".join(str(part) for part in error.get("loc", ()))
    text = f"{where}: {error.get('msg', 'invalid')}"
    given = error.get("input")
    if isinstance(given, int | float | str) and len(str(given)) <= 40:
        text += f" (got {given!r})"
    return text


def _plain(errors: Any) -> Any:
    """pydantic's error list with only JSON-safe values (ctx may hold exceptions)."""
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": e.get("type")}
        for e in errors
    ]


def _add_dashboard(app: FastAPI) -> None:
    """The dashboard: three static files, read once; no build step."""
    folder = resources.files("overture.control") / "dashboard"
    files = {
        "index.html": "text/html; charset=utf-8",
        "app.js": "text/javascript; charset=utf-8",
        "style.css": "text/css; charset=utf-8",
    }
    content = {name: (folder / name).read_bytes() for name in files}

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response(content["index.html"], media_type=files["index.html"])

    @app.get("/dashboard/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in content or name == "index.html":
            raise HTTPException(404, f"no dashboard file {name!r}")
        return Response(content[name], media_type=files[name])
