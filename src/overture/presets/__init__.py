"""Presets for known servers: postgres, redis, kafka."""

from __future__ import annotations

import importlib

from overture.config.model import Project, Service
from overture.presets.base import Launch, Preset

__all__ = ["Launch", "Preset", "load_preset"]


def load_preset(name: str, service: Service, project: Project) -> Preset:
    """The preset object for service `name` (which must have `preset` set)."""
    assert service.preset is not None
    module = importlib.import_module(f"overture.presets.{service.preset}")
    preset: Preset = module.PRESET(name, service, project)
    return preset
