"""Fixtures shared by the tests: tagged children, real servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import children_tagged
from servers import Servers, reachable_dir


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every process the test starts is tagged; none may outlive the test."""
    with children_tagged(monkeypatch) as token:
        yield token


@pytest.fixture
def servers() -> Iterator[Servers]:
    """Starts servers for a test; whatever still runs is killed after it."""
    with Servers() as running:
        yield running


@pytest.fixture
def root() -> Iterator[Path]:
    """A directory the unprivileged PostgreSQL user can reach."""
    with reachable_dir() as path:
        yield path
