"""The demo's alert timeline: overrides, traffic shape, and a short real run."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from loglens.config import Settings
from loglens.demo import _FAST, _history, _records, demo_settings, run_demo


def test_demo_settings_shrink_windows_only_in_fast_mode(settings_factory: Callable[..., Settings]) -> None:
    base = settings_factory()
    fast = demo_settings(base, True).alerts.rules
    assert fast.error_rate.window_seconds == 10 and fast.absence.threshold_seconds == 6
    assert fast.anomaly.window_seconds == 15
    normal = demo_settings(base, False).alerts.rules
    assert normal.error_rate == base.alerts.rules.error_rate and normal.new_pattern.warmup_seconds == 5


def test_demo_traffic_has_each_incident() -> None:
    rng = random.Random(1)
    sent: dict[str, float] = {}
    silent = _records(rng, _FAST, 5.0, 1.0, 1e9, sent)
    assert "auth" not in {r["service"] for r in silent}
    burst = _records(rng, _FAST, 12.0, 1.0, 1e9, sent)
    assert sum(r["service"] == "search" for r in burst) == 24
    slow = _records(rng, _FAST, 16.0, 1.0, 1e9, sent)
    assert min(r["response_time_ms"] for r in slow if r["service"] == "inventory") > 50
    assert len(_history(rng, _FAST, 1e9, minutes=1)) == 5 * 60 * 4 + 15


def test_short_fast_demo_run(settings_factory: Callable[..., Settings], capsys: pytest.CaptureFixture[Any]) -> None:
    assert run_demo(settings_factory(), duration=8, fast=True) == 0
    out = capsys.readouterr().out
    assert "dashboard: http://127.0.0.1:" in out
    assert "FIRING" in out and "error_rate" in out  # the payments spike starts at 3 s


def test_history_has_no_error_burst_in_its_last_minute() -> None:
    """The injected history once put every everyday error line in its last minute, which the
    anomaly detector (rightly) reported as the demo's first line."""
    from loglens.demo import _NORMAL

    now = 1e9
    history = _history(random.Random(1), _NORMAL, now)
    for svc in ("checkout", "payments", "search", "auth", "inventory"):
        last_minute = [r for r in history if r["service"] == svc and r["timestamp"] >= "2001-09-09T01:45:40Z"]
        assert sum(r["level"] == "ERROR" for r in last_minute) <= 2, svc


def test_normal_demo_starts_without_a_spurious_alert(
    settings_factory: Callable[..., Settings], capsys: pytest.CaptureFixture[Any]
) -> None:
    # the first scripted incident starts at 10 s and needs minutes to breach: nothing may fire before
    assert run_demo(settings_factory(), duration=8, fast=False) == 0
    fired = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[FIRING]")]
    assert fired == []


def test_fresh_store_removes_the_previous_run(settings_factory: Callable[..., Settings], tmp_path: Any) -> None:
    from loglens.demo import fresh_store

    settings = settings_factory()
    store = settings.storage.path
    store.parent.mkdir(parents=True, exist_ok=True)
    companions = [store, store.with_name(store.name + ".wal"), store.with_name(store.name + ".templates.json")]
    for f in companions:
        f.write_text("previous run")
    other = store.with_name("notes.txt")
    other.write_text("not the demo's")
    fresh_store(settings)
    assert not any(f.exists() for f in companions) and other.exists()


@pytest.mark.slow
def test_every_alert_fires_and_resolves_through_the_console_notifier(
    settings_factory: Callable[..., Settings], capsys: pytest.CaptureFixture[Any]
) -> None:
    assert run_demo(settings_factory(), duration=70, fast=True) == 0
    out = capsys.readouterr().out
    for rule, service in (
        ("absence", "auth"),
        ("error_rate", "payments"),
        ("volume", "search"),
        ("anomaly", "inventory"),
        ("new_pattern", "checkout"),
    ):
        assert any(line.startswith("[FIRING]") and f" {rule} on {service}:" in line for line in out.splitlines()), (
            rule,
            out,
        )
        assert any(line.startswith("[RESOLVED]") and f" {rule} on {service}:" in line for line in out.splitlines()), (
            rule,
            out,
        )
