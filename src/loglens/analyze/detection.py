"""Alerts and anomalies the configured rules would have raised over the analysed period.

The merged aggregates (per-second counts, per-minute counters and latency sketches) are replayed
through `loglens.alerting.replay`: the live evaluator's rule list, candidate builders, anomaly
baselines and `AlertEngine`, second by second in event time — the very path `loglens backtest`
takes, so both report the same alerts for the same file. Ids are derived from (rule, service,
start), so every engine produces byte-identical reports. Runs on the driver: its input is
already small (per-second counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from loglens import metrics
from loglens.alerting.replay import replay
from loglens.config import Settings
from loglens.detect.validator import AnomalyValidator


@dataclass
class Detection:
    """What the detectors found, plus notes on how they were applied."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_detectors(partials: metrics.Partials, seconds: pa.Table, settings: Settings) -> Detection:
    """Replay the merged aggregates through the configured rules and the anomaly detector."""
    found = replay(settings, seconds, partials, validator=AnomalyValidator(settings.schemas.anomaly))
    out = Detection(alerts=found.alerts(), anomalies=found.anomalies)
    out.notes.append(
        "alerts: the live rules and alert lifecycle replayed every second on event time (absence included), "
        "the same replay `loglens backtest` runs; p95-latency anomalies and new_pattern need per-log data and "
        "are judged by backtest only"
    )
    return out
