"""The control plane's parts on their own: metrics, streams, listeners, paths."""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import run
from overture.config.load import CONFIG_NAMES as LOADER_NAMES
from overture.control import render
from overture.control.client import Event, _read_events, path_of
from overture.control.listen import bind_unix, is_loopback, parse_listen
from overture.control.metrics import Metrics, stop_outcome
from overture.control.paths import CONFIG_NAMES, find_root, socket_address
from overture.control.streams import EventFeed, Fanout
from overture.errors import UsageError
from overture.lifecycle import ServiceState, Transition
from overture.observe.events import EventBus

S = ServiceState


def transition(
    service: str, event: str, source: S, target: S, reason: str = "", *, at: float = 0
) -> Transition:
    return Transition(service, event, source, target, reason, monotonic=at)


# Metrics.


def test_metrics_count_events_time_startups_and_classify_stops() -> None:
    """The exposition parses, with counters, a histogram and stop outcomes."""
    metrics = Metrics()
    for t in (
        transition("api", "start", S.STOPPED, S.WAITING, at=1.0),
        transition("api", "deps_met", S.WAITING, S.STARTING, at=1.0),
        transition("api", "became_ready", S.STARTING, S.READY, at=1.3),
        transition("api", "stop", S.READY, S.STOPPING, at=2.0),
        transition(
            "api",
            "stop_done",
            S.STOPPING,
            S.STOPPED,
            "killed with SIGKILL: ignored SIGTERM for 1s",
            at=3.0,
        ),
    ):
        metrics.observe(t)

    text = metrics.render(["api", "idle"], {})
    families = {f.name: f for f in text_string_to_metric_families(text)}

    state = {
        (s.labels["service"], s.labels["state"])
        for s in families["overture_service_state"].samples
        if s.value
    }
    assert state == {("api", "stopped"), ("idle", "stopped")}
    buckets = {
        s.labels["le"]: s.value
        for s in families["overture_startup_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["service"] == "api"
    }
    assert buckets["0.25"] == 0
    assert buckets["0.5"] == 1
    assert buckets["+Inf"] == 1
    stops = {
        s.labels["outcome"]: s.value
        for s in families["overture_stops"].samples
        if s.labels["service"] == "api"
    }
    assert stops == {"clean": 0, "forced": 1, "unclean": 0}
    assert metrics.uptime("api") is None


@pytest.mark.parametrize(
    ("reason", "details", "outcome"),
    [
        ("SIGTERM sent, killed by SIGTERM (clean)", {}, "clean"),
        ("SIGTERM sent, exited with 1 (unclean)", {}, "unclean"),
        ("killed with SIGKILL: ignored SIGTERM for 5s", {}, "forced"),
        ("nothing was running", {}, "clean"),
        ("whatever the text", {"outcome": "forced"}, "forced"),
    ],
)
def test_stop_outcomes(reason: str, details: dict[str, Any], outcome: str) -> None:
    """A stop's outcome comes from its details, else from the runtime's reason."""
    t = Transition("a", "stop_done", S.STOPPING, S.STOPPED, reason, details=details)
    assert stop_outcome(t) == outcome


# Streams.


def test_a_subscriber_that_falls_behind_is_cut_off() -> None:
    """A full queue ends that stream; the others keep every item."""

    async def scenario() -> tuple[list[int | None], list[int | None]]:
        fanout: Fanout[int] = Fanout(limit=3)
        with fanout.subscribe() as slow, fanout.subscribe() as fast:
            got: list[int | None] = []
            for item in range(5):
                fanout.publish(item)
                got.append(fast.get_nowait())
            fanout.close()
            got.append(await fast.get())
            return [await slow.get()], got

    slow, fast = run(scenario())
    assert slow == [None]
    assert fast == [0, 1, 2, 3, 4, None]


def test_the_event_feed_numbers_transitions_and_replays_what_is_kept() -> None:
    """Numbers go on past the kept history; `since` returns only what is kept."""
    bus = EventBus(history=3)
    feed = EventFeed(bus)
    for n in range(5):
        bus.publish(transition(f"s{n}", "start", S.STOPPED, S.WAITING))

    assert feed.count == 5
    assert [seq for seq, _ in feed.since(0)] == [3, 4, 5]
    assert [(seq, t.service) for seq, t in feed.since(3)] == [(4, "s3"), (5, "s4")]
    assert feed.since(5) == []


def test_server_sent_events_are_parsed_as_the_standard_says() -> None:
    """Fields, comments, multi-line data and a last event without id."""
    raw = (
        b": keep-alive\n\n"
        b'id: 1\nevent: transition\ndata: {"a": 1}\n\n'
        b"data: one\r\ndata: two\r\n\r\n"
        b"event: ignored-without-data\n\n"
    )
    events = list(_read_events(io.BytesIO(raw)))  # type: ignore[arg-type]
    assert events == [
        Event("transition", '{"a": 1}', "1"),
        Event("message", "one\ntwo", "1"),
    ]
    assert events[0].json() == {"a": 1}


def test_paths_quote_parts_and_repeat_list_values() -> None:
    """Query lists repeat the key; None values are left out."""
    assert path_of("services", "a b", "logs", n=5) == "/services/a%20b/logs?n=5"
    assert path_of("logs", service=["a", "b"], n=None) == "/logs?service=a&service=b"


# Listeners and paths.


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8080", ("127.0.0.1", 8080)),
        ("127.0.0.2:0", ("127.0.0.2", 0)),
        ("[::1]:9000", ("::1", 9000)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_listen_values(value: str, expected: tuple[str, int]) -> None:
    """PORT, HOST:PORT and [V6]:PORT are understood; the host defaults to loopback."""
    assert parse_listen(value) == expected


def test_listen_refuses_bad_ports_and_outside_addresses() -> None:
    """A bad port, or an outside address without --allow-remote, is a usage error."""
    with pytest.raises(UsageError, match="port must be a number from 0 to 65535"):
        parse_listen("127.0.0.1:http")
    with pytest.raises(UsageError, match="not a loopback address"):
        parse_listen("192.0.2.1:80")
    assert parse_listen("192.0.2.1:80", allow_remote=True) == ("192.0.2.1", 80)
    assert not is_loopback("evil.example")
    assert is_loopback("[::1]")


def test_the_project_root_is_found_from_a_subdirectory(tmp_path: Path) -> None:
    """Clients work from anywhere inside the project, or with -f."""
    (tmp_path / "overture.yaml").write_text("services: {}\n")
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_root(None, deep) == tmp_path
    assert find_root(Path("../../overture.yaml"), deep) == tmp_path
    assert CONFIG_NAMES == LOADER_NAMES


def test_a_socket_path_too_long_for_sun_path_still_works(tmp_path: Path) -> None:
    """Bind and connect go through the directory's descriptor."""
    deep = tmp_path.joinpath(*["d" * 30] * 4)
    deep.mkdir(parents=True)
    path = deep / "daemon.sock"
    assert len(str(path)) > 108

    server = bind_unix(path, 0o600)
    server.setblocking(True)
    server.listen()
    with socket.socket(socket.AF_UNIX) as client, socket_address(path) as address:
        client.connect(address)
        accepted, _ = server.accept()
        accepted.close()
    server.close()
    assert path.stat().st_mode & 0o777 == 0o600


# Rendering.


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (2.34, "2.3s"), (42, "42s"), (192, "3m12s"), (7500, "2h05m")],
)
def test_durations(seconds: float | None, text: str) -> None:
    """Uptimes read at a glance."""
    assert render.duration(seconds) == text


def test_the_status_table_cuts_long_reasons_to_the_terminal() -> None:
    """Columns line up; a reason longer than the room left is cut with an ellipsis."""
    services: list[dict[str, Any]] = [
        {"name": "api", "state": "ready", "pid": 12, "uptime": 5, "restarts": 0,
         "last_probe": {"ok": True, "latency": 0.002, "detail": ""},
         "reason": "http probe passed after 0.41s " * 4},
        {"name": "worker", "state": "stopped", "pid": None, "uptime": None,
         "restarts": 2, "last_probe": None, "reason": None},
    ]  # fmt: skip
    lines = render.status_table(services, colour=False, width=80).splitlines()
    assert [line.split()[:6] for line in lines[1:]] == [
        ["api", "ready", "12", "5.0s", "0", "ok"],
        ["worker", "stopped", "-", "-", "2", "-"],
    ]
    assert lines[1].endswith("…")
    assert len(lines[1]) <= 80
