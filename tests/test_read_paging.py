"""Bounded reads: services, time series, alerts, anomalies and silences page, filter and take top-N."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from loglens.config import Settings


def _post(client: Any, services: dict[str, int]) -> None:
    now = time.time()
    body = b"\n".join(
        orjson.dumps({"timestamp": now, "level": "INFO", "service": svc, "message": "m"})
        for svc, n in services.items()
        for _ in range(n)
    )
    r = client.post("/api/v1/logs", content=body, headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200, r.text


def test_services_and_timeseries_page_filter_and_top(
    settings_factory: Callable[..., Settings], live_server_factory: Callable[[Settings], Any]
) -> None:
    srv = live_server_factory(settings_factory())
    with srv.client() as c:
        _post(c, {f"svc-{i:02d}": i + 1 for i in range(25)} | {"checkout": 100})
        everything = c.get("/api/v1/services").json()
        assert len(everything["services"]) == 26 and "next_offset" not in everything  # unchanged default
        first = c.get("/api/v1/services", params={"limit": 10}).json()
        assert len(first["services"]) == 10 and first["total"] == 26 and first["next_offset"] == 10
        last = c.get("/api/v1/services", params={"limit": 10, "offset": 20}).json()
        assert len(last["services"]) == 6 and last["next_offset"] is None
        found = c.get("/api/v1/services", params={"q": "CHECK"}).json()
        assert [s["service"] for s in found["services"]] == ["checkout"] and found["total"] == 1
        top = c.get("/api/v1/timeseries", params={"top": 3, "minutes": 5}).json()
        assert [s["service"] for s in top["series"]] == ["checkout", "svc-24", "svc-23"]
        paged = c.get("/api/v1/timeseries", params={"limit": 20, "offset": 20, "minutes": 5}).json()
        assert len(paged["series"]) == 6 and paged["next_offset"] is None
        assert len(c.get("/api/v1/timeseries").json()["series"]) == 26
        assert c.get("/api/v1/services", params={"limit": 0}).status_code == 422
        # alerts, anomalies and silences page the same way (bounded: at most 1000 a page)
        alerts = c.get("/api/v1/alerts", params={"limit": 1}).json()
        assert "next_offset" in alerts and len(alerts["alerts"]) <= 1
        assert c.get("/api/v1/alerts", params={"limit": 5000}).status_code == 422
        for i in range(3):
            created = c.post("/api/v1/silences", json={"matchers": {"service": f"s{i}"}, "duration_seconds": 60})
            assert created.status_code == 201
        page = c.get("/api/v1/silences", params={"limit": 2}).json()
        assert len(page["silences"]) == 2 and page["next_offset"] == 2
        rest = c.get("/api/v1/silences", params={"limit": 2, "offset": 2}).json()
        assert len(rest["silences"]) == 1 and rest["next_offset"] is None
        assert c.get("/api/v1/anomalies", params={"limit": 10, "service": "checkout"}).json()["anomalies"] == []
