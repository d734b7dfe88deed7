"""Issue 17 items 4, 5, 8: secrets masked by type and never echoed, token scopes, dashboard login."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import now_iso, write_config

from loglens.api import auth
from loglens.config import ServerConfig, load_settings, mask_secrets, parse_settings
from loglens.errors import ConfigError
from loglens.notify import registry
from tests_support import LiveServer

TOKENS = "  ingest_token: tok-ingest\n  read_token: tok-read\n  api_token: tok-api\n  admin_token: tok-admin\n"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def log() -> dict[str, Any]:
    return {"timestamp": now_iso(), "level": "INFO", "service": "svc", "message": "m"}


def test_secrets_are_masked_by_type_including_every_notifier_header() -> None:
    settings = parse_settings(
        "server: {admin_token: tok-admin}\n"
        "notifiers:\n"
        "  - {name: hook, type: webhook, settings: {url: 'http://h/x', headers: {Authorization: 'Bearer hdr-secret',"
        " X-Tenant: t1}}}\n"
        "  - {name: s, type: slack, settings: {webhook_url: 'http://hooks/s3cr3t-path'}}\n"
    )
    masked = mask_secrets(settings, registry.secret_fields)
    text = str(masked)
    for secret in ("tok-admin", "hdr-secret", "t1", "s3cr3t-path"):
        assert secret not in text
    assert masked["server"]["admin_token"] == "***" and masked["server"]["api_token"] is None
    assert masked["notifiers"][0]["settings"]["headers"] == {"Authorization": "***", "X-Tenant": "***"}
    assert masked["notifiers"][1]["settings"]["webhook_url"] == "***"


def test_a_rejected_secret_value_is_never_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_settings("server: {api_token: 987654321}\n")
    assert "987654321" not in str(exc.value) and "quote it" in str(exc.value)
    # the command line shows the line and the key, not the value
    cfg = tmp_path / "config.yaml"
    cfg.write_text("server:\n  admin_token: 987654321\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "loglens.cli", "check-config", str(cfg)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and ":2: server.admin_token" in result.stderr and "987654321" not in result.stderr


def test_an_empty_token_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGLENS_TEST_EMPTY_TOKEN", "")
    with pytest.raises(ConfigError, match="set but empty"):
        parse_settings("server:\n  api_token: ${LOGLENS_TEST_EMPTY_TOKEN:-}\n")
    with pytest.raises(ConfigError, match="empty token"):
        parse_settings("server:\n  admin_token: ''\n")
    monkeypatch.delenv("LOGLENS_TEST_EMPTY_TOKEN")
    assert parse_settings("server:\n  api_token: ${LOGLENS_TEST_EMPTY_TOKEN:-}\n").server.api_token is None


def test_a_rejected_reload_never_repeats_the_secret(
    tmp_path: Path, live_server_factory: Callable[..., LiveServer]
) -> None:
    config = write_config(tmp_path, "")
    good = config.read_text().replace("server:\n", "server:\n  admin_token: tok-admin\n")
    config.write_text(good)
    srv = live_server_factory(load_settings(config))
    config.write_text(good.replace("admin_token: tok-admin", "admin_token: 987654321"))
    with srv.client(headers=bearer("tok-admin")) as c:
        r = c.post("/api/v1/admin/reload")
        assert r.status_code == 400 and "server.admin_token" in r.text
        deadline = time.monotonic() + 30
        while not [a for a in c.get("/api/v1/alerts").json()["alerts"] if a["service"] == "config_reload"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        seen = r.text + c.get("/api/v1/status").text + c.get("/api/v1/alerts").text + c.get("/api/v1/config").text
    assert "987654321" not in seen and "tok-admin" not in seen


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("POST", "/api/v1/logs", "ingest"),
        ("POST", "/v1/logs", "ingest"),
        ("POST", "/loki/api/v1/push", "ingest"),
        ("POST", "/api/prom/push", "ingest"),
        ("GET", "/docs/assets/swagger-ui.css", None),
        ("PUT", "/logs-2026/_bulk", "ingest"),
        ("GET", "/api/v1/logs", "read"),
        ("GET", "/metrics", "read"),
        ("GET", "/api/v1/silences", "read"),
        ("POST", "/api/v1/silences", "admin"),
        ("DELETE", "/api/v1/silences/abc", "admin"),
        ("POST", "/api/v1/admin/reload", "admin"),
        ("POST", "/api/v1/dead-letter/replay", "admin"),
        ("POST", "/api/v1/notifications/n1/retry", "admin"),
        ("POST", "/api/v1/some-future-write", "admin"),
        ("GET", "/healthz", None),
        ("GET", "/static/app.js", None),
        ("POST", "/login", None),
    ],
)
def test_route_scopes(method: str, path: str, scope: str | None) -> None:
    assert auth.required_scope(method, path) == scope


def test_each_token_has_only_its_scopes(tmp_path: Path, live_server_factory: Callable[..., LiveServer]) -> None:
    config = write_config(tmp_path, "")
    config.write_text(config.read_text().replace("server:\n", "server:\n" + TOKENS))
    srv = live_server_factory(load_settings(config))
    silence = {"matchers": {"service": "svc"}, "duration_seconds": 60}
    with srv.client() as c:
        expect = {
            "tok-ingest": (200, 403, 403),
            "tok-read": (403, 200, 403),
            "tok-api": (200, 200, 403),  # the shippers' token can no longer mute alerts
            "tok-admin": (200, 200, 201),
        }
        for token, (ingest, read, admin) in expect.items():
            h = bearer(token)
            assert c.post("/api/v1/logs", json=log(), headers=h).status_code == ingest, token
            assert c.get("/api/v1/services", headers=h).status_code == read, token
            assert c.post("/api/v1/silences", json=silence, headers=h).status_code == admin, token
        assert c.post("/api/v1/logs", json=log()).status_code == 401
        # a matcher must name a field
        r = c.post(
            "/api/v1/silences", json={"matchers": {"": "0"}, "duration_seconds": 60}, headers=bearer("tok-admin")
        )
        assert r.status_code == 422


def test_dashboard_login_sets_an_httponly_strict_cookie(
    tmp_path: Path, live_server_factory: Callable[..., LiveServer]
) -> None:
    config = write_config(tmp_path, "")
    config.write_text(config.read_text().replace("server:\n", "server:\n" + TOKENS))
    srv = live_server_factory(load_settings(config))
    same = {"origin": srv.url, "sec-fetch-site": "same-origin"}
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/login").status_code == 200
        assert c.post("/login", data={"token": "nope"}, headers=same).status_code == 401
        assert c.post("/login", data={"token": "tok-ingest"}, headers=same).status_code == 403
        # a cross-site page cannot log the user in (login CSRF)
        evil = {"origin": "https://evil.example", "sec-fetch-site": "cross-site"}
        assert c.post("/login", data={"token": "tok-read"}, headers=evil).status_code == 403
        r = c.post("/login", data={"token": "tok-read"}, headers=same)
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "tok-read" not in cookie
        assert c.get("/api/v1/services").status_code == 200  # the cookie grants read
        assert c.post("/api/v1/silences", json={"matchers": {"a": "b"}, "duration_seconds": 9}).status_code == 403
        c.post("/logout", headers=same)
        assert c.get("/api/v1/services").status_code == 401
        c.cookies.set(auth.COOKIE, "admin.99999999999.forged")
        assert c.get("/api/v1/services").status_code == 401


def test_sessions_expire_and_end_when_the_token_changes() -> None:
    tokens = auth.configured_tokens(ServerConfig(read_token="tok-read"))  # type: ignore[arg-type]
    value = auth.session_value("read", "tok-read", 3600, now=1000)
    assert auth.session_kind(value, tokens, now=2000) == "read"
    assert auth.session_kind(value, tokens, now=5000) is None
    rotated = auth.configured_tokens(ServerConfig(read_token="tok-read-2"))  # type: ignore[arg-type]
    assert auth.session_kind(value, rotated, now=2000) is None


def test_status_reads_the_token_from_the_config(tmp_path: Path, live_server_factory: Callable[..., LiveServer]) -> None:
    config = write_config(tmp_path, "")
    config.write_text(config.read_text().replace("server:\n", "server:\n  read_token: tok-read\n"))
    srv = live_server_factory(load_settings(config))
    env = {k: v for k, v in os.environ.items() if k not in ("LOGLENS_API_TOKEN", "LOGLENS_ADMIN_TOKEN")}
    result = subprocess.run(
        [sys.executable, "-m", "loglens.cli", "status", "--config", str(config), "--url", srv.url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "tok-read" not in result.stdout


def test_ingest_cli_sends_the_configured_ingest_token(
    tmp_path: Path, live_server_factory: Callable[..., LiveServer]
) -> None:
    from typer.testing import CliRunner

    from loglens.cli import app

    config = write_config(tmp_path, "")
    config.write_text(config.read_text().replace("server:\n", "server:\n  ingest_token: tok-ingest\n"))
    srv = live_server_factory(load_settings(config))
    data = tmp_path / "logs.ndjson"
    data.write_text("\n".join(orjson_line() for _ in range(3)) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        app,
        ["ingest", str(data), "--url", srv.url, "--config", str(config)],
        env={"LOGLENS_API_TOKEN": None, "LOGLENS_ADMIN_TOKEN": None},
    )
    assert result.exit_code == 0 and "accepted 3, rejected 0" in result.output, result.output


def orjson_line() -> str:
    import json

    return json.dumps(log())
