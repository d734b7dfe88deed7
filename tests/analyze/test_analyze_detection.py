"""The backtest finds the alerts and anomalies the configured rules would have raised."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analyze_data import START, write_ndjson

from loglens.analyze import AnalyzeOptions, run_analysis
from loglens.config import Settings, parse_settings


def _log(t: float, level: str = "INFO", service: str = "api", rt: float = 50.0) -> dict[str, Any]:
    ts = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "timestamp": ts,
        "level": level,
        "service": service,
        "message": "m",
        "user_id": "u-1",
        "response_time_ms": rt,
    }


def incident_logs() -> list[dict[str, Any]]:
    """api: 1 log/s for 15 min, a 1-minute burst (600 logs, half errors), calm, a 200-s silence, calm."""
    t0 = (START // 60) * 60
    out = [_log(t0 + s, rt=40 + s % 20) for s in range(900)]
    out += [_log(t0 + 900 + i / 10, "ERROR" if i % 2 else "INFO", rt=400.0) for i in range(600)]
    out += [_log(t0 + 960 + s, rt=40 + s % 20) for s in range(120)]
    out += [_log(t0 + 1280 + s, rt=40 + s % 20) for s in range(60)]  # silence 1080..1280
    return out


def test_backtest_raises_error_rate_volume_absence_and_anomalies(tmp_path: Path) -> None:
    settings = parse_settings("{}", base_dir=Path(__file__).resolve().parents[2])
    path = write_ndjson(tmp_path / "incident.ndjson", incident_logs())
    report = run_analysis(settings, AnalyzeOptions(paths=[path], partitions=3, progress=False))
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for a in report["alerts"]:
        by_rule.setdefault(a["rule"], []).append(a)
    assert set(by_rule) == {"error_rate", "volume", "absence", "anomaly"}, report["alerts"]
    (err,) = by_rule["error_rate"]
    assert err["severity"] == "critical" and err["state"] == "resolved" and err["value"] > 0.1
    assert err["started_at"].startswith("2023-11-14T22:28:")  # the burst minute (t0 + 900 s)
    (vol,) = by_rule["volume"]
    assert vol["value"] > 100 and vol["state"] == "resolved"
    (absent,) = by_rule["absence"]
    assert absent["state"] == "resolved" and absent["severity"] == "critical"
    types = {a["type"] for a in report["anomalies"]}
    assert {"volume_spike", "error_rate"} <= types, report["anomalies"]
    for doc in report["anomalies"]:
        assert doc["service"] == "api" and doc["score"] > 3 and doc["window"]["start"] < doc["window"]["end"]
    again = run_analysis(settings, AnalyzeOptions(paths=[path], partitions=1, progress=False))
    assert again["alerts"] == report["alerts"] and again["anomalies"] == report["anomalies"]  # stable ids


def test_disabled_rules_and_for_seconds(tmp_path: Path) -> None:
    text = (
        "alerts:\n  rules:\n    volume: {enabled: false}\n    absence: {enabled: false}\n"
        "    anomaly: {enabled: false}\n    error_rate: {for_seconds: 3000}\n"
    )
    settings = parse_settings(text, base_dir=Path(__file__).resolve().parents[2])
    path = write_ndjson(tmp_path / "incident.ndjson", incident_logs())
    report = run_analysis(settings, AnalyzeOptions(paths=[path], progress=False))
    assert report["alerts"] == [] and report["anomalies"] == []


def test_no_data_no_alerts(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "e.ndjson").write_text("")
    report = run_analysis(settings, AnalyzeOptions(paths=[tmp_path / "e.ndjson"], progress=False))
    assert report["alerts"] == [] and report["anomalies"] == [] and report["detection_notes"]


def test_backtest_and_analyze_report_the_same_alerts_for_the_same_file(tmp_path: Path) -> None:
    """One alert lifecycle: `loglens backtest` (raw logs) and `loglens analyze` (aggregates from
    3 partitions) replay the same evaluator and engine, so the alerts are identical — rule,
    service, ids, values, start, fire and resolve times."""
    from loglens.analyze.backtest import run_backtest

    settings = parse_settings("{}", base_dir=Path(__file__).resolve().parents[2])
    t0 = (START // 60) * 60
    logs = [_log(t0 + s, rt=50.0) for s in range(900)]
    logs += [_log(t0 + 900 + i / 10, "ERROR" if i % 2 else "INFO", rt=50.0) for i in range(600)]
    logs += [_log(t0 + 960 + s, rt=50.0) for s in range(120)]
    logs += [_log(t0 + 1280 + s, rt=50.0, service="web") for s in range(60)]  # api silent from 1080
    logs += [_log(t0 + 1300 + s / 10, "ERROR" if s % 4 == 0 else "INFO", service="web") for s in range(100)]
    path = write_ndjson(tmp_path / "same.ndjson", logs)
    backtest = run_backtest(settings, [path])
    report = run_analysis(settings, AnalyzeOptions(paths=[path], partitions=3, progress=False))
    assert {a["rule"] for a in backtest.alerts} >= {"error_rate", "volume", "absence", "anomaly"}
    assert report["alerts"] == backtest.alerts
    # and the seed's rule: 25 errors out of 100 logs within a minute fires error_rate on `web`
    assert any(a["rule"] == "error_rate" and a["service"] == "web" for a in backtest.alerts)
