"""The external runner: watched and ordered on, never started or stopped."""

from __future__ import annotations

import asyncio
from pathlib import Path

from overture.config.model import Project
from overture.graph import Graph
from overture.lifecycle import ServiceState
from overture.orchestrator import Orchestrator
from overture.probes import ProbeContext, build_checker
from servers import Servers, make_preset, reachable_dir, start_ready


def test_external_redis_is_watched_never_started_or_stopped(tmp_path: Path) -> None:
    """A dependent waits for the external server; down leaves the server running."""
    with reachable_dir() as root, Servers() as servers:
        preset = make_preset("redis", root)
        server, _ = asyncio.run(start_ready(servers, preset, root / "redis.log"))
        port = preset.service.port
        project = Project.model_validate(
            {
                "root": tmp_path,
                "services": {
                    "cache": {"runner": "external", "preset": "redis", "port": port},
                    "queue": {
                        "runner": "external",
                        "ready": {"redis": f"redis://127.0.0.1:{port}/0"},
                    },
                    "app": {
                        "command": ["sleep", "600"],
                        "depends_on": {"cache": "healthy", "queue": "healthy"},
                    },
                },
            }
        )

        async def scenario() -> list[tuple[str, ServiceState]]:
            orchestrator = Orchestrator(project, Graph.from_project(project))
            events: list[tuple[str, ServiceState]] = []
            orchestrator.bus.subscribe(lambda t: events.append((t.service, t.target)))
            assert await orchestrator.up(["cache", "queue", "app"]) == []
            assert orchestrator.runtimes["cache"].pid is None
            await orchestrator.down()
            orchestrator.close()

            # Still there, and still answering, after the down.
            assert server.process.poll() is None
            probe = preset.probe()
            checker = build_checker(probe, ProbeContext("cache"))
            answer = await checker.check()
            await checker.close()
            assert answer.ok, answer.detail
            return events

        events = asyncio.run(scenario())
        app_starting = events.index(("app", ServiceState.STARTING))
        assert events.index(("cache", ServiceState.READY)) < app_starting
        assert events.index(("queue", ServiceState.READY)) < app_starting
        assert ("cache", ServiceState.STOPPED) in events
