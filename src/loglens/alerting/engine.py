"""The alert state machine: pending → firing → resolved per (rule, service), with silences,
inhibition, flap damping and an injected clock. No I/O of its own.

`AlertEngine.observe(candidates)` takes rule outcomes (see `loglens.detect.rules.Candidate`) and
returns the transitions it made. The same engine runs live (scheduler thread, wall clock),
in `loglens backtest` and in `loglens analyze` (event-time clock, no store, stable ids).

- a firing alert that is silenced or inhibited is tracked but not notified; if the silence
  expires (or the inhibiting alert resolves) while it still fires, it is notified then;
- a resolve is notified only for alerts whose firing was notified, with how long it fired;
- inhibition: a firing `absence` alert for a service suppresses that service's `error_rate`
  and `volume` alerts (a dead service's other symptoms are noise);
- flap damping: a firing alert resolves once its condition has been clear for
  `alerts.resolve_after_seconds`; `tick()` completes that even when no further candidate for
  the key arrives (a one-off `new_pattern` clear is enough).

Ports (see `loglens.alerting.ports`): transitions go to a `NotificationSink`, rows to an
`AlertPersistence` (a queue: no disk I/O under the engine's lock), events to `publish`.
Readers (`active()`, `silences()`, `is_suppressed()`) use an immutable snapshot swapped in
after each change, so an API read never waits for an evaluation.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from loglens.alerting.ports import AlertPersistence, NotificationSink, Publish
from loglens.config import AlertsConfig
from loglens.detect.documents import to_dt
from loglens.detect.rules import Candidate
from loglens.models import Alert, AlertRow, SilenceRow, iso

log = logging.getLogger("loglens.alerting")

INHIBITED_BY_ABSENCE = frozenset({"error_rate", "volume"})
IdFactory = Callable[[Candidate, float], str]

__all__ = ["AlertEngine", "Silence", "Transition", "alert_json", "to_dt"]


def _random_id(_c: Candidate, _now: float) -> str:
    return os.urandom(16).hex()  # as unique as uuid4().hex, a third of the cost in an alert storm


def alert_json(alert: Alert, silenced: bool = False) -> dict[str, Any]:
    """The API / SSE shape of an alert."""
    return {**alert.to_json(), "silenced": silenced}


class SilenceStore(Protocol):
    """Where silences are kept (the alert repository); writes are rare and synchronous."""

    def save_silence(self, s: SilenceRow) -> None:
        """Store a silence."""
        ...

    def delete_silence(self, silence_id: str) -> None:
        """Remove a silence."""
        ...


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

    def to_row(self) -> SilenceRow:
        """The stored form."""
        return SilenceRow(
            self.id,
            dict(self.matchers),
            self.starts_at,
            self.expires_at,
            self.comment,
            self.created_by,
            self.created_at,
        )

    @classmethod
    def from_row(cls, r: SilenceRow) -> Silence:
        """From the stored form."""
        return cls(r.id, dict(r.matchers), r.starts_at, r.expires_at, r.comment, r.created_by, r.created_at)

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
    clear_value: float | None = None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What readers see: replaced whole after every change, never mutated."""

    active: tuple[Alert, ...] = ()
    silences: tuple[Silence, ...] = ()
    absent: frozenset[str] = frozenset()  # services with a firing absence alert
    by_rule: dict[str, frozenset[str]] = field(default_factory=dict)  # rule -> services with an open alert


@dataclass(slots=True)
class _Batch:
    rows: list[AlertRow] = field(default_factory=list)
    sends: list[tuple[Alert, str, float | None]] = field(default_factory=list)
    events: list[tuple[Alert, bool]] = field(default_factory=list)


class AlertEngine:
    """Alert lifecycle for every (rule, service) key. Thread-safe; time comes from `clock`."""

    def __init__(
        self,
        config: AlertsConfig,
        *,
        clock: Callable[[], float] = time.time,
        sink: NotificationSink | None = None,
        persistence: AlertPersistence | None = None,
        silence_store: SilenceStore | None = None,
        publish: Publish | None = None,
        id_factory: IdFactory = _random_id,
    ) -> None:
        self.config = config
        self.clock = clock
        self.sink = sink
        self.persistence = persistence
        self.silence_store = silence_store
        self.publish = publish
        self.id_factory = id_factory
        self._active: dict[tuple[str, str], _Active] = {}
        self._clearing: set[tuple[str, str]] = set()  # firing keys whose condition is clear (damping)
        self._held_keys: set[tuple[str, str]] = set()  # firing, not notified (silenced or inhibited)
        self._silences: dict[str, Silence] = {}
        self._lock = threading.RLock()
        self._snapshot = _Snapshot()
        self.notifications = 0  # handed to the sink, for tests and /metrics
        self.history: list[Transition] = []  # firing/resolved transitions (replays read them)
        self.keep_history = False

    # ---- restore ---------------------------------------------------------------------------
    def restore(self, active: Iterable[tuple[Alert, bool]], silences: Iterable[SilenceRow] = ()) -> int:
        """Take back pending/firing alerts and silences (loaded from the store); nothing is notified."""
        now = self.clock()
        with self._lock:
            for alert, notified in active:
                self._active[(alert.rule, alert.service)] = _Active(alert, notified)
                if alert.state == "firing" and not notified:
                    self._held_keys.add((alert.rule, alert.service))
            for row in silences:
                if row.expires_at > now:
                    self._silences[row.id] = Silence.from_row(row)
            self._snap()
            return len(self._active)

    # ---- lock-free queries -----------------------------------------------------------------
    def active(self) -> list[Alert]:
        """Pending and firing alerts (a snapshot; never waits for an evaluation)."""
        return list(self._snapshot.active)

    def get(self, rule: str, service: str) -> Alert | None:
        """The pending/firing alert of a dedup key, if any."""
        entry = self._active.get((rule, service))
        return entry.alert if entry else None

    def is_suppressed(self, alert: Alert, now: float | None = None) -> bool:
        """Silenced or inhibited at `now` (from the snapshot)."""
        now = self.clock() if now is None else now
        snap = self._snapshot
        if any(s.active(now) and s.matches(alert) for s in snap.silences):
            return True
        return alert.rule in INHIBITED_BY_ABSENCE and alert.service in snap.absent

    def silences(self) -> list[Silence]:
        """Silences not yet expired."""
        now = self.clock()
        return sorted((s for s in self._snapshot.silences if s.expires_at > now), key=lambda s: s.created_at)

    # ---- internal checks (under the lock) ---------------------------------------------------
    def _silenced(self, alert: Alert, now: float) -> bool:
        if not self._silences:
            return False
        return any(s.active(now) and s.matches(alert) for s in self._silences.values())

    def _inhibited(self, alert: Alert) -> bool:
        if alert.rule not in INHIBITED_BY_ABSENCE:
            return False
        absent = self._active.get(("absence", alert.service))
        return absent is not None and absent.alert.state == "firing"

    def _snap(self) -> None:
        active = tuple(e.alert for e in self._active.values())
        absent = frozenset(a.service for a in active if a.rule == "absence" and a.state == "firing")
        by_rule: dict[str, set[str]] = {}
        for a in active:
            by_rule.setdefault(a.rule, set()).add(a.service)
        frozen = {rule: frozenset(services) for rule, services in by_rule.items()}
        self._snapshot = _Snapshot(active, tuple(self._silences.values()), absent, frozen)

    def steady_keys(self) -> frozenset[tuple[str, str]] | None:
        """The (rule, service) keys of firing alerts when nothing in the engine is waiting on time
        (no pending alert, no damped resolve, no held notification, no silence); else None.

        In that state a tick changes nothing, a breaching candidate of a firing key only refreshes
        its value and summary, and a quiet candidate of any other key is ignored: what a replay
        needs to skip seconds where no rule changes its mind (`alerting/quiet.py`).
        """
        with self._lock:
            if self._clearing or self._held_keys or self._silences:
                return None
            if any(e.alert.state != "firing" for e in self._active.values()):
                return None
            return frozenset(self._active)

    def open_services(self, rule: str) -> frozenset[str]:
        """Services with a pending or firing alert of `rule` (from the snapshot)."""
        return self._snapshot.by_rule.get(rule, frozenset())

    # ---- lifecycle -------------------------------------------------------------------------
    def observe(self, candidates: Iterable[Candidate]) -> list[Transition]:
        """Apply rule outcomes; keys not mentioned are left as they are."""
        now = self.clock()
        out: list[Transition] = []
        batch = _Batch()
        with self._lock:
            for c in candidates:
                t = self._apply(c, now, batch)
                if t is not None:
                    out.append(t)
            out.extend(self._release(now, batch))
            if batch.rows:
                self._snap()
        self._emit(batch)
        return out

    def _apply(self, c: Candidate, now: float, batch: _Batch) -> Transition | None:
        key = (c.rule, c.service)
        entry = self._active.get(key)
        if c.breach:
            if entry is None:
                started = to_dt(now)
                firing = c.for_seconds <= 1e-6  # fires at once: built firing, no second copy
                alert = Alert(
                    id=self.id_factory(c, now),
                    rule=c.rule,
                    service=c.service,
                    severity=c.severity,
                    state="firing" if firing else "pending",
                    value=c.value,
                    threshold=c.threshold,
                    summary=c.summary,
                    started_at=started,
                    fired_at=started if firing else None,
                    labels=dict(c.labels),
                )
                entry = self._active[key] = _Active(alert)
                if firing:
                    return self._fire(entry, now, batch)
                if c.for_seconds > 0:
                    self._persist(entry, now, batch)
                    return Transition(alert, "pending", False)
            else:
                if entry.clear_since is not None:
                    entry.clear_since = None
                    self._clearing.discard(key)
                entry.alert = replace(entry.alert, value=c.value, summary=c.summary, labels=dict(c.labels))
            # (1 µs slack: started_at went through a datetime, which rounds to microseconds)
            if entry.alert.state == "pending" and now - entry.alert.started_at.timestamp() >= c.for_seconds - 1e-6:
                return self._fire(entry, now, batch)
            return None
        if entry is None:
            return None
        if entry.alert.state == "pending":  # never fired: drop quietly
            del self._active[key]
            entry.alert = replace(entry.alert, state="resolved", resolved_at=to_dt(now), value=c.value)
            self._persist(entry, now, batch)
            return None
        # Flap damping: resolve only once the condition has stayed clear for resolve_after_seconds.
        if entry.clear_since is None:
            entry.clear_since = now
            self._clearing.add(key)
        entry.clear_value = c.value
        if now - entry.clear_since < self.config.resolve_after_seconds - 1e-6:
            return None
        return self._resolve(entry, now, c.value, batch)

    def _fire(self, entry: _Active, now: float, batch: _Batch) -> Transition:
        if entry.alert.state != "firing":
            entry.alert = replace(entry.alert, state="firing", fired_at=to_dt(now))
        notify = not (self._silenced(entry.alert, now) or self._inhibited(entry.alert))
        entry.notified = notify
        if not notify:
            self._held_keys.add((entry.alert.rule, entry.alert.service))
        self._persist(entry, now, batch)
        if notify:
            batch.sends.append((entry.alert, "firing", None))
        t = Transition(entry.alert, "firing", notify)
        if self.keep_history:
            self.history.append(t)
        return t

    def _resolve(self, entry: _Active, now: float, value: float | None, batch: _Batch) -> Transition:
        key = (entry.alert.rule, entry.alert.service)
        self._active.pop(key, None)
        self._clearing.discard(key)
        self._held_keys.discard(key)
        fired = entry.alert.fired_at.timestamp() if entry.alert.fired_at else now
        duration = round(now - fired, 3)
        entry.alert = replace(entry.alert, state="resolved", resolved_at=to_dt(now), value=value)
        self._persist(entry, now, batch)
        if entry.notified:
            batch.sends.append((entry.alert, "resolved", duration))
        t = Transition(entry.alert, "resolved", entry.notified, duration)
        if self.keep_history:
            self.history.append(t)
        return t

    def _release(self, now: float, batch: _Batch) -> list[Transition]:
        """Notify firing alerts whose silence expired or whose inhibiting alert resolved."""
        out = []
        for key in list(self._held_keys):
            entry = self._active.get(key)
            if entry is None or entry.alert.state != "firing" or entry.notified:
                self._held_keys.discard(key)
                continue
            if not (self._silenced(entry.alert, now) or self._inhibited(entry.alert)):
                self._held_keys.discard(key)
                entry.notified = True
                self._persist(entry, now, batch)
                batch.sends.append((entry.alert, "firing", None))
                out.append(Transition(entry.alert, "firing", True))
        return out

    def tick(self) -> list[Transition]:
        """Timer work: expire silences, finish damped resolves, release unsuppressed alerts."""
        now = self.clock()
        batch = _Batch()
        out: list[Transition] = []
        with self._lock:
            expired = [sid for sid, s in self._silences.items() if s.expires_at <= now]
            for sid in expired:
                del self._silences[sid]
            for key in list(self._clearing):
                entry = self._active.get(key)
                if entry is None or entry.clear_since is None:
                    self._clearing.discard(key)
                elif now - entry.clear_since >= self.config.resolve_after_seconds - 1e-6:
                    out.append(self._resolve(entry, now, entry.clear_value, batch))
            out.extend(self._release(now, batch))
            if batch.rows or expired:
                self._snap()
        self._emit(batch)
        return out

    def flush(self) -> None:
        """Kept for callers that flush on shutdown: the engine holds nothing back."""

    # ---- effects, outside the lock ---------------------------------------------------------
    def _persist(self, entry: _Active, now: float, batch: _Batch) -> None:
        batch.rows.append(AlertRow(entry.alert, entry.notified, now))
        batch.events.append((entry.alert, entry.notified))

    def _emit(self, batch: _Batch) -> None:
        if batch.rows and self.persistence is not None:
            try:
                self.persistence.save_alerts(batch.rows)
            except Exception:  # a persistence failure must not stop alerting
                log.exception("cannot queue alert rows")
        for alert, kind, duration in batch.sends:
            self._send(alert, kind, duration)
        if self.publish is not None and batch.events:
            now = self.clock()
            for alert, notified in batch.events[-200:]:  # a storm is summarised by its tail (live view only)
                silenced = alert.state == "firing" and not notified and self.is_suppressed(alert, now)
                self.publish("alert", alert_json(alert, silenced))

    def _send(self, alert: Alert, kind: str, duration: float | None) -> None:
        self.notifications += 1
        if self.sink is None:
            return
        try:
            self.sink.submit(alert, kind, duration)
        except Exception:  # the notifier service owns retries; a failure here must not stop alerting
            log.exception("notifier submit failed", extra={"alert": alert.id})

    # ---- meta alerts (the MetaAlerts port) ---------------------------------------------------
    def raise_meta(self, name: str, summary: str, severity: str = "warning") -> None:
        """Fire (once) an alert about loglens itself, e.g. a notification channel that keeps failing."""
        self.observe([Candidate("meta", name, True, None, None, severity, summary)])

    def resolve_meta(self, name: str) -> None:
        """Resolve the meta-alert `name` if it fires (meta-alerts are not damped)."""
        with self._lock:
            entry = self._active.get(("meta", name))
            if entry is None:
                return
            batch = _Batch()
            if entry.alert.state == "firing":
                self._resolve(entry, self.clock(), None, batch)
            else:
                self._active.pop(("meta", name), None)
            self._snap()
        self._emit(batch)

    def resolve_service(self, service: str, summary: str) -> list[Transition]:
        """Resolve every alert of `service` now (it is no longer tracked), without damping."""
        now = self.clock()
        batch = _Batch()
        out: list[Transition] = []
        with self._lock:
            for key in [k for k in self._active if k[1] == service and k[0] != "meta"]:
                entry = self._active[key]
                if entry.alert.state == "pending":
                    del self._active[key]
                    continue
                entry.alert = replace(entry.alert, summary=summary)
                out.append(self._resolve(entry, now, entry.alert.value, batch))
            if out:
                self._snap()
        self._emit(batch)
        return out

    # ---- silences --------------------------------------------------------------------------
    def add_silence(
        self,
        matchers: dict[str, str],
        expires_at: float,
        comment: str = "",
        created_by: str = "",
        starts_at: float | None = None,
    ) -> Silence:
        """Create a silence (stored first); returns it."""
        now = self.clock()
        s = Silence(uuid.uuid4().hex, dict(matchers), starts_at or now, expires_at, comment, created_by, now)
        if self.silence_store is not None:
            self.silence_store.save_silence(s.to_row())
        with self._lock:
            self._silences[s.id] = s
            self._snap()
        return s

    def delete_silence(self, silence_id: str) -> bool:
        """Remove a silence; False when it does not exist. Alerts it muted are notified if firing."""
        if silence_id not in self._snapshot_ids():
            return False
        if self.silence_store is not None:
            self.silence_store.delete_silence(silence_id)
        batch = _Batch()
        with self._lock:
            if self._silences.pop(silence_id, None) is None:
                return False
            self._release(self.clock(), batch)
            self._snap()
        self._emit(batch)
        return True

    def _snapshot_ids(self) -> set[str]:
        return {s.id for s in self._snapshot.silences}
