"""`loglens status` from a running server (found through the config) and GET /api/v1/status."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from ops_support import now_iso, write_config
from typer.testing import CliRunner

from loglens.cli import app
from loglens.config import load_settings
from loglens.ops.status import render
from tests_support import LiveServer, free_port

runner = CliRunner()
RULES = "alerts:\n  rules:\n    volume:\n      threshold: 3\n    anomaly:\n      enabled: false\n"


def test_status_from_a_running_server(tmp_path: Path, live_server_factory: Callable[..., LiveServer]) -> None:
    config = write_config(tmp_path, RULES)
    config.write_text(
        config.read_text().replace("notifiers: []\n", "notifiers:\n  - name: console\n    type: console\n")
    )
    srv = live_server_factory(load_settings(config))
    # the server bound an ephemeral port: point the config at it, as a user's config points at theirs
    config.write_text(config.read_text().replace("port: 0\n", f"port: {srv.settings.server.port}\n"))
    logs = [{"timestamp": now_iso(), "level": "ERROR", "service": "pay", "message": f"m{i}"} for i in range(10)]
    with srv.client() as c:
        assert c.post("/api/v1/logs", json=[*logs, {"level": "x"}]).json()["accepted"] == 10
    # no --url: the CLI finds the server at the config's host:port
    result = runner.invoke(app, ["status", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output[result.output.index("{\n") :])  # the in-process console channel prints too
    assert doc["source"] == "server" and doc["config_path"] == str(config.resolve())
    assert doc["store"]["rows"]["logs"] == 10 and doc["store"]["rows"]["dead_letter"] == 1
    assert doc["rates"]["accepted_per_second"] > 0 and doc["rates"]["rejected_per_second"] > 0
    assert {(a["rule"], a["service"]) for a in doc["firing_alerts"]} >= {("volume", "pay")}
    assert doc["notifiers"][0]["name"] == "console"
    assert doc["uptime_seconds"] > 0
    text = runner.invoke(app, ["status", "--config", str(config)]).output
    assert "running server" in text and "firing alerts:" in text and "console (console)" in text
    assert "volume pay" in text
    assert doc["wal"]["lag_bytes"] >= 0 and doc["wal"]["replay_progress"] == 1.0 and doc["wal"]["loader_error"] is None
    assert "wal:" in text and "not yet loaded" in text


def test_status_errors_and_rendering(tmp_path: Path) -> None:
    # an unreachable explicit URL is reported, not a traceback
    result = runner.invoke(app, ["status", "--url", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1 and "cannot reach" in result.output
    config = write_config(tmp_path, "")
    text = runner.invoke(app, ["status", "--config", str(config)]).output
    assert "not running" in text and "notifiers: none" in text
    assert "wal:" in text and "replayed into the database at the next start" in text
    doc = {
        "version": "0",
        "source": "server",
        "uptime_seconds": 5,
        "draining": True,
        "config_path": None,
        "store": {"path": "x", "size_bytes": 3 * 1024 * 1024, "rows": {}},
        "retention": {"logs_days": 7, "metrics_days": 90},
        "rates": None,
        "firing_alerts": [],
        "notifiers": [
            {
                "name": "n",
                "type": "webhook",
                "status": "failing",
                "pending": 1,
                "delivered": 0,
                "dead": 2,
                "last_error": "HTTP 500",
            }
        ],
    }
    doc["wal"] = {
        "bytes": 2048,
        "lag_bytes": 1024,
        "loader_lag_seconds": 3.5,
        "replay_progress": 0.5,
        "loader_error": "IOException: disk full",
    }
    out = render(doc)
    assert "1.0 KiB not yet loaded" in out and "replay 50 %" in out and "loader failing: IOException" in out
    assert "[DRAINING]" in out and "3.0 MiB" in out and "HTTP 500" in out and "(built-in defaults)" in out


def test_status_endpoint_needs_the_token(tmp_path: Path, live_server_factory: Callable[..., LiveServer]) -> None:
    config = write_config(tmp_path, "")
    config.write_text(config.read_text().replace("server:\n", "server:\n  api_token: abc123\n"))
    srv = live_server_factory(load_settings(config))
    assert httpx.get(srv.url + "/api/v1/status").status_code == 401
    result = runner.invoke(app, ["status", "--url", srv.url])
    assert result.exit_code == 1 and "401" in result.output
    result = runner.invoke(app, ["status", "--url", srv.url, "--token", "abc123"])
    assert result.exit_code == 0 and "running server" in result.output
