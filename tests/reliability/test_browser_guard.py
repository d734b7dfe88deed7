"""Issue 17 item 3: without a token, web pages cannot write cross-site nor reach loglens by DNS rebinding,
while every real client (CLI, curl, OTLP, Loki, Elasticsearch shippers) keeps working."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson
import pytest

from loglens.api.security import check_request, host_allowed, same_origin, split_host
from loglens.config import ServerConfig, Settings
from tests_support import LiveServer, count_rows

LOG = {"timestamp": "2026-11-23T14:00:00Z", "level": "ERROR", "service": "web", "message": "m"}


def test_split_host_and_same_origin() -> None:
    assert split_host("[::1]:8080") == ("::1", 8080)
    assert split_host("LocalHost.:80") == ("localhost", 80)
    assert split_host("example.com") == ("example.com", None)
    assert same_origin("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert same_origin("https://logs.example.com", "logs.example.com")
    assert not same_origin("http://127.0.0.1:3000", "127.0.0.1:8080")
    assert not same_origin("null", "127.0.0.1:8080")


@pytest.mark.parametrize(
    ("host", "bind", "allowed", "ok"),
    [
        ("127.0.0.1:8080", "127.0.0.1", [], True),
        ("[::1]:8080", "127.0.0.1", [], True),
        ("localhost:8080", "127.0.0.1", [], True),
        ("app.localhost", "127.0.0.1", [], True),
        ("203.0.113.9", "127.0.0.1", [], True),  # an IP literal cannot be rebound
        ("evil.example:8080", "127.0.0.1", [], False),
        ("logs.example.com", "127.0.0.1", ["logs.example.com"], True),
        ("a.example.com", "127.0.0.1", [".example.com"], True),
        ("example.org", "127.0.0.1", [".example.com"], False),
        ("anything", "127.0.0.1", ["*"], True),
        ("loglens.internal", "loglens.internal", [], True),  # the bind name
    ],
)
def test_host_names_served(host: str, bind: str, allowed: list[str], ok: bool) -> None:
    assert host_allowed(host, ServerConfig(host=bind, allowed_hosts=allowed)) is ok


def test_check_request_rules() -> None:
    server = ServerConfig(cors_origins=["https://grafana.example.com"])
    h = {"host": "127.0.0.1:8080"}
    assert check_request("POST", "/api/v1/logs", {**h, "content-type": "text/plain"}, server)[0] == 415
    assert check_request("POST", "/api/v1/logs", {**h, "content-type": "application/json"}, server) is None
    assert check_request("POST", "/api/v1/logs", h, server) is None  # no type: a shipper, not a form
    assert check_request("POST", "/x", {**h, "origin": "https://evil.example"}, server)[0] == 403
    assert check_request("POST", "/x", {**h, "origin": "https://grafana.example.com"}, server) is None
    assert check_request("POST", "/x", {**h, "origin": "http://127.0.0.1:8080"}, server) is None
    assert check_request("DELETE", "/x", {**h, "sec-fetch-site": "same-site"}, server)[0] == 403
    assert check_request("POST", "/x", {**h, "sec-fetch-site": "same-origin"}, server) is None
    assert check_request("GET", "/x", {**h, "origin": "https://evil.example"}, server) is None  # reads: CORS


def test_cross_site_writes_are_refused_without_a_token(live_server: LiveServer) -> None:
    body = orjson.dumps([LOG] * 30)
    browser = {"origin": "https://evil.example", "sec-fetch-site": "cross-site"}
    with live_server.client() as c:
        # the "simple" request a web page can send without a preflight
        r = c.post("/api/v1/logs", content=body, headers={"content-type": "text/plain"})
        assert r.status_code == 415 and "application/json" in r.json()["detail"]
        r = c.post("/api/v1/logs", content=body, headers={**browser, "content-type": "application/json"})
        assert r.status_code == 403
        for form in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            assert c.post("/api/v1/logs", content=body, headers={"content-type": form}).status_code == 415
        assert c.post("/api/v1/admin/reload", headers=browser).status_code == 403
        silence = {"matchers": {"rule": "x"}, "duration_seconds": 60}
        assert c.post("/api/v1/silences", json=silence, headers=browser).status_code == 403
        assert c.get("/api/v1/silences").json()["silences"] == []
        assert count_rows(live_server, "logs") == 0
        # the same page's own origin (the dashboard) and plain clients are served
        own = {"origin": live_server.url, "sec-fetch-site": "same-origin"}
        assert (
            c.post("/api/v1/logs", content=body, headers={**own, "content-type": "application/json"}).json()["accepted"]
            == 30
        )
        assert c.post("/api/v1/logs", content=orjson.dumps(LOG)).json()["accepted"] == 1  # no content type
    assert count_rows(live_server, "logs") == 31


def test_dns_rebinding_is_refused(live_server: LiveServer) -> None:
    with live_server.client() as c:
        r = c.get("/api/v1/services", headers={"host": "rebind.evil.example"})
        assert r.status_code == 400 and "server.allowed_hosts" in r.json()["detail"]
        assert c.get("/api/v1/services", headers={"host": f"localhost:{live_server.settings.server.port}"}).is_success
        assert c.get("/api/v1/services").is_success


def test_configured_names_and_origins_are_allowed(
    settings_factory: Callable[..., Settings], live_server_factory: Callable[[Settings], LiveServer]
) -> None:
    srv = live_server_factory(
        settings_factory("server: {allowed_hosts: [logs.example.com], cors_origins: ['https://grafana.example.com']}\n")
    )
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/healthz", headers={"host": "logs.example.com"}).status_code == 200
        r = c.post(
            "/api/v1/logs",
            json=LOG,
            headers={"origin": "https://grafana.example.com", "sec-fetch-site": "cross-site"},
        )
        assert r.status_code == 200 and r.json()["accepted"] == 1
