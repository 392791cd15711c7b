"""Probes: one module per kind, each exposing `Checker` subclass `create`."""

from __future__ import annotations

import importlib

from overture.config.model import Probe
from overture.probes.base import Checker, ProbeContext, ProbeResult

__all__ = ["Checker", "ProbeContext", "ProbeResult", "build_checker"]

# Module per kind; imported on first use so that a CLI run that never probes
# postgres never imports asyncpg.
_MODULES = {
    "tcp": "overture.probes.tcp",
    "http": "overture.probes.http",
    "exec": "overture.probes.exec",
    "log": "overture.probes.log",
    "postgres": "overture.probes.postgres",
    "redis": "overture.probes.redis",
    "kafka": "overture.probes.kafka",
}


def build_checker(probe: Probe, context: ProbeContext) -> Checker:
    module = importlib.import_module(_MODULES[probe.kind])
    checker: Checker = module.create(probe, context)
    return checker
