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
