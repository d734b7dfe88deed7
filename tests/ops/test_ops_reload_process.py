"""Reload under load with a real server process: POST reload and SIGHUP while clients keep posting."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from ops_support import Load, ServerProcess, stored_messages, write_config

RULES = """alerts:
  evaluation_interval_seconds: 0.2
  rules:
    volume:
      threshold: 50
    anomaly:
      enabled: false
    new_pattern:
      enabled: false
"""


def _threshold(sp: ServerProcess, rule: str) -> float:
    with sp.client() as c:
        return next(r["threshold"] for r in c.get("/api/v1/rules").json()["rules"] if r["name"] == rule)


def test_reload_under_load_loses_nothing(tmp_path: Path, server_process: Callable[[Path], ServerProcess]) -> None:
    config = write_config(tmp_path, RULES)
    sp = server_process(config)
    load = Load(sp.url, clients=3, batch=50).start()
    try:
        load.wait_acked(300)
        with sp.client() as c:
            deadline = time.monotonic() + 60
            while not (
                firing := [
                    a
                    for a in c.get("/api/v1/alerts", params={"state": "firing"}).json()["alerts"]
                    if a["rule"] == "volume"
                ]
            ):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            # 1. POST reload while logs flow: error_rate threshold changes, the volume alert keeps firing
            config.write_text(config.read_text() + "    error_rate:\n      threshold: 0.4\n")
            r = c.post("/api/v1/admin/reload")
            assert r.status_code == 200, r.text
            assert _threshold(sp, "error_rate") == 0.4
            still = [
                a["id"]
                for a in c.get("/api/v1/alerts", params={"state": "firing"}).json()["alerts"]
                if a["rule"] == "volume"
            ]
            assert still == [firing[0]["id"]]
            # 2. SIGHUP: the volume threshold changes
            config.write_text(config.read_text().replace("threshold: 50", "threshold: 7777"))
            sp.signal(signal.SIGHUP)
            deadline = time.monotonic() + 60
            while _threshold(sp, "volume") != 7777:
                assert time.monotonic() < deadline, "SIGHUP did not reload"
                time.sleep(0.05)
            # 3. an invalid file: refused with file:line, the running config stays
            config.write_text(config.read_text().replace("threshold: 7777", "threshold: lots"))
            r = c.post("/api/v1/admin/reload")
            assert r.status_code == 400
            assert any("config.yaml:" in i and "alerts.rules.volume.threshold" in i for i in r.json()["issues"])
            assert _threshold(sp, "volume") == 7777
            acked_before = len(load.acked)
        load.wait_acked(acked_before + 300)
    finally:
        load.stop()
    assert sp.stop() == 0
    missing = load.acked - stored_messages(tmp_path / "store" / "loglens.duckdb")
    assert not missing, f"{len(missing)} acknowledged logs lost across reloads"
    assert not load.statuses.keys() - {200}, load.statuses
    assert any("config reload rejected" in line for line in sp.log_lines())
