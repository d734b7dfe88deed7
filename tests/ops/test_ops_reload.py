"""Hot reload in-process: thresholds switch, firing alerts stay, invalid configs are refused with file:line."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import now_iso, write_config

from loglens.config import load_settings
from loglens.ops.reload import ReloadManager, keep_restart_keys
from tests_support import LiveServer

RULES = """alerts:
  evaluation_interval_seconds: 0.1
  rules:
    error_rate:
      threshold: {err}
      min_events: 5
    volume:
      threshold: {vol}
    anomaly:
      enabled: false
    new_pattern:
      enabled: false
"""


def _wait(predicate: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def _firing(c: httpx.Client, rule: str) -> list[dict[str, Any]]:
    return [a for a in c.get("/api/v1/alerts", params={"state": "firing"}).json()["alerts"] if a["rule"] == rule]


def _post(c: httpx.Client, n: int, service: str = "svc", level: str = "INFO") -> None:
    body = [{"timestamp": now_iso(), "level": level, "service": service, "message": f"m{i}"} for i in range(n)]
    assert c.post("/api/v1/logs", json=body).json()["accepted"] == n


def test_reload_switches_thresholds_and_keeps_firing_alerts(
    tmp_path: Path, live_server_factory: Callable[..., LiveServer]
) -> None:
    config = write_config(tmp_path, RULES.format(err=0.1, vol=5))
    srv = live_server_factory(load_settings(config))
    with srv.client() as c:
        _post(c, 20)
        fired = _wait(lambda: _firing(c, "volume"))[0]
        # an unrelated threshold changes: the firing alert is kept as it is
        config.write_text(config.read_text().replace("threshold: 0.1", "threshold: 0.5"))
        r = c.post("/api/v1/admin/reload")
        assert r.status_code == 200, r.text
        assert r.json()["ok"] and "alerts.rules" in r.json()["changed"]
        rules = {x["name"]: x for x in c.get("/api/v1/rules").json()["rules"]}
        assert rules["error_rate"]["threshold"] == 0.5
        assert srv.state.evaluator.alerts.rules.error_rate.threshold == 0.5
        assert [a["id"] for a in _firing(c, "volume")] == [fired["id"]]
        # the volume threshold itself rises: the alert resolves on the next evaluation
        config.write_text(config.read_text().replace("threshold: 5\n", "threshold: 100000\n"))
        assert c.post("/api/v1/admin/reload").status_code == 200
        _wait(lambda: not _firing(c, "volume"))
        status = c.get("/api/v1/status").json()
        assert status["last_reload"]["ok"] is True


def test_invalid_config_keeps_the_old_one_and_raises_a_meta_alert(
    tmp_path: Path, live_server_factory: Callable[..., LiveServer]
) -> None:
    config = write_config(tmp_path, RULES.format(err=0.1, vol=100))
    srv = live_server_factory(load_settings(config))
    good = config.read_text()
    lines = good.splitlines()
    bad_line = next(i for i, line in enumerate(lines, 1) if "min_events" in line)
    config.write_text(good.replace("min_events: 5", "min_event: 5"))
    with srv.client() as c:
        before = c.get("/api/v1/config").json()
        r = c.post("/api/v1/admin/reload")
        assert r.status_code == 400
        issues = r.json()["issues"]
        assert any(f"config.yaml:{bad_line}:" in i and "min_event" in i and "min_events" in i for i in issues), issues
        assert c.get("/api/v1/config").json() == before
        assert srv.state.settings.alerts.rules.error_rate.min_events == 5
        meta = _wait(lambda: [a for a in _firing(c, "meta") if a["service"] == "config_reload"])
        assert "min_event" in meta[0]["summary"]
        metrics = c.get("/metrics").text
        assert 'loglens_config_reloads_total{result="failure"} 1.0' in metrics
        assert "loglens_config_last_reload_successful 0.0" in metrics
        # a schema file that does not exist is refused too, naming the file
        config.write_text(good.replace("log_schema.yaml", "missing_schema.yaml"))
        r = c.post("/api/v1/admin/reload")
        assert r.status_code == 400 and "missing_schema.yaml" in r.json()["issues"][0]
        config.write_text(good.replace("min_events: 5", "min_events: 7"))
        assert c.post("/api/v1/admin/reload").status_code == 200
        assert srv.state.settings.alerts.rules.error_rate.min_events == 7
        _wait(lambda: not [a for a in _firing(c, "meta") if a["service"] == "config_reload"])


def test_reload_needs_the_admin_token_and_config_masks_secrets(
    tmp_path: Path, live_server_factory: Callable[..., LiveServer]
) -> None:
    config = write_config(tmp_path, "")
    config.write_text(
        config.read_text().replace("server:\n", "server:\n  api_token: tok-api\n  admin_token: tok-admin\n")
    )
    srv = live_server_factory(load_settings(config))
    with srv.client() as c:
        assert c.post("/api/v1/admin/reload").status_code == 401
        api = {"Authorization": "Bearer tok-api"}
        assert c.post("/api/v1/admin/reload", headers=api).status_code == 403  # valid token, no admin scope
        r = c.post("/api/v1/admin/reload", headers={"Authorization": "Bearer tok-admin"})
        assert r.status_code == 200
        doc = c.get("/api/v1/config", headers=api).json()
        assert doc["config"]["server"]["api_token"] == "***"
        assert doc["config"]["server"]["admin_token"] == "***"
        assert "tok-api" not in str(doc) and "tok-admin" not in str(doc)
        assert doc["config_path"] == str(config.resolve())


def test_reload_adds_and_removes_notifier_channels(
    tmp_path: Path, live_server_factory: Callable[..., LiveServer]
) -> None:
    config = write_config(tmp_path, "")
    srv = live_server_factory(load_settings(config))
    hook = "notifiers:\n  - name: hook\n    type: webhook\n    settings:\n      url: http://127.0.0.1:9/x\n"
    with srv.client() as c:
        assert [n["name"] for n in c.get("/api/v1/notifiers").json()["notifiers"]] == []
        config.write_text(config.read_text().replace("notifiers: []\n", hook))
        assert c.post("/api/v1/admin/reload").status_code == 200
        assert [n["name"] for n in c.get("/api/v1/notifiers").json()["notifiers"]] == ["hook"]
        # a plugin setting the plugin refuses vetoes the whole reload
        config.write_text(config.read_text().replace("http://127.0.0.1:9/x", "not a url"))
        r = c.post("/api/v1/admin/reload")
        assert r.status_code == 400 and any("url" in i for i in r.json()["issues"])
        assert [n["name"] for n in c.get("/api/v1/notifiers").json()["notifiers"]] == ["hook"]
        config.write_text(
            config.read_text().replace(
                hook.replace("http://127.0.0.1:9/x", "not a url"), "notifiers:\n  - name: console\n    type: console\n"
            )
        )
        assert c.post("/api/v1/admin/reload").status_code == 200
        assert [n["name"] for n in c.get("/api/v1/notifiers").json()["notifiers"]] == ["console"]


def test_watch_config_reloads_on_change_and_restart_keys_are_kept(
    tmp_path: Path, live_server_factory: Callable[..., LiveServer]
) -> None:
    config = write_config(tmp_path, "logging:\n  level: INFO\n")
    config.write_text(
        config.read_text().replace("server:\n", "server:\n  watch_config: true\n  watch_interval_seconds: 0.05\n")
    )
    settings = load_settings(config)
    srv = live_server_factory(settings)
    port = settings.server.port
    text = config.read_text().replace("level: INFO", "level: DEBUG").replace(f"port: {port}", f"port: {port + 1}")
    config.write_text(text)
    manager: ReloadManager = srv.state.reload
    result = _wait(lambda: manager.last)
    assert result.ok and result.trigger == "watch"
    assert result.restart_required == ["server.port"]
    assert srv.state.settings.server.port == srv.settings.server.port
    assert srv.state.settings.logging.level == "DEBUG"


def test_keep_restart_keys_and_no_config_file(tmp_path: Path) -> None:
    old = load_settings(write_config(tmp_path, ""))
    new = old.model_copy(update={"storage": old.storage.model_copy(update={"path": tmp_path / "other.duckdb"})})
    kept, differ = keep_restart_keys(old, new)
    assert kept.storage.path == old.storage.path and differ == ["storage.path"]
    # CORS is installed when the app is built: a reload keeps the running origins and says so
    cors = old.model_copy(update={"server": old.server.model_copy(update={"cors_origins": ["https://ops.example"]})})
    kept, differ = keep_restart_keys(old, cors)
    assert kept.server.cors_origins == [] and differ == ["server.cors_origins"]


@pytest.mark.anyio
async def test_reload_without_a_config_file_is_refused(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.post("/api/v1/admin/reload")
    assert r.status_code == 400 and "no config file" in r.json()["issues"][0]
