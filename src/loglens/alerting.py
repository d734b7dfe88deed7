"""The alert state machine: pending → firing → resolved per (rule, service), with silences,
inhibition, burst grouping, an injectable clock and persistence in DuckDB.

`AlertEngine.observe(candidates)` takes rule outcomes (see `loglens.detect.rules.Candidate`) and
returns the transitions it made. Notifications go through the `notify(alert, kind, duration)`
callback exactly once per transition that a person should hear about:

- a firing alert that is silenced or inhibited is tracked but not notified; if the silence
  expires (or the inhibiting alert resolves) while it still fires, it is notified then;
- a resolve is notified only for alerts whose firing was notified, with how long it fired;
- inhibition: a firing `absence` alert for a service suppresses that service's `error_rate`
  and `volume` alerts (a dead service's other symptoms are noise);
- grouping: with `group_wait_seconds` > 0, notifications of a burst are held and handed over
  together when the first of them has waited that long.

With an `AlertDB`, every state change is written before it is notified, and `restore()` brings
back pending/firing alerts after a restart *without* notifying them again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson

from loglens.config import AlertsConfig
from loglens.detect.documents import to_dt
from loglens.detect.rules import Candidate
from loglens.models import Alert, iso

log = logging.getLogger("loglens.alerting")

INHIBITED_BY_ABSENCE = frozenset({"error_rate", "volume"})
Notify = Callable[[Alert, str, float | None], None]
Publish = Callable[[str, Any], None]


def _naive(dt: datetime | None) -> datetime | None:
    return dt.astimezone(UTC).replace(tzinfo=None) if dt is not None and dt.tzinfo else dt


def _aware(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def alert_json(alert: Alert, silenced: bool = False) -> dict[str, Any]:
    """The API / SSE shape of an alert."""
    return {**alert.to_json(), "silenced": silenced}


@dataclass(frozen=True, slots=True)
class Silence:
    """Mute notifications of alerts whose fields/labels equal every matcher, until `expires_at`."""

    id: str
    matchers: dict[str, str]
    starts_at: float
    expires_at: float
    comment: str = ""
    created_by: str = ""
    created_at: float = 0.0

    def active(self, now: float) -> bool:
        """Whether the silence is in force at `now`."""
        return self.starts_at <= now < self.expires_at

    def matches(self, alert: Alert) -> bool:
        """All matchers equal the alert's rule/service/severity or one of its labels."""
        fields = {"rule": alert.rule, "service": alert.service, "severity": alert.severity, **alert.labels}
        return all(fields.get(k) == v for k, v in self.matchers.items())

    def to_json(self) -> dict[str, Any]:
        """The API shape of a silence."""
        return {
            "id": self.id,
            "matchers": dict(self.matchers),
            "starts_at": iso(to_dt(self.starts_at)),
            "expires_at": iso(to_dt(self.expires_at)),
            "comment": self.comment,
            "created_by": self.created_by,
            "created_at": iso(to_dt(self.created_at)),
        }


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change of an alert (`kind`: pending, firing, resolved) and whether it was notified."""

    alert: Alert
    kind: str
    notified: bool
    duration_seconds: float | None = None


@dataclass(slots=True)
class _Active:
    alert: Alert
    notified: bool = False
    clear_since: float | None = None  # when the condition of a firing alert last stopped breaching


@dataclass(slots=True)
class _Group:
    due: float
    items: list[tuple[Alert, str, float | None]] = field(default_factory=list)


class AlertDB:
    """Persistence of alerts, anomalies and silences on a dedicated DuckDB connection."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self.cur = cursor
        self.lock = threading.Lock()

    def close(self) -> None:
        """Close the connection."""
        with self.lock, contextlib.suppress(duckdb.Error):
            self.cur.close()

    def save_alert(self, alert: Alert, notified: bool, now: float) -> None:
        """Insert or update the alert's row."""
        with self.lock:
            self.cur.execute(
                "INSERT OR REPLACE INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    alert.id,
                    alert.rule,
                    alert.service,
                    alert.severity,
                    alert.state,
                    alert.value,
                    alert.threshold,
                    alert.summary,
                    _naive(alert.started_at),
                    _naive(alert.fired_at),
                    _naive(alert.resolved_at),
                    orjson.dumps(alert.labels).decode(),
                    notified,
                    _naive(to_dt(now)),
                ],
            )

    def load_active(self) -> list[tuple[Alert, bool]]:
        """Pending and firing alerts with their notified flag."""
        with self.lock:
            rows = self.cur.execute(
                "SELECT id, rule, service, severity, state, value, threshold, summary, started_at, fired_at, "
                "resolved_at, labels, notified FROM alerts WHERE state IN ('pending', 'firing')"
            ).fetchall()
        return [(self._alert(r), bool(r[12])) for r in rows]

    def list_alerts(self, state: str | None, limit: int) -> list[Alert]:
        """Alerts newest first, optionally of one state."""
        sql = (
            "SELECT id, rule, service, severity, state, value, threshold, summary, started_at, fired_at, "
            "resolved_at, labels FROM alerts"
        )
        params: list[Any] = []
        if state:
            sql += " WHERE state = ?"
            params.append(state)
        sql += " ORDER BY started_at DESC, id LIMIT ?"
        params.append(limit)
        with self.lock:
            rows = self.cur.execute(sql, params).fetchall()
        return [self._alert(r) for r in rows]

    @staticmethod
    def _alert(r: tuple[Any, ...]) -> Alert:
        return Alert(
            id=r[0],
            rule=r[1],
            service=r[2],
            severity=r[3],
            state=r[4],
            value=r[5],
            threshold=r[6],
            summary=r[7],
            started_at=_aware(r[8]) or to_dt(0),
            fired_at=_aware(r[9]),
            resolved_at=_aware(r[10]),
            labels=orjson.loads(r[11]),
        )

    def save_anomaly(self, doc: dict[str, Any], detected_at: datetime) -> None:
        """Store an anomaly document (already validated against the schema)."""
        with self.lock:
            self.cur.execute(
                "INSERT OR REPLACE INTO anomalies VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    doc["id"],
                    _naive(detected_at),
                    doc["type"],
                    doc["severity"],
                    doc["service"],
                    doc["score"],
                    orjson.dumps(doc).decode(),
                ],
            )

    def list_anomalies(self, limit: int, service: str | None = None) -> list[dict[str, Any]]:
        """Anomaly documents, newest first."""
        sql = "SELECT doc FROM anomalies"
        params: list[Any] = []
        if service:
            sql += " WHERE service = ?"
            params.append(service)
        sql += " ORDER BY detected_at DESC, id LIMIT ?"
        params.append(limit)
        with self.lock:
            return [orjson.loads(r[0]) for r in self.cur.execute(sql, params).fetchall()]

    def save_silence(self, s: Silence) -> None:
        """Insert a silence."""
        with self.lock:
            self.cur.execute(
                "INSERT OR REPLACE INTO silences VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    s.id,
                    orjson.dumps(s.matchers).decode(),
                    _naive(to_dt(s.starts_at)),
                    _naive(to_dt(s.expires_at)),
                    s.comment,
                    s.created_by,
                    _naive(to_dt(s.created_at)),
                ],
            )

    def delete_silence(self, silence_id: str) -> None:
        """Remove a silence."""
        with self.lock:
            self.cur.execute("DELETE FROM silences WHERE id = ?", [silence_id])

    def load_silences(self) -> list[Silence]:
        """Every stored silence."""
        with self.lock:
            rows = self.cur.execute(
                "SELECT id, matchers, starts_at, expires_at, comment, created_by, created_at FROM silences"
            ).fetchall()
        return [Silence(r[0], orjson.loads(r[1]), _epoch(r[2]), _epoch(r[3]), r[4], r[5], _epoch(r[6])) for r in rows]


def _epoch(dt: datetime) -> float:
    return (_aware(dt) or to_dt(0)).timestamp()


class AlertEngine:
    """Alert lifecycle for every (rule, service) key. Thread-safe; time comes from `clock`."""

    def __init__(
        self,
        config: AlertsConfig,
        *,
        clock: Callable[[], float] = time.time,
        db: AlertDB | None = None,
        notify: Notify | None = None,
        publish: Publish | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.db = db
        self.notify = notify
        self.publish = publish
        self._active: dict[tuple[str, str], _Active] = {}
        self._silences: dict[str, Silence] = {}
        self._group: _Group | None = None
        self._lock = threading.RLock()
        self.notifications = 0  # handed to `notify`, for tests and /metrics
        self.history: list[Transition] = []  # firing/resolved transitions (backtest reads them)
        self.keep_history = False

    # ---- restore ---------------------------------------------------------------------------
    def restore(self) -> int:
        """Load pending/firing alerts and silences from the DB; nothing is notified."""
        if self.db is None:
            return 0
        with self._lock:
            for alert, notified in self.db.load_active():
                self._active[(alert.rule, alert.service)] = _Active(alert, notified)
            now = self.clock()
            for s in self.db.load_silences():
                if s.expires_at > now:
                    self._silences[s.id] = s
            return len(self._active)

    # ---- queries ---------------------------------------------------------------------------
    def active(self) -> list[Alert]:
        """Pending and firing alerts."""
        with self._lock:
            return [a.alert for a in self._active.values()]

    def get(self, rule: str, service: str) -> Alert | None:
        """The pending/firing alert of a dedup key, if any."""
        with self._lock:
            entry = self._active.get((rule, service))
            return entry.alert if entry else None

    def is_suppressed(self, alert: Alert, now: float | None = None) -> bool:
        """Silenced or inhibited at `now`."""
        now = self.clock() if now is None else now
        with self._lock:
            return self._silenced(alert, now) or self._inhibited(alert)

    def _silenced(self, alert: Alert, now: float) -> bool:
        return any(s.active(now) and s.matches(alert) for s in self._silences.values())

    def _inhibited(self, alert: Alert) -> bool:
        if alert.rule not in INHIBITED_BY_ABSENCE:
            return False
        absent = self._active.get(("absence", alert.service))
        return absent is not None and absent.alert.state == "firing"

    # ---- lifecycle -------------------------------------------------------------------------
    def observe(self, candidates: Iterable[Candidate]) -> list[Transition]:
        """Apply rule outcomes; keys not mentioned are left as they are."""
        now = self.clock()
        out: list[Transition] = []
        with self._lock:
            for c in candidates:
                t = self._apply(c, now)
                if t is not None:
                    out.append(t)
            out.extend(self._release(now))
            self._flush(now)
        return out

    def _apply(self, c: Candidate, now: float) -> Transition | None:
        key = (c.rule, c.service)
        entry = self._active.get(key)
        if c.breach:
            if entry is None:
                alert = Alert(
                    id=uuid.uuid4().hex,
                    rule=c.rule,
                    service=c.service,
                    severity=c.severity,
                    state="pending",
                    value=c.value,
                    threshold=c.threshold,
                    summary=c.summary,
                    started_at=to_dt(now),
                    labels=dict(c.labels),
                )
                entry = self._active[key] = _Active(alert)
                if c.for_seconds > 0:
                    self._persist(entry, now)
                    self._announce(entry)
                    return Transition(alert, "pending", False)
            else:
                entry.clear_since = None
                entry.alert = replace(entry.alert, value=c.value, summary=c.summary, labels=dict(c.labels))
            # (1 µs slack: started_at went through a datetime, which rounds to microseconds)
            if entry.alert.state == "pending" and now - entry.alert.started_at.timestamp() >= c.for_seconds - 1e-6:
                return self._fire(entry, now)
            return None
        if entry is None:
            return None
        if entry.alert.state == "pending":  # never fired: drop quietly
            del self._active[key]
            entry.alert = replace(entry.alert, state="resolved", resolved_at=to_dt(now), value=c.value)
            self._persist(entry, now)
            self._announce(entry)
            return None
        # Flap damping: resolve only once the condition has stayed clear for resolve_after_seconds.
        if entry.clear_since is None:
            entry.clear_since = now
        if now - entry.clear_since < self.config.resolve_after_seconds - 1e-6:
            return None
        return self._resolve(entry, now, c.value)

    def _fire(self, entry: _Active, now: float) -> Transition:
        entry.alert = replace(entry.alert, state="firing", fired_at=to_dt(now))
        notify = not (self._silenced(entry.alert, now) or self._inhibited(entry.alert))
        entry.notified = notify
        self._persist(entry, now)
        self._announce(entry)
        if notify:
            self._dispatch(entry.alert, "firing", None, now)
        t = Transition(entry.alert, "firing", notify)
        if self.keep_history:
            self.history.append(t)
        return t

    def _resolve(self, entry: _Active, now: float, value: float | None) -> Transition:
        key = (entry.alert.rule, entry.alert.service)
        self._active.pop(key, None)
        fired = entry.alert.fired_at.timestamp() if entry.alert.fired_at else now
        duration = round(now - fired, 3)
        entry.alert = replace(entry.alert, state="resolved", resolved_at=to_dt(now), value=value)
        self._persist(entry, now)
        self._announce(entry)
        if entry.notified:
            self._dispatch(entry.alert, "resolved", duration, now)
        t = Transition(entry.alert, "resolved", entry.notified, duration)
        if self.keep_history:
            self.history.append(t)
        return t

    def _release(self, now: float) -> list[Transition]:
        """Notify firing alerts whose silence expired or whose inhibiting alert resolved."""
        out = []
        for entry in list(self._active.values()):
            if (
                entry.alert.state == "firing"
                and not entry.notified
                and not (self._silenced(entry.alert, now) or self._inhibited(entry.alert))
            ):
                entry.notified = True
                self._persist(entry, now)
                self._dispatch(entry.alert, "firing", None, now)
                out.append(Transition(entry.alert, "firing", True))
        return out

    def tick(self) -> list[Transition]:
        """Timer work: expire silences, release unsuppressed alerts, flush a due group."""
        now = self.clock()
        with self._lock:
            for sid in [sid for sid, s in self._silences.items() if s.expires_at <= now]:
                del self._silences[sid]
            out = self._release(now)
            self._flush(now)
            return out

    # ---- notifications ---------------------------------------------------------------------
    def _dispatch(self, alert: Alert, kind: str, duration: float | None, now: float) -> None:
        wait = self.config.group_wait_seconds
        if wait <= 0:
            self._send(alert, kind, duration)
            return
        if self._group is None:
            self._group = _Group(now + wait)
        self._group.items.append((alert, kind, duration))

    def _flush(self, now: float, force: bool = False) -> None:
        group = self._group
        if group is None or (now < group.due and not force):
            return
        self._group = None
        if len(group.items) > 1:
            log.info("alert group", extra={"size": len(group.items)})
        for alert, kind, duration in group.items:
            self._send(alert, kind, duration)

    def flush(self) -> None:
        """Hand over any held group now (on shutdown)."""
        with self._lock:
            self._flush(self.clock(), force=True)

    def _send(self, alert: Alert, kind: str, duration: float | None) -> None:
        self.notifications += 1
        if self.notify is None:
            return
        try:
            self.notify(alert, kind, duration)
        except Exception:  # the notifier service owns retries; a failure here must not stop alerting
            log.exception("notifier submit failed", extra={"alert": alert.id})

    def _persist(self, entry: _Active, now: float) -> None:
        if self.db is not None:
            try:
                self.db.save_alert(entry.alert, entry.notified, now)
            except duckdb.Error as exc:
                log.error("cannot persist alert", extra={"alert": entry.alert.id, "error": str(exc)})

    def _announce(self, entry: _Active) -> None:
        if self.publish is not None:
            silenced = self._silenced(entry.alert, self.clock()) or self._inhibited(entry.alert)
            self.publish("alert", alert_json(entry.alert, silenced))

    # ---- meta alerts -----------------------------------------------------------------------
    def raise_meta(self, name: str, summary: str, severity: str = "warning") -> None:
        """Fire (once) an alert about loglens itself, e.g. a notification channel that keeps failing."""
        self.observe([Candidate("meta", name, True, None, None, severity, summary)])

    def resolve_meta(self, name: str) -> None:
        """Resolve the meta-alert `name` if it fires."""
        self.observe([Candidate("meta", name, False, None, None, "warning", "")])

    # ---- silences --------------------------------------------------------------------------
    def add_silence(
        self,
        matchers: dict[str, str],
        expires_at: float,
        comment: str = "",
        created_by: str = "",
        starts_at: float | None = None,
    ) -> Silence:
        """Create a silence (persisted); returns it."""
        now = self.clock()
        s = Silence(uuid.uuid4().hex, dict(matchers), starts_at or now, expires_at, comment, created_by, now)
        with self._lock:
            if self.db is not None:
                self.db.save_silence(s)
            self._silences[s.id] = s
        return s

    def delete_silence(self, silence_id: str) -> bool:
        """Remove a silence; False when it does not exist. Alerts it muted are notified if firing."""
        with self._lock:
            if silence_id not in self._silences:
                return False
            del self._silences[silence_id]
            if self.db is not None:
                self.db.delete_silence(silence_id)
            self._release(self.clock())
            self._flush(self.clock())
            return True

    def silences(self) -> list[Silence]:
        """Silences not yet expired."""
        now = self.clock()
        with self._lock:
            return sorted((s for s in self._silences.values() if s.expires_at > now), key=lambda s: s.created_at)
