"""Notification API and the outbox across a real server restart, with real receivers and the example plugin."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from notify_receivers import Reply, free_port

from loglens.notify import registry


def _wait(
    client: httpx.Client, pred: Callable[[list[dict[str, Any]]], bool], query: str = "state=all", timeout: float = 60
) -> list[dict[str, Any]]:
    """Poll the outbox API; meta-alerts the alerting engine raises about failing channels are left out."""
    deadline = time.monotonic() + timeout
    while True:
        rows = client.get(f"/api/v1/notifications?{query}").json()["notifications"]
        rows = [r for r in rows if r["alert"]["rule"] != "meta"]
        if pred(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"unexpected outbox: {rows}")
        time.sleep(0.02)


def test_example_plugin_is_discovered_through_entry_points() -> None:
    ep = registry.available()["example"]
    assert ep.value == "loglens_example_notifier:ExampleNotifier"
    assert ep.dist is not None and ep.dist.name == "loglens-example-notifier"


def test_api_lists_outbox_and_channel_health_without_secrets(
    settings_factory, live_server_factory, receiver_factory, alert_factory, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET_T1", "very-secret-hmac-key")
    good, broken = receiver_factory(), receiver_factory(default=Reply(404, body=b"gone"))
    out = tmp_path / "example.jsonl"
    settings = settings_factory(f"""
notifiers:
  - name: hook
    type: webhook
    settings: {{url: '{good.url}', secret: '${{HOOK_SECRET_T1}}'}}
  - name: broken
    type: webhook
    severities: [warning]
    settings: {{url: '{broken.url}'}}
  - name: third_party
    type: example
    severities: [critical]
    settings: {{path: '{out}', tag: from-tests}}
outbox: {{initial_backoff_seconds: 0.01, max_backoff_seconds: 0.05}}
""")
    srv = live_server_factory(settings)
    service = srv.state.notifier
    service.submit(alert_factory(alert_id="c-1", summary="checkout <down>"), "firing")
    service.submit(alert_factory(alert_id="w-1", severity="warning", rule="volume"), "firing")
    with srv.client() as client:
        delivered = _wait(client, lambda rows: len(rows) == 3, "state=delivered")
        assert sorted(r["channel"] for r in delivered) == ["hook", "hook", "third_party"]
        dead = _wait(client, lambda rows: len(rows) == 1, "state=dead")
        assert dead[0]["channel"] == "broken" and "HTTP 404: gone" in dead[0]["last_error"]
        assert dead[0]["alert"]["rule"] == "volume" and dead[0]["attempts"] == 1
        assert _wait(client, lambda rows: rows == [], "state=pending") == []
        assert len(client.get("/api/v1/notifications?channel=hook&limit=1").json()["notifications"]) == 1
        assert client.get("/api/v1/notifications?state=bogus").status_code == 422

        resp = client.get("/api/v1/notifiers")
        assert resp.status_code == 200
        health = {h["name"]: h for h in resp.json()["notifiers"]}
        assert health["hook"]["status"] == "ok" and health["hook"]["delivered"] >= 2
        assert health["broken"]["status"] == "failing" and health["broken"]["dead"] == 1
        assert health["third_party"]["type"] == "example" and health["third_party"]["delivered"] >= 1
        assert "very-secret-hmac-key" not in resp.text and "secret-path-token" not in resp.text
        assert "very-secret-hmac-key" not in client.get("/api/v1/notifications").text

        # Retry a dead notification by hand; unknown ids are 404.
        broken.default = Reply(200)
        assert client.post(f"/api/v1/notifications/{dead[0]['id']}/retry").json()["state"] == "pending"
        _wait(client, lambda rows: len(rows) == 4, "state=delivered")
        assert client.post("/api/v1/notifications/nope/retry").status_code == 404

    (line,) = [x for x in map(json.loads, out.read_text().splitlines()) if x["rule"] != "meta"]
    assert line["tag"] == "from-tests" and line["channel"] == "third_party" and line["summary"] == "checkout <down>"
    assert good.requests[0].headers["x-loglens-signature"].startswith("sha256=")


def test_server_restart_resumes_undelivered_exactly_once(
    settings_factory, live_server_factory, receiver_factory, alert_factory
) -> None:
    port = free_port()
    settings = settings_factory(f"""
notifiers:
  - {{name: hook, type: webhook, settings: {{url: 'http://127.0.0.1:{port}/hook'}}}}
outbox: {{initial_backoff_seconds: 0.3, max_backoff_seconds: 0.3}}
""")
    first = live_server_factory(settings)
    alert = alert_factory()
    first.state.notifier.submit(alert, "firing")
    with first.client() as client:
        rows = _wait(client, lambda rows: rows and rows[0]["attempts"] >= 1)
    assert rows[0]["state"] == "pending"
    first.stop()

    receiver = receiver_factory(port=port)
    second = live_server_factory(settings)
    second.state.notifier.submit(alert, "firing")  # re-submitted after restart: same key
    with second.client() as client:
        rows = _wait(client, lambda rows: rows and rows[0]["state"] == "delivered")
    second.stop()
    assert len(rows) == 1 and len(receiver.requests) == 1
    assert receiver.requests[0].headers["idempotency-key"] == rows[0]["id"]


def test_api_token_protects_notification_endpoints(settings_factory, live_server_factory) -> None:
    srv = live_server_factory(settings_factory("server: {api_token: t0ken}\n"))
    with srv.client() as client:
        assert client.get("/api/v1/notifiers").status_code == 401
        resp = client.get("/api/v1/notifiers", headers={"Authorization": "Bearer t0ken"})
        assert resp.status_code == 200 and resp.json()["notifiers"][0]["name"] == "console"
