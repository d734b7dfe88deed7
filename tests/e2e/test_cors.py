"""`server.cors_origins` in a real browser: a page on an allowed origin may call the API, others not.

Two static pages on their own loopback ports stand for two web apps (a different port is a
different origin); Chromium enforces CORS exactly as users' browsers do, including the
preflight that a JSON body with an Authorization header needs.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from loglens.config import Settings
from tests_support import LiveServer, count_rows

pytestmark = pytest.mark.e2e

TOKEN = "cors-test-token"
FETCH = """async ([url, token]) => {
  try {
    const resp = await fetch(url + "/api/v1/logs", {
      method: "POST",
      headers: {"Content-Type": "application/json", "Authorization": "Bearer " + token},
      body: JSON.stringify({timestamp: new Date().toISOString(), level: "INFO", service: "web", message: "hi"}),
    });
    return {ok: resp.ok, status: resp.status, body: await resp.json()};
  } catch (e) {
    return {error: String(e)};
  }
}"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def web_origin(tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Start static web servers on free loopback ports; each is its own origin."""
    servers: list[http.server.ThreadingHTTPServer] = []
    (tmp_path / "index.html").write_text("<!doctype html><title>other app</title><p>other app</p>")

    def start() -> str:
        handler = functools.partial(_QuietHandler, directory=str(tmp_path))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _fetch_from(browser: Browser, origin: str, api: str) -> dict[str, Any]:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(origin + "/index.html")
        result: dict[str, Any] = page.evaluate(FETCH, [api, TOKEN])
        return result
    finally:
        context.close()


def test_allowed_origin_can_ingest_and_other_origins_are_refused(
    browser: Browser,
    web_origin: Callable[[], str],
    settings_factory: Callable[..., Settings],
    live_server_factory: Callable[[Settings], LiveServer],
) -> None:
    allowed, other = web_origin(), web_origin()
    server = live_server_factory(settings_factory(server={"api_token": TOKEN, "cors_origins": [allowed]}))

    ok = _fetch_from(browser, allowed, server.url)
    assert ok["ok"] and ok["status"] == 200 and ok["body"]["accepted"] == 1, ok

    refused = _fetch_from(browser, other, server.url)
    assert "error" in refused and "Failed to fetch" in refused["error"]
    # the preflight failed, so the browser never sent the POST: only the allowed log is stored
    assert count_rows(server, "logs") == 1


def test_without_cors_origins_a_browser_cannot_call_the_api_cross_origin(
    browser: Browser,
    web_origin: Callable[[], str],
    settings_factory: Callable[..., Settings],
    live_server_factory: Callable[[Settings], LiveServer],
) -> None:
    server = live_server_factory(settings_factory(server={"api_token": TOKEN}))
    refused = _fetch_from(browser, web_origin(), server.url)
    assert "error" in refused
    assert count_rows(server, "logs") == 0
