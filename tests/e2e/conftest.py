"""Browser fixtures: Debian's Chromium driven by Python Playwright.

There is no skip when Chromium is missing: environment/setup.sh installs it, and a browser
test that silently skipped would hide a broken dashboard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch(playwright: Any) -> Browser:
    """Chromium as the tests and the screenshot script run it."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run environment/setup.sh (apt-get install chromium)"
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@dataclass
class Dashboard:
    """A page showing the dashboard of one server, recording console errors and dialogs."""

    page: Page
    url: str
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def state(self, expr: str) -> Any:
        return self.page.evaluate(f"() => {expr}")

    def wait(self, expr: str, timeout_s: float = 60.0) -> None:
        """Wait until the JS expression is truthy (generous: CI may run with both cores busy)."""
        self.page.wait_for_function(f"() => {expr}", timeout=timeout_s * 1000, polling=50)

    def wait_live(self) -> None:
        self.wait("window.__loglens && window.__loglens.connection === 'live' && window.__loglens.refreshes > 0", 60)


@pytest.fixture
def open_dashboard(browser: Browser) -> Iterator[Callable[..., Dashboard]]:
    """Open the dashboard; at teardown assert there were no console errors unless told otherwise."""
    opened: list[tuple[Dashboard, bool]] = []

    def opener(
        base_url: str,
        *,
        query: str = "",
        width: int = 1366,
        height: int = 900,
        check_console: bool = True,
        color_scheme: str = "light",
        token: str | None = None,
    ) -> Dashboard:
        context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=color_scheme)
        page = context.new_page()
        if token is not None:  # sign in through the login form: the session cookie, never ?token=
            page.goto(base_url + "/login")
            page.fill("#token", token)
            page.click("button[type=submit]")
            page.wait_for_url(base_url + "/")
        dash = Dashboard(page, base_url + "/" + query)
        page.on("console", lambda m: dash.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: dash.errors.append(f"page error: {e}"))

        def on_dialog(d: Any) -> None:
            dash.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", on_dialog)
        page.goto(dash.url)
        opened.append((dash, check_console))
        return dash

    yield opener
    failures = []
    for dash, check in opened:
        if check:
            failures += dash.errors
        dash.page.context.close()
    assert not failures, f"console errors: {failures}"
