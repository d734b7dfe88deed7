"""The notifier plugin protocol and the helpers every channel shares.

A plugin is any class with:

- `name: ClassVar[str]` — its type name (the entry point name in group `loglens.notifiers`);
- `Config: type[pydantic.BaseModel]` — validated from `NotifierConfig.settings` (subclass
  `NotifierSettings` to get `extra="forbid"` so typos are reported, not ignored);
- `__init__(self, config)` taking a validated `Config`;
- `async send(self, notification)` raising `TransientNotifierError` (retry, optionally with
  `retry_after`) or `PermanentNotifierError` (give up); anything else counts as transient;
- optionally `async aclose(self)` to release clients when the service stops.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, runtime_checkable
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

from loglens.errors import PermanentNotifierError
from loglens.models import Alert, Notification, iso, utcnow

# A plugin's own client timeout when its config leaves it to the outbox (the outbox's per-attempt
# timeout bounds every attempt anyway; this only keeps a client from waiting forever).
FALLBACK_TIMEOUT_SECONDS = 30.0

# Colours shared by Slack, email and anything else that paints a notification.
COLORS: dict[str, str] = {
    "critical": "#d32f2f",
    "warning": "#f9a825",
    "info": "#1976d2",
    "resolved": "#2e7d32",
}


class NotifierSettings(BaseModel):
    """Base of plugin config models: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@runtime_checkable
class Notifier(Protocol):
    """What the registry and the outbox need from a channel plugin."""

    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]]

    def __init__(self, config: Any) -> None: ...

    async def send(self, notification: Notification) -> None:
        """Deliver one notification or raise a NotifierError."""
        ...


def notification_id(alert: Alert, kind: str, channel: str) -> str:
    """Idempotency key: the same alert transition on the same channel always gets the same id."""
    moment = alert.resolved_at if kind == "resolved" else (alert.fired_at or alert.started_at)
    raw = f"{alert.id}|{kind}|{iso(moment)}|{channel}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    """The alert as the API documents it (same keys as GET /api/v1/alerts)."""
    return alert.to_json()


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def alert_from_dict(data: dict[str, Any]) -> Alert:
    """Inverse of `alert_to_dict`."""
    started = _parse_time(data["started_at"])
    assert started is not None
    return Alert(
        id=data["id"],
        rule=data["rule"],
        service=data["service"],
        severity=data["severity"],
        state=data["state"],
        value=data.get("value"),
        threshold=data.get("threshold"),
        summary=data["summary"],
        started_at=started,
        fired_at=_parse_time(data.get("fired_at")),
        resolved_at=_parse_time(data.get("resolved_at")),
        labels=dict(data.get("labels") or {}),
    )


def notification_to_dict(n: Notification) -> dict[str, Any]:
    """The JSON body a webhook receives, and the payload kept in the outbox."""
    return {
        "id": n.id,
        "channel": n.channel,
        "kind": n.kind,
        "created_at": iso(n.created_at),
        "duration_seconds": n.duration_seconds,
        "alert": alert_to_dict(n.alert),
    }


def notification_from_dict(data: dict[str, Any]) -> Notification:
    """Inverse of `notification_to_dict`."""
    created = _parse_time(data["created_at"])
    assert created is not None
    return Notification(
        id=data["id"],
        channel=data["channel"],
        kind=data["kind"],
        alert=alert_from_dict(data["alert"]),
        created_at=created,
        duration_seconds=data.get("duration_seconds"),
    )


def color_of(n: Notification) -> str:
    """Red for critical, yellow for warning, green once resolved."""
    if n.kind == "resolved":
        return COLORS["resolved"]
    return COLORS.get(n.alert.severity, COLORS["info"])


def format_duration(seconds: float | None) -> str:
    """`1h 2m 3s` style, for resolve messages."""
    if seconds is None:
        return "unknown"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s"]
    return " ".join(p for p in parts if p)


def title_of(n: Notification) -> str:
    """One line: `[FIRING] critical error_rate on checkout`."""
    a = n.alert
    tag = {"firing": "FIRING", "resolved": "RESOLVED", "test": "TEST"}.get(n.kind, n.kind.upper())
    return f"[{tag}] {a.severity} {a.rule} on {a.service}"


def detail_lines(n: Notification) -> list[tuple[str, str]]:
    """(label, value) pairs every channel shows, unescaped: each channel escapes for its format."""
    a = n.alert
    rows = [("Summary", a.summary), ("Service", a.service), ("Rule", a.rule), ("Severity", a.severity)]
    if a.value is not None:
        rows.append(("Value", f"{a.value:g}"))
    if a.threshold is not None:
        rows.append(("Threshold", f"{a.threshold:g}"))
    rows.append(("Started", iso(a.started_at) or ""))
    if n.kind == "resolved":
        rows.append(("Resolved", iso(a.resolved_at) or ""))
        rows.append(("Fired for", format_duration(n.duration_seconds)))
    rows.extend((f"label {k}", v) for k, v in sorted(a.labels.items()))
    rows.append(("Notification id", n.id))
    return rows


def render_text(n: Notification) -> str:
    """Plain-text body: the title, then one `Label: value` line per detail."""
    return "\n".join([title_of(n), *(f"{k}: {v}" for k, v in detail_lines(n))])


def sample_notification(channel: str) -> Notification:
    """The notification `loglens notify test CHANNEL` sends."""
    now = utcnow()
    alert = Alert(
        id=f"test-{int(now.timestamp() * 1000)}",
        rule="test",
        service="loglens",
        severity="warning",
        state="firing",
        value=None,
        threshold=None,
        summary=f"Test notification from loglens to channel {channel!r}",
        started_at=now,
        fired_at=now,
        labels={"test": "true"},
    )
    return Notification(
        id=notification_id(alert, "test", channel), channel=channel, kind="test", alert=alert, created_at=now
    )


def resolve_secret(value: SecretStr | None, env_name: str | None, what: str) -> str | None:
    """A secret given inline (already `${ENV}`-interpolated) or by environment variable name."""
    if value is not None:
        return value.get_secret_value()
    if env_name:
        found = os.environ.get(env_name)
        if not found:
            raise PermanentNotifierError(f"{what}: environment variable {env_name} is not set")
        return found
    return None


def redact_url(url: str) -> str:
    """`scheme://host:port` only — paths and queries of webhook URLs often carry tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
