"""Alerting under stress with `loglens serve` in its own process (bench/stress.py at small scale).

What must hold, whatever the machine's speed (the timings are reported by the bench, not
asserted here): an alert storm becomes a handful of grouped notifications per channel while a
channel on a closed port fails and ingest keeps answering; a flood of service names is capped
with a meta-alert and a known service still alerts; a full disk still gets the store's
meta-alert to the webhook.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import stress  # bench/stress.py drives the scenarios


def test_alert_storm_becomes_grouped_notifications_and_sigterm_exits(tmp_path: Path) -> None:
    result = stress.storm(1500, tmp_path)
    assert result.absence_fired == 1500  # every silent service alerts...
    assert 1 <= result.notifications["a"] <= 10 and 1 <= result.notifications["b"] <= 10  # ...in a few messages
    assert result.idle_p99_ms < float("inf") and result.storm_p99_ms < float("inf")  # ingest always answered
    assert result.sigterm_s < 60  # SIGTERM ends the process although one channel can never deliver


def test_flood_of_service_names_is_capped_and_a_known_service_still_alerts(tmp_path: Path) -> None:
    result = stress.flood(20_000, tmp_path, max_series=5_000)
    assert result.series_meta  # the cap raised its meta-alert
    assert result.alert_s is not None  # 5 errors in 10 logs fired error_rate on the known service
    assert result.restart_s < 60  # and the server restarts on the flooded store


def test_full_disk_meta_alert_reaches_the_webhook(tmp_path: Path) -> None:
    """Needs root for the tmpfs mount, like tests/reliability/test_disk_full.py."""
    result = stress.disk(tmp_path)
    assert result.first_503  # the disk is full: ingest answers 503
    assert result.meta_s is not None  # and the meta-alert about the store was delivered meanwhile
