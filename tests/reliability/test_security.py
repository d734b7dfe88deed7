"""Cross-cutting security checks: loopback by default, the token guards every API route (found by
walking the app's routes, so a new router without protection fails here), CORS off, body limit,
and configured secrets never appear in any API answer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from loglens.config import Settings, load_settings
from tests_support import LiveServer

REPO = Path(__file__).resolve().parents[2]
TOKEN = "tok-3b1f9c2e"
SECRET_URL_TOKEN = "hooks-secret-7f3a91"

# routes that are public on purpose: liveness, the dashboard page and its static files, API docs
_PUBLIC = {"/healthz", "/", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def _routes(app: Any) -> list[tuple[str, str]]:
    """(method, concrete path) of every operation in the app's OpenAPI schema, minus public ones."""
    out = []
    for path, ops in app.openapi()["paths"].items():
        if path in _PUBLIC:
            continue
        for method in ops:
            out.append((method.upper(), path.replace("{", "x").replace("}", "")))
    return out


def test_defaults_bind_loopback_and_cors_is_off() -> None:
    assert Settings().server.host == "127.0.0.1"
    shipped = load_settings(REPO / "config.yaml")
    assert shipped.server.host == "127.0.0.1"
    assert shipped.server.cors_origins == []


def test_every_api_route_needs_the_token(
    settings_factory: Callable[..., Settings], live_server_factory: Callable[..., LiveServer]
) -> None:
    server = live_server_factory(settings_factory(server={"api_token": TOKEN, "admin_token": TOKEN + "-admin"}))
    routes = _routes(server.app)
    assert len(routes) >= 20
    unprotected = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for method, path in routes:
            resp = client.request(method, path, content=b"{}", headers={"content-type": "application/json"})
            if resp.status_code != 401:
                unprotected.append((method, path, resp.status_code))
            wrong = client.request(method, path, headers={"authorization": "Bearer nope"})
            if wrong.status_code != 401:
                unprotected.append((method, path, wrong.status_code, "wrong token"))
        # with the token the API answers (the stream is checked for its first bytes only)
        auth = {"authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/v1/services", headers=auth).status_code == 200
        with client.stream("GET", "/api/v1/stream", headers=auth) as resp:
            assert resp.status_code == 200
        assert client.get("/healthz").status_code == 200  # liveness stays public
    assert unprotected == []


def test_cors_preflight_is_refused_by_default(live_server: LiveServer) -> None:
    resp = httpx.options(
        f"{live_server.url}/api/v1/logs",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in resp.headers


def test_body_limit_answers_413_and_keeps_a_dead_letter(
    settings_factory: Callable[..., Settings], live_server_factory: Callable[..., LiveServer]
) -> None:
    server = live_server_factory(settings_factory(ingest={"max_body_bytes": 10_000}))
    with server.client() as client:
        resp = client.post("/api/v1/logs", content=b"[" + b" " * 20_000 + b"]")
        assert resp.status_code == 413
        import gzip

        bomb = gzip.compress(b" " * 5_000_000)  # 5 KB on the wire, 5 MB inflated
        resp = client.post("/api/v1/logs", content=bomb, headers={"content-encoding": "gzip"})
        assert resp.status_code == 413
    assert server.state.store.query("SELECT count(*) FROM dead_letter WHERE reason LIKE '%limit%'")[0][0] == 2


def test_secrets_never_in_api_answers(
    tmp_path: Path, monkeypatch: Any, live_server_factory: Callable[..., LiveServer]
) -> None:
    from tests_support import make_settings

    monkeypatch.setenv("SOAK_SMTP_PASSWORD", "smtp-pass-99e1")
    settings = make_settings(
        tmp_path,
        f"""
server: {{api_token: {TOKEN}}}
notifiers:
  - name: hook
    type: webhook
    settings: {{url: "http://127.0.0.1:9/hooks/{SECRET_URL_TOKEN}"}}
  - name: mail
    type: email
    settings: {{host: 127.0.0.1, port: 9, from_addr: a@example.com, to: [b@example.com], username: u,
                password_env: SOAK_SMTP_PASSWORD}}
""",
    )
    server = live_server_factory(settings)
    secrets = [TOKEN, SECRET_URL_TOKEN, "smtp-pass-99e1"]
    leaks = []
    with httpx.Client(base_url=server.url, timeout=10, headers={"authorization": f"Bearer {TOKEN}"}) as client:
        for method, path in _routes(server.app):
            if method != "GET" or "stream" in path:
                continue
            body = client.get(path).text
            leaks.extend((path, s) for s in secrets if s in body)
        body = client.get("/openapi.json").text + client.get("/").text
        leaks.extend(("public", s) for s in secrets if s in body)
    assert leaks == []
