"""`/docs` and `/redoc` render in Chromium with every request to a non-loopback host blocked."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route

pytestmark = pytest.mark.e2e

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
OPERATIONS = ("/api/v1/logs", "/loki/api/v1/push", "/api/prom/push", "/v1/logs", "/_bulk")


def offline_page(browser: Browser) -> tuple[Page, list[str], list[str]]:
    """A page whose requests to anything but loopback are aborted (and recorded)."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    blocked: list[str] = []
    errors: list[str] = []

    def gate(route: Route) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    page.route("**/*", gate)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    return page, blocked, errors


def test_swagger_ui_lists_operations_offline(live_server: Any, browser: Browser) -> None:
    page, blocked, errors = offline_page(browser)
    page.goto(f"{live_server.url}/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = {p.strip().replace("\u200b", "") for p in page.locator(".opblock-summary-path").all_inner_texts()}
    assert set(OPERATIONS) <= paths, paths
    assert page.locator(".info .title").first.inner_text().startswith("loglens")
    # Open one operation: its description comes from the route's docstring.
    page.locator(".opblock-summary-path", has_text="/loki/api/v1/push").first.click()
    page.wait_for_selector("text=X-Scope-OrgID", timeout=10_000)
    assert blocked == [] and errors == []
    page.context.close()


def test_redoc_lists_operations_offline(live_server: Any, browser: Browser) -> None:
    page, blocked, errors = offline_page(browser)
    page.goto(f"{live_server.url}/redoc")
    page.wait_for_selector("h2:has-text('Loki push (snappy protobuf')", timeout=30_000)
    headings = page.locator("h2").all_inner_texts()
    assert {"Ingest logs", "OTLP/HTTP logs (protobuf or JSON)", "Elasticsearch bulk API"} <= set(headings), headings
    assert blocked == [] and errors == []
    page.context.close()


def test_assets_are_served_locally(live_server: Any) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as c:
        page = c.get("/docs")
        assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
        assert "http" not in page.text.replace("http-equiv", "")  # no absolute (CDN) URL in the page
        js = c.get("/docs/assets/swagger-ui-bundle.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert (
            c.get("/docs/assets/swagger-ui-bundle.js", headers={"If-None-Match": js.headers["etag"]}).status_code == 304
        )
        assert c.get("/docs/assets/swagger-ui.LICENSE").status_code == 404  # only scripts, styles, the icon
        assert c.get("/docs/assets/..%2Fapp.py").status_code == 404
        assert c.get("/redoc").status_code == 200
