"""The narrow interfaces (ports) stages reach each other through.

A stage that needs another one names the port here instead of importing the other stage, and
`loglens.runtime` plugs the real part in. This keeps the import graph one-way (see
docs/architecture.md) and lets tests pass a small stand-in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from loglens.models import Alert

# Live-update publisher (the SSE hub): `publish(kind, json_able_data)`, safe from any thread.
Publish = Callable[[str, Any], None]
# A config-reload step a component returns from its prepare hook; awaited when it is a coroutine.
ReloadApply = Callable[[], Awaitable[None] | None]


class NotificationSink(Protocol):
    """Where the alert lifecycle hands its transitions (the notifier service in the server)."""

    def submit(self, alert: Alert, kind: str, duration_seconds: float | None = None) -> None:
        """Queue `alert`'s transition `kind` (firing / resolved) for delivery; thread-safe, quick."""


class MetaAlerts(Protocol):
    """Alerts about loglens itself: a failing channel, a failing store, a rejected config reload."""

    def raise_meta(self, name: str, summary: str, severity: str = "warning") -> None:
        """Fire (or keep firing) the meta-alert `name`."""

    def resolve_meta(self, name: str) -> None:
        """Resolve the meta-alert `name` if it fires."""


class MetaAlertRelay:
    """A `MetaAlerts` that forwards to a target bound later.

    The alert engine exists only once alerting has started (it restores state from the store),
    after the notifier, the store watch and reload that raise meta-alerts were built. Raises and
    resolves before `bind` are kept (the latest per name) and replayed on `bind`, so a channel
    that fails early still pages. Binding None (alerting stopped) starts keeping them again.
    """

    def __init__(self) -> None:
        self._target: MetaAlerts | None = None
        self._early: dict[str, tuple[str, str] | None] = {}

    def bind(self, target: MetaAlerts | None) -> None:
        """Forward to `target` from now on; replay what was raised or resolved meanwhile."""
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
