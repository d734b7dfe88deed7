"""The ports alerting talks through, so each side can be built on its own and wired by the root.

- `NotificationSink`: where alert transitions go to be notified (the notifier service);
- `MetaAlerts`: how other parts (notifiers, the store watch, reload, the series cap) raise and
  resolve alerts about loglens itself (the alert engine implements it);
- `AlertPersistence`: where alert rows and anomalies are written (the store's `AlertWriter`);
- `Publish`: the live stream (`EventHub.publish`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from loglens.models import Alert
from loglens.store.alerts import AlertRow, AnomalyDoc

Publish = Callable[[str, Any], None]


class NotificationSink(Protocol):
    """Takes alert transitions to notify; must not block (the notifier queues them)."""

    def submit(self, alert: Alert, kind: str, duration_seconds: float | None = None) -> None:
        """Hand over one transition (`firing` or `resolved`)."""
        ...


class MetaAlerts(Protocol):
    """Alerts about loglens itself."""

    def raise_meta(self, name: str, summary: str, severity: str = "warning") -> None:
        """Fire the meta-alert `name` (once while it fires)."""
        ...

    def resolve_meta(self, name: str) -> None:
        """Resolve the meta-alert `name` if it fires."""
        ...


class AlertPersistence(Protocol):
    """Stores alert rows and anomaly documents; must not block on I/O."""

    def save_alerts(self, rows: Sequence[AlertRow]) -> None:
        """Queue alert rows for writing."""
        ...

    def save_anomaly(self, doc: AnomalyDoc, detected_at: float) -> None:
        """Queue an anomaly document for writing."""
        ...


class MetaAlertRelay:
    """A `MetaAlerts` that forwards to a target bound later (the engine is built after the
    notifier that needs it); raises before binding are kept and replayed on `bind`."""

    def __init__(self) -> None:
        self._target: MetaAlerts | None = None
        self._early: dict[str, tuple[str, str] | None] = {}

    def bind(self, target: MetaAlerts | None) -> None:
        """Forward to `target` from now on (None: unbind, e.g. when alerting stops)."""
        self._target = target
        if target is not None:
            early, self._early = self._early, {}
            for name, raised in early.items():
                if raised is None:
                    target.resolve_meta(name)
                else:
                    target.raise_meta(name, *raised)

    def raise_meta(self, name: str, summary: str, severity: str = "warning") -> None:
        """Fire the meta-alert `name`."""
        if self._target is None:
            self._early[name] = (summary, severity)
        else:
            self._target.raise_meta(name, summary, severity)

    def resolve_meta(self, name: str) -> None:
        """Resolve the meta-alert `name`."""
        if self._target is None:
            self._early[name] = None
        else:
            self._target.resolve_meta(name)
