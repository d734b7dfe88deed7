"""GET /metrics parsed with prometheus-client's own parser: values move as logs and alerts flow."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from ops_support import now_iso
from prometheus_client.parser import text_string_to_metric_families

from loglens.config import Settings
from loglens.ops.selfmetrics import reason_class
from tests_support import LiveServer

RULES = """alerts:
  evaluation_interval_seconds: 0.1
  rules:
    volume:
      threshold: 10
    anomaly:
      enabled: false
    new_pattern:
      enabled: false
"""


def scrape(c: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def val(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def _wait(predicate: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
    return value


def test_metrics_move_with_logs_alerts_and_clients(
    settings_factory: Callable[..., Settings], live_server_factory: Callable[..., LiveServer]
) -> None:
    srv = live_server_factory(settings_factory(RULES))
    with srv.client() as c:
        m0 = scrape(c)
        assert val(m0, "loglens_build_info", version=__import__("loglens").__version__) == 1
        assert val(m0, "loglens_logs_accepted_total", source="http") == 0
        assert val(m0, "loglens_notifications_sent_total", channel="console") == 0
        logs = [{"timestamp": now_iso(), "level": "INFO", "service": "api", "message": f"m{i}"} for i in range(30)]
        bad = [
            {"level": "INFO", "service": "api", "message": "no ts"},
            {"timestamp": now_iso(), "level": "LOUD", "service": "api", "message": "x"},
        ]
        assert c.post("/api/v1/logs", json=logs + bad).json()["accepted"] == 30
        c.post("/api/v1/logs", content=b"[{", headers={"content-type": "application/json"})
        m1 = scrape(c)
        assert val(m1, "loglens_logs_received_total", source="http") == 33
        assert val(m1, "loglens_logs_accepted_total", source="http") == 30
        assert val(m1, "loglens_logs_rejected_total", source="http", reason="missing_field") == 1
        assert val(m1, "loglens_logs_rejected_total", source="http", reason="invalid_field") == 1
        assert val(m1, "loglens_logs_rejected_total", source="http", reason="malformed") == 1
        assert val(m1, "loglens_store_commit_seconds_count") >= 2
        assert val(m1, "loglens_store_rows", table="logs") == 30
        assert val(m1, "loglens_store_rows", table="dead_letter") == 3
        assert val(m1, "loglens_store_size_bytes") > 0
        assert val(m1, "loglens_ingest_queue_depth") == 0
        # the volume alert fires, and the console channel delivers it
        m2 = _wait(
            lambda: (
                (m := scrape(c))
                and val(m, "loglens_alerts_firing", rule="volume", severity="warning") == 1
                and val(m, "loglens_notifications_sent_total", channel="console") >= 1
                and m
            )
        )
        assert val(m2, "loglens_alert_notifications_total") >= 1
        assert val(m2, "loglens_notifier_healthy", channel="console") == 1
        assert val(m2, "loglens_rule_evaluations_total") > 0
        assert ("loglens_rule_evaluation_seconds", (("rule", "volume"),)) in m2
        # a live-stream client is counted while connected
        assert val(m2, "loglens_sse_clients") == 0
        connected = threading.Event()
        done = threading.Event()

        def listen() -> None:
            with httpx.Client(base_url=srv.url, timeout=30) as sc, sc.stream("GET", "/api/v1/stream") as resp:
                for _ in resp.iter_lines():
                    connected.set()
                    if done.is_set():
                        return

        t = threading.Thread(target=listen, daemon=True)
        t.start()
        assert connected.wait(10)
        _wait(lambda: val(scrape(c), "loglens_sse_clients") == 1)
        done.set()
        c.post("/api/v1/logs", json=logs[:1])  # an event wakes the listener so it can leave
        t.join(timeout=15)


def test_metrics_need_the_api_token(
    settings_factory: Callable[..., Settings], live_server_factory: Callable[..., LiveServer]
) -> None:
    srv = live_server_factory(settings_factory("server:\n  api_token: t0k3n\n"))
    with srv.client() as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Authorization": "Bearer t0k3n"}).status_code == 200


def test_reason_classes_are_bounded() -> None:
    assert reason_class("malformed JSON: unexpected end") == "malformed"
    assert reason_class("missing required fields: timestamp, service") == "missing_field"
    assert reason_class("timestamp: 400 s in the future") == "timestamp"
    assert reason_class("body exceeds the 10 byte limit") == "too_large"
    assert reason_class("syslog: bad priority") == "protocol"
    assert reason_class("log: must be a JSON object, got array") == "not_an_object"
    assert reason_class("level: must be one of [...]") == "invalid_field"
    assert reason_class("weird") == "other"
