"""Alerts and anomalies over the analysed period, from the pure detectors in `loglens.detect`.

The detectors are the live server's (`loglens.detect.rules` / `loglens.detect.anomaly`); this
module only replays the merged aggregates through them. When a detector module is not
installed in this build, the report says so instead of inventing results.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from loglens import metrics
from loglens.config import Settings


@dataclass
class Detection:
    """What the detectors found, plus a note per detector that could not run."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def run_detectors(partials: metrics.Partials, seconds: pa.Table, settings: Settings) -> Detection:
    """Replay per-second and per-minute aggregates through the configured rules and detectors."""
    found = Detection()
    rules = _module("loglens.detect.rules")
    backtest = getattr(rules, "backtest", None)
    if backtest is None:
        found.notes.append("alert rules: loglens.detect.rules.backtest is not available in this build")
    else:
        found.alerts = [dict(a) for a in backtest(settings.alerts, partials, seconds)]
    anomaly = _module("loglens.detect.anomaly")
    backtest_anomalies = getattr(anomaly, "backtest", None)
    if backtest_anomalies is None:
        found.notes.append("anomalies: loglens.detect.anomaly.backtest is not available in this build")
    else:
        found.anomalies = [dict(a) for a in backtest_anomalies(settings.alerts, partials)]
    return found
