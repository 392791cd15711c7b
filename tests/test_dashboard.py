"""The dashboard in headless Chromium: live colours, output, and its buttons.

A real daemon with a TCP listener serves the page; Debian's Chromium (driven
by playwright, with no browser download) opens it with the token in the
address, as `overture dashboard` prints it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright import sync_api as playwright

from helpers import children_tagged
from test_control import STACK, Project, overture, project

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
READY_FILL = "rgb(67, 160, 71)"  # --ready: #43a047
STOPPED_FILL = "rgb(158, 158, 158)"  # --stopped: #9e9e9e
WAIT_MS = 15_000


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """The test stack up, with the dashboard on a free loopback port."""
    if not Path(CHROMIUM).exists():
        # CI installs Chromium and sets this, so there the test cannot skip.
        if os.environ.get("OVERTURE_REQUIRE_BROWSER"):
            pytest.fail(f"no Chromium at {CHROMIUM}; apt-get install chromium")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    with children_tagged(monkeypatch), project(tmp_path, STACK) as p:
        result = overture(p.root, "up", "-d", "--listen", "127.0.0.1:0")
        assert result.returncode == 0, result.stderr
        yield p


def test_the_dashboard_follows_states_and_restarts_a_service(
    daemon: Project, tmp_path: Path
) -> None:
    """A stop through the API recolours the node; the page's Restart brings it back."""
    address = overture(daemon.root, "dashboard").stdout.strip()
    assert "#token=" in address

    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(address)
            api_node = page.locator('g.node[data-name="api"]')

            # Every service is drawn, coloured by its state.
            page.wait_for_selector('g.node[data-name="api"][data-state="ready"]')
            assert page.locator("g.node").count() == len(STACK)
            assert page.locator("path.edge").count() == 3
            assert fill(api_node) == READY_FILL
            assert "#token" not in page.url  # kept in the tab, not the address

            # A stop through the API: the page sees it on the event stream.
            with daemon.api() as api:
                assert api.post("/services/api/stop").json()["ok"] is True
            page.wait_for_selector(
                'g.node[data-name="api"][data-state="stopped"]', timeout=WAIT_MS
            )
            assert fill(api_node) == STOPPED_FILL
            worker = page.locator('g.node[data-name="worker"]')
            assert worker.get_attribute("data-state") == "stopped"

            # A click shows the service and its recent output.
            api_node.click()
            page.wait_for_selector("#detail:not([hidden])")
            assert page.inner_text("#detail-name") == "api"
            assert page.inner_text("#detail-state") == "stopped"
            page.wait_for_function(
                "document.querySelector('#detail-logs').textContent"
                ".includes('api ready')"
            )

            # Restart from the page: the API (with the token) starts it again.
            page.click('#actions button[data-action="restart"]')
            page.wait_for_selector(
                'g.node[data-name="api"][data-state="ready"]', timeout=WAIT_MS
            )
            page.wait_for_function(
                "document.querySelector('#detail-result').textContent"
                " === 'restart api: done'",
                timeout=WAIT_MS,
            )
            assert fill(api_node) == READY_FILL
            assert page.inner_text("#detail-state") == "ready"
            page.screenshot(path=str(tmp_path / "dashboard.png"))
        finally:
            browser.close()

    assert daemon.states()["api"] == "ready"


def fill(node: object) -> str:
    """The computed fill of a node's box."""
    value: str = node.locator("rect").evaluate(  # type: ignore[attr-defined]
        "rect => getComputedStyle(rect).fill"
    )
    return value
