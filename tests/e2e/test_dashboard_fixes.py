"""Issue 17 item 11: anomaly values in their unit (never "NaN"), a lone minute is drawn, and a tile
never says "silent" beside "last seen 1s ago"."""

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
