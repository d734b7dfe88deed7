"""SSE stream and dashboard serving, against real servers and a real EventHub."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pytest

from loglens import metrics
from loglens.api.events import EventHub
from loglens.api.live import MetricsPublisher, StreamSettings
from loglens.api.routes.dashboard import CSP, load_assets
from loglens.api.routes.stream import _frame, _server_closing
from loglens.demo import generate_logs
from loglens.store import CommitEvent


def sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs of a text/event-stream response."""
    kind, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield kind, orjson.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def next_event(events: Iterator[tuple[str, Any]], kind: str, limit: int = 50) -> Any:
    for _ in range(limit):
        k, data = next(events)
        if k == kind:
            return data
    raise AssertionError(f"no {kind} event")


# ---- MetricsPublisher (unit, with an injected clock) ------------------------------------------


def _commit(rows: list[tuple[str, datetime, int, int, int]], dead: int = 0) -> CommitEvent:
    minute = pa.Table.from_pylist(
        [
            {
                "service": s,
                "minute": m,
                "count": c,
                "debug": 0,
                "info": c - e - f,
                "warn": 0,
                "error": e,
                "fatal": f,
                "late": 0,
                "rt_count": c,
                "rt_sum": 10.0 * c,
                "rt_min": 1.0,
                "rt_max": 20.0,
            }
            for s, m, c, e, f in rows
        ],
        schema=metrics.MINUTE_SCHEMA,
    )
    partials = metrics.Partials(minute, metrics.SKETCH_SCHEMA.empty_table(), metrics.USERS_SCHEMA.empty_table())
    return CommitEvent(pa.table({}), partials, dead, 0)


def test_publisher_coalesces_commits_and_limits_rate() -> None:
    async def scenario() -> list[tuple[str, Any]]:
        hub = EventHub()
        hub.bind(asyncio.get_running_loop())
        now = [100.0]
        pub = MetricsPublisher(hub, StreamSettings(min_interval_seconds=0.05), clock=lambda: now[0])
        pub.attach(asyncio.get_running_loop())
        m = datetime(2026, 1, 1, 12, 0)
        got: list[tuple[str, Any]] = []
        async with hub.subscribe() as q:
            # first commit of a burst is flushed at once (from the writer thread)
            t = threading.Thread(target=pub.on_commit, args=(_commit([("a", m, 10, 2, 1)]),))
            t.start()
            t.join()
            got.append(await asyncio.wait_for(q.get(), 2))
            # two more commits inside min_interval are merged into one later event
            pub.on_commit(_commit([("a", m, 5, 0, 0), ("b", m, 1, 1, 0)]))
            pub.on_commit(_commit([("a", m, 5, 1, 0)], dead=3))
            await asyncio.sleep(0.01)
            assert q.empty()  # held back: the clock has not moved past the interval
            now[0] += 1.0
            got.append(await asyncio.wait_for(q.get(), 2))
            assert pub.flush() is None  # nothing pending
            pub.on_commit(_commit([]))  # a commit with nothing new schedules nothing
            await asyncio.sleep(0.01)
            assert q.empty()
        pub.detach()
        assert pub.events_published == 2
        return got

    first, second = asyncio.run(scenario())
    assert first[0] == "metrics"
    assert first[1]["services"] == [
        {
            "service": "a",
            "minute": "2026-01-01T12:00:00.000Z",
            "count": 10,
            "errors": 3,
            "rt_sum": 100.0,
            "rt_count": 10,
        }
    ]
    assert second[1]["dead_letters"] == 3
    assert [(r["service"], r["count"], r["errors"]) for r in second[1]["services"]] == [("a", 10, 1), ("b", 1, 1)]


def test_publisher_skips_work_without_subscribers_or_loop() -> None:
    hub = EventHub()
    pub = MetricsPublisher(hub, StreamSettings())
    pub.on_commit(_commit([("a", datetime(2026, 1, 1), 1, 0, 0)]))  # no subscriber: ignored
    assert pub.flush() is None
    hub._subscribers.add(asyncio.Queue())  # a subscriber but no loop attached: merged, not scheduled
    pub.on_commit(_commit([("a", datetime(2026, 1, 1), 1, 0, 0)]))
    payload = pub.flush()
    assert payload is not None and payload["services"][0]["count"] == 1


def test_frame_and_shutdown_probe() -> None:
    assert _frame("metrics", {"a": "x\ny"}) == b'event: metrics\ndata: {"a":"x\\ny"}\n\n'

    class Cycle:
        keep_alive = True

        async def receive(self) -> None: ...

    cycle = Cycle()
    assert not _server_closing(cycle.receive, True)
    cycle.keep_alive = False
    assert _server_closing(cycle.receive, True)
    assert not _server_closing(cycle.receive, False)  # a client that asked for Connection: close
    assert not _server_closing(lambda: None, None)  # another server: no probe


# ---- the live stream ----------------------------------------------------------------------------


def test_commit_is_pushed_as_metrics_event(live_server: Any) -> None:
    with live_server.client() as client, client.stream("GET", "/api/v1/stream") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(resp)
        hello = next_event(events, "hello")
        assert hello["heartbeat_seconds"] == 10.0
        logs = list(generate_logs(40, services=("api", "db"), error_ratio=0.5, seed=3))
        with live_server.client() as writer:
            t0 = time.perf_counter()
            assert writer.post("/api/v1/logs", json=logs).json()["accepted"] == 40
            answered = time.perf_counter()
        totals: dict[str, list[int]] = {}
        while sum(v[0] for v in totals.values()) < 40:
            event = next_event(events, "metrics")
            for row in event["services"]:
                acc = totals.setdefault(row["service"], [0, 0])
                acc[0] += row["count"]
                acc[1] += row["errors"]
        assert time.perf_counter() - answered < 1.0
        assert time.perf_counter() - t0 < 5
        errors = sum(1 for log in logs if log["level"] == "ERROR")
        assert totals == {
            "api": [20, sum(1 for log in logs[0::2] if log["level"] == "ERROR")],
            "db": [20, sum(1 for log in logs[1::2] if log["level"] == "ERROR")],
        }
        assert totals["api"][1] + totals["db"][1] == errors
        # events published by other stages (the alerting engine) reach the client too
        live_server.state.hub.publish("alert", {"id": "x1", "rule": "error_rate", "state": "firing"})
        # (the real engine may push its own error_rate alert for these 50 % errors first)
        seen = [next_event(events, "alert")["id"]]
        while seen[-1] != "x1" and len(seen) < 3:
            seen.append(next_event(events, "alert")["id"])
        assert seen[-1] == "x1"
        # a rejected record is reported as a dead letter count
        with live_server.client() as writer:
            writer.post("/api/v1/logs", json=[{"level": "NOPE"}])
        assert next_event(events, "metrics")["dead_letters"] == 1


def test_heartbeat_when_idle(live_server: Any) -> None:
    live_server.state.stream.settings.heartbeat_seconds = 0.3
    with live_server.client() as client, client.stream("GET", "/api/v1/stream") as resp:
        events = sse_events(resp)
        assert next_event(events, "hello")["heartbeat_seconds"] == 0.3
        t0 = time.monotonic()
        assert "at" in next_event(events, "heartbeat")
        assert next_event(events, "heartbeat")
        assert 0.3 <= time.monotonic() - t0 < 3


def test_stream_requires_token_when_configured(
    settings_factory: Callable[..., Any], live_server_factory: Callable[[Any], Any]
) -> None:
    srv = live_server_factory(settings_factory("server: {api_token: s3cret}\n"))
    with srv.client() as client:
        assert client.get("/api/v1/stream").status_code == 401
        assert client.get("/api/v1/dashboard/config").status_code == 401
        assert client.get("/").status_code == 200  # the page holds no data
        assert client.get("/api/v1/stream", params={"token": "s3cret"}).status_code == 401  # never in the URL
        # the dashboard's EventSource authenticates with the session cookie of the login form
        login = client.post("/login", data={"token": "s3cret"}, headers={"origin": srv.url})
        assert login.status_code == 303 and "loglens_session" in client.cookies
        with client.stream("GET", "/api/v1/stream") as resp:
            assert resp.status_code == 200
            assert next_event(sse_events(resp), "hello")


def test_server_shutdown_ends_open_streams(
    settings_factory: Callable[..., Any], live_server_factory: Callable[[Any], Any]
) -> None:
    """An open dashboard must not keep the server (and its DuckDB file) alive on shutdown."""
    settings = settings_factory()
    srv = live_server_factory(settings)
    ended = threading.Event()

    def listen() -> None:
        with httpx.Client(base_url=srv.url, timeout=30) as client, client.stream("GET", "/api/v1/stream") as resp:
            for _ in sse_events(resp):
                pass
        ended.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    deadline = time.monotonic() + 60
    while srv.state.hub.subscriber_count == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.state.hub.subscriber_count == 1
    t0 = time.monotonic()
    srv.stop()
    assert not srv.thread.is_alive()
    assert time.monotonic() - t0 < 5
    assert ended.wait(5)
    # the same store can be opened again at once (a restart)
    again = live_server_factory(settings)
    with again.client() as client:
        assert client.get("/healthz").status_code == 200


# ---- dashboard files ------------------------------------------------------------------------------


def test_dashboard_served_with_strict_csp(live_server: Any) -> None:
    with live_server.client() as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["content-security-policy"] == CSP
        assert "'unsafe-inline'" not in CSP and "default-src 'self'" in CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        html = page.text
        for ref in ["/static/app.js", "/static/app.css", "/static/vendor/uPlot.iife.min.js"]:
            assert ref in html
        assert "<script>" not in html and " style=" not in html and "onclick" not in html
        for src, ctype in [
            ("/static/app.js", "text/javascript; charset=utf-8"),
            ("/static/app.css", "text/css; charset=utf-8"),
            ("/static/vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
            ("/static/vendor/uPlot.min.css", "text/css; charset=utf-8"),
            ("/static/favicon.svg", "image/svg+xml"),
            ("/favicon.ico", "image/svg+xml"),
        ]:
            resp = client.get(src)
            assert resp.status_code == 200, src
            assert resp.headers["content-type"] == ctype, src
            assert resp.headers["content-security-policy"] == CSP
        etag = client.get("/static/app.js").headers["etag"]
        assert client.get("/static/app.js", headers={"If-None-Match": etag}).status_code == 304
        for bad in ["/static/nope.js", "/static/../config.py", "/static/%2e%2e/api/app.py", "/static/vendor"]:
            assert client.get(bad).status_code == 404, bad


def test_every_asset_is_local_and_packaged() -> None:
    assets = load_assets()
    assert {
        "index.html",
        "app.js",
        "app.css",
        "favicon.svg",
        "vendor/uPlot.iife.min.js",
        "vendor/uPlot.LICENSE",
    } <= set(assets)
    for name, asset in assets.items():
        if name.endswith((".html", ".js", ".css")):
            text = asset.body.decode()
            assert "//cdn" not in text and "https://" not in text.replace("https://github.com", ""), name
    script = assets["app.js"].body
    for sink in (b".innerHTML", b".outerHTML", b"insertAdjacentHTML", b"document.write", b"eval("):
        assert sink not in script, sink  # every field goes through textContent


def test_dashboard_config_reports_thresholds_and_features(
    settings_factory: Callable[..., Any], live_server_factory: Callable[[Any], Any]
) -> None:
    yaml_text = (
        "alerts:\n  rules:\n    absence: {threshold_seconds: 7}\n"
        "  overrides:\n    db: {absence: {threshold_seconds: 3}}\n"
    )
    srv = live_server_factory(settings_factory(yaml_text))
    with srv.client() as client:
        cfg = client.get("/api/v1/dashboard/config").json()
    assert cfg["absence_threshold_seconds"] == 7
    assert cfg["overrides"]["db"] == {"absence_threshold_seconds": 3, "error_rate_threshold": None}
    assert cfg["error_rate_threshold"] == pytest.approx(0.1)
    assert cfg["features"] == {"alerts": True, "anomalies": True, "silences": True}
