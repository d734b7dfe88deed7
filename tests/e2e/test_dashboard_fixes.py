"""Issue 17 item 11: anomaly values in their unit (never "NaN"), a lone minute is drawn, and a tile
never says "silent" beside "last seen 1s ago"; a slow answer to an earlier log search never
replaces the newer one's."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from test_dashboard import log, post_logs, tile


def test_anomaly_shows_observed_and_expected_band(live_server: Any, open_dashboard: Callable[..., Any]) -> None:
    dash = open_dashboard(live_server.url)
    dash.wait_live()
    doc = {
        "id": "9f0c2a4b7d1e4e6f8a3b5c7d9e1f2a3b",
        "detected_at": "2026-11-23T14:05:00.250Z",
        "type": "volume_spike",
        "severity": "warning",
        "service": "search",
        "description": "search: volume 612 logs/min is above its usual 110 logs/min",
        "score": 14.2,
        "confidence": 0.97,
        "observed": 612,
        "expected": {"low": 95, "high": 130, "median": 110},
        "window": {"start": "2026-11-23T14:04:00Z", "end": "2026-11-23T14:05:00Z"},
        "related_log_ids": [],
    }
    first = "observed 612 logs/min vs expected 95 logs/min – 130 logs/min"
    show(dash, live_server, doc, first)
    assert "NaN" not in (dash.page.text_content("#anomalies") or "")
    rate = {**doc, "id": "a" * 32, "type": "error_rate", "observed": 0.25, "expected": {"low": 0.0, "high": 0.05}}
    show(dash, live_server, rate, "observed 25.0% vs expected 0.0% – 5.00%")


def show(dash: Any, server: Any, doc: dict[str, Any], expected: str) -> None:
    """Push `doc` over the live stream until the page lists it with `expected` (the page's first
    fetch of /api/v1/anomalies may still replace the list once)."""
    deadline = time.monotonic() + 30
    while True:
        server.state.hub.publish("anomaly", doc)
        try:
            dash.wait(f"(document.querySelector('#anomalies').textContent || '').includes({expected!r})", 1)
            return
        except Exception:
            assert time.monotonic() < deadline, dash.page.text_content("#anomalies")


def test_a_series_with_one_minute_is_drawn(live_server: Any, open_dashboard: Callable[..., Any]) -> None:
    post_logs(live_server.url, [log("lonely", response_time_ms=120.0)])
    dash = open_dashboard(live_server.url)
    dash.wait_live()
    dash.wait("window.__loglens.charts.volume && window.__loglens.charts.volume.series.includes('lonely')", 10)
    # empty minutes of p95 latency are null (not 0): one minute with logs is an isolated point
    dash.wait("window.__loglens.isolatedPoints['p95_response_time:lonely'] === 1", 10)


def test_a_service_sending_again_is_not_called_silent(
    settings_factory: Callable[..., Any], live_server_factory: Callable[[Any], Any], open_dashboard: Callable[..., Any]
) -> None:
    # the absence alert stays firing for a while after the service is back (flap damping)
    settings = settings_factory(
        "alerts:\n  evaluation_interval_seconds: 0.2\n  resolve_after_seconds: 60\n"
        "  rules:\n    absence: {threshold_seconds: 2}\n"
    )
    srv = live_server_factory(settings)
    post_logs(srv.url, [log("flaky")])
    dash = open_dashboard(srv.url)
    dash.wait_live()
    deadline = time.monotonic() + 30
    while not [a for a in httpx.get(srv.url + "/api/v1/alerts").json()["alerts"] if a["rule"] == "absence"]:
        assert time.monotonic() < deadline, "absence did not fire"
        time.sleep(0.2)
    dash.wait(f"document.querySelector('{tile('flaky')}')?.dataset.status === 'silent'", 10)
    post_logs(srv.url, [log("flaky")])  # back: the alert is still firing, the tile is not silent
    dash.wait(f"document.querySelector('{tile('flaky')}').dataset.status !== 'silent'", 10)
    firing = httpx.get(srv.url + "/api/v1/alerts", params={"state": "firing"}).json()["alerts"]
    assert any(a["rule"] == "absence" and a["service"] == "flaky" for a in firing)
    assert "s ago" in (dash.page.text_content(f"{tile('flaky')} dd:last-of-type") or "")


def test_a_slow_answer_to_an_earlier_log_search_does_not_replace_the_newer_one(
    live_server: Any, open_dashboard: Callable[..., Any]
) -> None:
    """Change the level, then search a text before the level's answer is back: the late answer to
    the level filter must not fill the table the text search left empty."""
    logs = [log("api", level="ERROR" if i % 2 else "INFO", message=f"api message {i}") for i in range(10)]
    post_logs(live_server.url, logs)
    dash = open_dashboard(live_server.url)
    dash.wait_live()
    dash.wait("document.querySelectorAll('#log-rows tr.log').length === 10")
    dash.page.uncheck("#f-live")  # no refresh of our own between the searches below
    dash.wait("window.__loglens.logAnswers === window.__loglens.logSearches")  # none still on its way
    answered = dash.state("window.__loglens.logAnswers")
    held: list[Any] = []

    def hold_the_level_search(route: Any) -> None:
        if "zz-no-such-text" in route.request.url:
            route.continue_()
        else:
            held.append(route)  # answered below, after the newer search

    dash.page.route("**/api/v1/logs?*", hold_the_level_search)
    dash.page.select_option("#f-level", "ERROR,FATAL")
    dash.page.fill("#f-q", "zz-no-such-text")
    dash.page.press("#f-q", "Enter")
    dash.wait(f"window.__loglens.logAnswers === {answered + 1}")
    assert dash.state("!document.getElementById('logs-empty').hidden")
    assert len(held) == 1 and "level=ERROR" in held[0].request.url
    held[0].continue_()
    dash.wait(f"window.__loglens.logAnswers === {answered + 2}")  # the late answer has been handled
    assert dash.state("document.querySelectorAll('#log-rows tr.log').length") == 0
    assert dash.state("!document.getElementById('logs-empty').hidden")
