"""The ports alerting talks through (the shared ones live in `loglens.ports`).

- `NotificationSink` (loglens.ports): where alert transitions go (the notifier service);
- `MetaAlerts` / `MetaAlertRelay` (loglens.ports): alerts about loglens itself;
- `AlertPersistence` (here): where alert rows and anomalies are written (the store's `AlertWriter`);
- `Publish` (loglens.ports): the live stream (`EventHub.publish`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from loglens.models import AlertRow, AnomalyDoc
from loglens.ports import MetaAlertRelay, MetaAlerts, NotificationSink, Publish

__all__ = ["AlertPersistence", "MetaAlertRelay", "MetaAlerts", "NotificationSink", "Publish"]


class AlertPersistence(Protocol):
    """Stores alert rows and anomaly documents; must not block on I/O."""

    def save_alerts(self, rows: Sequence[AlertRow]) -> None:
        """Queue alert rows for writing."""
        ...

    def save_anomaly(self, doc: AnomalyDoc, detected_at: float) -> None:
        """Queue an anomaly document for writing."""
        ...
