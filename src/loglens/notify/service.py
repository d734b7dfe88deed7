"""`NotificationService`: routing, the durable outbox and per-channel delivery workers.

`submit()` (any thread) only queues the transition in memory (bounded, counted overflow). A
grouping task on the event loop turns bursts into grouped notifications (one message per
channel, rule and kind within `alerts.group_wait_seconds`), writes each pass's rows to the
outbox (`loglens.store.outbox`) in one statement off the loop, and hands them to the channel
workers. Each channel has its own asyncio task and schedule, so a slow or failing channel never
holds up another, and nothing here runs on the ingest path. Failed attempts are retried with
exponential backoff and jitter (or the receiver's Retry-After), each attempt bounded by the
channel's timeout (at most `outbox.timeout_seconds`); after `outbox.max_attempts` the row
becomes `dead`. A channel that keeps failing raises a meta-alert through the `MetaAlerts` port.
On start, every pending row is resumed, so a restart between enqueue and delivery still
delivers. Meta-alerts and rows the store cannot write are delivered from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import orjson
from pydantic import BaseModel, SecretStr

from loglens.config import NotifierConfig, Settings
from loglens.errors import ConfigError, ConfigIssue, PermanentNotifierError, StorageError, TransientNotifierError
from loglens.models import Alert, Notification, iso
from loglens.notify import registry
from loglens.notify.base import notification_from_dict, notification_id, notification_to_dict, sample_notification
from loglens.ports import MetaAlertRelay, MetaAlerts
from loglens.store.outbox import OutboxRepository, OutboxRow, PendingRow

log = logging.getLogger("loglens.notify")

META_AFTER_FAILURES = 3  # consecutive failed attempts before a channel raises a meta-alert
MAX_RETRY_AFTER_SECONDS = 86_400.0
PRUNE_DELIVERED_AFTER = timedelta(days=7)
QUEUE_META = "notifier:queue"
GROUP_LIST_MAX = 20  # services named in a grouped notification's summary
GROUP_LABEL_MAX = 200  # services listed in its `services` label
ROUTE_INLINE_MAX = 200  # transitions routed on the event loop; a bigger pass goes to a thread
# After a grouped notification (a storm) went out, more transitions of the same channel, rule and
# kind are collected for at least this long before the next one (Alertmanager's group_interval):
# a storm that builds up over many evaluations stays a handful of messages.
STORM_GROUP_INTERVAL_SECONDS = 5.0


def routes(cfg: NotifierConfig, alert: Alert) -> bool:
    """Does channel `cfg` take `alert`? Severity, rule and service filters must all match."""
    if not cfg.enabled or alert.severity not in cfg.severities:
        return False
    if cfg.rules is not None and alert.rule not in cfg.rules:
        return False
    if cfg.services is not None and alert.service not in cfg.services:
        return False
    # A meta-alert about a broken channel is not sent to that same channel.
    return not (
        alert.rule == "meta" and (alert.service == meta_name(cfg.name) or alert.labels.get("channel") == cfg.name)
    )


def meta_name(channel: str) -> str:
    """Name of the meta-alert a failing channel raises."""
    return f"notifier:{channel}"


def _secrets_of(config: Any) -> list[str]:
    """Secret values of a plugin config (SecretStr fields and `*_env` variables) to scrub from errors."""
    found: list[str] = []
    if not isinstance(config, BaseModel):
        return found
    for key, value in config:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif key.endswith("_env") and isinstance(value, str):
            env = os.environ.get(value)
            if env:
                found.append(env)
    return [s for s in found if len(s) >= 4]


@dataclass(slots=True)
class Entry:
    """A notification the workers hold: attempts so far, when to try next (naive UTC), and whether
    its outbox row exists (False while the store cannot write: it is delivered from memory)."""

    notification: Notification
    attempts: int
    next_attempt_at: datetime
    durable: bool = True


@dataclass
class _Channel:
    cfg: NotifierConfig
    plugin: Any
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    heap: list[tuple[float, int, str]] = field(default_factory=list)
    entries: dict[str, Entry] = field(default_factory=dict)
    in_flight: int = 0
    task: asyncio.Task[None] | None = None
    consecutive_failures: int = 0
    attempts: int = 0
    failures: int = 0
    delivered: int = 0
    dead: int = 0
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    meta_raised: bool = False


_HEALTH_KEYS = (
    "consecutive_failures",
    "attempts",
    "failures",
    "delivered",
    "dead",
    "last_error",
    "last_attempt_at",
    "last_success_at",
    "meta_raised",
)


@dataclass(slots=True)
class _Group:
    due: float
    items: list[tuple[Alert, float | None]] = field(default_factory=list)


def group_notification(channel: str, kind: str, items: list[tuple[Alert, float | None]], now: datetime) -> Notification:
    """One notification for `items` (alerts of one rule and transition): the alert itself when
    alone, else a summary alert listing them (Alertmanager-style grouping)."""
    if len(items) == 1:
        alert, duration = items[0]
        return Notification(notification_id(alert, kind, channel), channel, kind, alert, now, duration)
    alerts = [a for a, _ in items]
    first = alerts[0]
    services = sorted({a.service for a in alerts})
    shown = ", ".join(services[:GROUP_LIST_MAX]) + (
        f" … (+{len(services) - GROUP_LIST_MAX} more)" if len(services) > GROUP_LIST_MAX else ""
    )
    rank = {"critical": 0, "warning": 1, "info": 2}
    severity = min((a.severity for a in alerts), key=lambda s: rank.get(s, 3))
    # alert ids are unique per episode, so (kind, ids) identifies the group's transitions
    gid = hashlib.sha256("\n".join([kind, *sorted(a.id for a in alerts)]).encode()).hexdigest()[:32]
    summary = f"{len(alerts)} {first.rule} alerts {kind}: {shown}"
    group = Alert(
        id=f"group-{gid}",
        rule=first.rule,
        service=f"{len(services)} services" if len(services) > 1 else first.service,
        severity=severity,
        state=kind if kind in ("firing", "resolved") else first.state,
        value=float(len(alerts)),
        threshold=first.threshold,
        summary=summary,
        started_at=min(a.started_at for a in alerts),
        fired_at=min((a.fired_at for a in alerts if a.fired_at), default=None),
        resolved_at=max((a.resolved_at for a in alerts if a.resolved_at), default=None),
        labels={"group_size": str(len(alerts)), "services": ", ".join(services[:GROUP_LABEL_MAX])},
    )
    return Notification(notification_id(group, kind, channel), channel, kind, group, now, None)


class NotificationService:
    """Routes alert transitions to channels, groups bursts and delivers them durably.

    `submit()` only appends to a bounded in-memory queue (any thread, never blocks). On the event
    loop, a grouping task drains it: per channel, transitions of one rule and kind that arrive
    within `alerts.group_wait_seconds` (and always those handed over in one evaluation) become
    one notification; each pass writes its notifications to the outbox in one statement off the
    loop, then the channel workers deliver them. Meta-alerts skip the wait and are handed to the
    workers before their row is written, so an alert about the store itself goes out even while
    the disk is full; a notification whose row cannot be written is still delivered from memory.
    """

    def __init__(
        self,
        settings: Settings,
        outbox: OutboxRepository | None,
        *,
        channels: dict[str, Any] | None = None,
        meta: MetaAlerts | None = None,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.outbox_cfg = settings.outbox
        self.group_wait = settings.alerts.group_wait_seconds
        self.meta: MetaAlerts = meta or MetaAlertRelay()
        self._clock = clock
        self._rng = rng
        plugins = registry.build_all(settings) if channels is None else channels
        self._channels = {
            cfg.name: _Channel(cfg, plugins[cfg.name]) for cfg in settings.notifiers if cfg.name in plugins
        }
        self._secrets = [s for ch in self._channels.values() for s in _secrets_of(getattr(ch.plugin, "config", None))]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seq = 0
        self._stopping = False
        self._inbox: deque[tuple[Alert, str, float | None]] = deque()
        self._inbox_lock = threading.Lock()
        self._inbox_event: asyncio.Event | None = None
        self._wake_scheduled = False
        self._groups: dict[tuple[str, str, str], _Group] = {}
        self._storm_sent: dict[tuple[str, str, str], float] = {}  # when a group of that key last went out
        self._grouper: asyncio.Task[None] | None = None
        self._unmarked: dict[str, tuple[int, datetime]] = {}  # delivered, but the outbox row says pending
        self._background: set[asyncio.Task[None]] = set()
        self._queue_meta = False
        self.dropped = 0  # transitions dropped because the queue was full
        self.grouped = 0  # transitions that went out inside a grouped notification
        # How long stop() lets in-flight attempts finish before cancelling them (they stay pending).
        self.stop_grace_seconds = min(self.outbox_cfg.timeout_seconds, 2.0)

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Resume every pending notification, start the grouper and one worker per channel."""
        if self.outbox is not None:
            try:
                pruned = await asyncio.to_thread(self.outbox.prune, self._now() - PRUNE_DELIVERED_AFTER)
                if pruned:
                    log.info("pruned delivered notifications", extra={"rows": pruned})
                counts = await asyncio.to_thread(self.outbox.counts)
            except (duckdb.Error, StorageError) as exc:
                log.error("cannot read the outbox", extra={"error": str(exc)})
                counts = {}
            for name, ch in self._channels.items():
                ch.delivered = counts.get(name, {}).get("delivered", 0)
                ch.dead = counts.get(name, {}).get("dead", 0)
        await self._start_workers()

    async def _start_workers(self) -> None:
        for ch in self._channels.values():
            ch.wake = asyncio.Event()
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        self._inbox_event = asyncio.Event()
        pending: list[PendingRow] = []
        if self.outbox is not None:
            try:
                pending = await asyncio.to_thread(self.outbox.pending)
            except (duckdb.Error, StorageError) as exc:
                log.error("cannot resume the outbox", extra={"error": str(exc)})
        for row in pending:
            self._schedule(Entry(notification_from_dict(orjson.loads(row.payload)), row.attempts, row.next_attempt_at))
        for ch in self._channels.values():
            ch.task = asyncio.create_task(self._worker(ch), name=f"loglens-notify-{ch.cfg.name}")
        self._grouper = asyncio.create_task(self._group_loop(), name="loglens-notify-grouper")
        with self._inbox_lock:
            self._wake_scheduled = False
        if self._inbox:
            self._inbox_event.set()
        if pending:
            log.info("notification outbox resumed", extra={"pending": len(pending)})

    async def _stop_workers(self) -> None:
        self._stopping = True
        if self._grouper is not None and self._inbox_event is not None:
            self._inbox_event.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._grouper, self.stop_grace_seconds)
            self._grouper = None
        channels = list(self._channels.values())
        for ch in channels:
            ch.wake.set()
        tasks = [ch.task for ch in channels if ch.task is not None]
        if tasks:
            _, still = await asyncio.wait(tasks, timeout=self.stop_grace_seconds)
            for task in still:
                task.cancel()  # the row stays pending and is resumed by the next start
            await asyncio.gather(*tasks, return_exceptions=True)
        for ch in channels:
            ch.task = None
            ch.heap.clear()
            ch.entries.clear()
            closer = getattr(ch.plugin, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        await asyncio.to_thread(self._retry_marks)

    async def stop(self) -> None:
        """Write held groups, let in-flight attempts finish (bounded), stop the workers, close."""
        await self._stop_workers()
        self._loop = None
        if self.outbox is not None:
            self.outbox.close()

    def prepare_reload(self, new: Settings) -> Callable[[], Awaitable[None]]:
        """Config reload hook: build every new channel now (ConfigError vetoes the reload) and
        return the step that swaps them in; pending notifications carry over through the outbox."""
        plugins = registry.build_all(new)

        async def apply() -> None:
            running = self._loop is not None
            if running:
                await self._stop_workers()
            old = self._channels
            self.settings, self.outbox_cfg, self.group_wait = new, new.outbox, new.alerts.group_wait_seconds
            channels = {}
            for cfg in new.notifiers:
                if cfg.name not in plugins:
                    continue
                ch = _Channel(cfg, plugins[cfg.name])
                if cfg.name in old:  # keep the channel's health history across the reload
                    for key in _HEALTH_KEYS:
                        setattr(ch, key, getattr(old[cfg.name], key))
                channels[cfg.name] = ch
            self._channels = channels
            self._secrets = [x for ch in channels.values() for x in _secrets_of(getattr(ch.plugin, "config", None))]
            if running:
                await self._start_workers()

        return apply

    # ---- enqueue ---------------------------------------------------------------------------
    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def submit(self, alert: Alert, kind: str, duration_seconds: float | None = None) -> None:
        """Queue one alert transition (any thread; never blocks, never touches the disk)."""
        overflow = False
        with self._inbox_lock:
            if len(self._inbox) >= self.outbox_cfg.max_queue and alert.rule != "meta":
                self.dropped += 1
                overflow = not self._queue_meta
                self._queue_meta = True
            else:
                self._inbox.append((alert, kind, duration_seconds))
            wake = not self._wake_scheduled and self._loop is not None
            self._wake_scheduled = self._wake_scheduled or wake
        if overflow:
            log.error("notification queue full: transitions dropped", extra={"max": self.outbox_cfg.max_queue})
            self.meta.raise_meta(
                QUEUE_META, f"notification queue full ({self.outbox_cfg.max_queue}): transitions dropped", "critical"
            )
        loop, event = self._loop, self._inbox_event
        if wake and loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # loop closed: the next start drains the inbox
                loop.call_soon_threadsafe(event.set)

    async def _group_loop(self) -> None:
        assert self._inbox_event is not None
        while True:
            due = min((g.due for g in self._groups.values()), default=None)
            timeout = None if due is None else max(0.0, due - self._clock())
            if not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._inbox_event.wait(), timeout)
            self._inbox_event.clear()
            with self._inbox_lock:
                items = list(self._inbox)
                self._inbox.clear()
                self._wake_scheduled = False
            try:
                await self._pass(items, force=self._stopping)
            except Exception:  # grouping must survive anything a single pass meets
                log.exception("notification grouping failed")
            if self._stopping:
                return

    async def _pass(self, items: list[tuple[Alert, str, float | None]], force: bool) -> None:
        """Route queued transitions into groups, send out the groups that are due."""
        now = self._clock()
        if len(items) > ROUTE_INLINE_MAX:  # a storm: route and build off the event loop
            urgent, ready = await asyncio.to_thread(self._route, items, now, force)
        else:
            urgent, ready = self._route(items, now, force)
        for n in urgent:  # delivered from memory at once; the row follows when the disk allows
            self._schedule(Entry(n, 0, _naive(n.created_at), durable=False))
        if urgent:
            self._spawn(self._persist(urgent))
        if ready:
            inserted = await self._persist(ready)
            for n in ready:
                if inserted is None or n.id in inserted:  # a row already there is sent (or resumed) once
                    self._schedule(Entry(n, 0, _naive(n.created_at), durable=inserted is not None))
        if self._unmarked:
            await asyncio.to_thread(self._retry_marks)

    def _route(
        self, items: list[tuple[Alert, str, float | None]], now: float, force: bool
    ) -> tuple[list[Notification], list[Notification]]:
        """(meta notifications to send now, grouped notifications that are due). Only the grouping
        task calls this, so the groups have one writer."""
        urgent: list[Notification] = []
        channels = list(self._channels.values())
        for i, (alert, kind, duration) in enumerate(items):
            if i and i % ROUTE_INLINE_MAX == 0 and len(items) > ROUTE_INLINE_MAX:
                time.sleep(0.001)  # a storm, on a worker thread: let the event loop have the GIL
            for ch in channels:
                if not routes(ch.cfg, alert):
                    continue
                if alert.rule == "meta":  # about loglens itself: never held, never grouped
                    urgent.append(
                        Notification(
                            notification_id(alert, kind, ch.cfg.name), ch.cfg.name, kind, alert, self._now(), duration
                        )
                    )
                    continue
                key = (ch.cfg.name, alert.rule, kind)
                group = self._groups.get(key)
                if group is None:
                    due = now + self.group_wait
                    last = self._storm_sent.get(key)
                    if last is not None and now - last < STORM_GROUP_INTERVAL_SECONDS:
                        due = max(due, last + STORM_GROUP_INTERVAL_SECONDS)
                    group = self._groups[key] = _Group(due)
                group.items.append((alert, duration))
        ready: list[Notification] = []
        for key in [k for k, g in self._groups.items() if force or g.due <= now]:
            group = self._groups.pop(key)
            ready.append(group_notification(key[0], key[2], group.items, self._now()))
            if len(group.items) > 1:
                self._storm_sent[key] = now
                self.grouped += len(group.items)
                log.info("alert group", extra={"channel": key[0], "rule": key[1], "size": len(group.items)})
        return urgent, ready

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _persist(self, notifications: list[Notification]) -> set[str] | None:
        """Write outbox rows (one statement, off the loop): the ids inserted, None when the store cannot."""
        if self.outbox is None:
            return None
        rows = [
            OutboxRow(
                n.id,
                n.channel,
                n.kind,
                n.alert.id,
                n.alert.rule,
                n.alert.service,
                n.alert.severity,
                orjson.dumps(notification_to_dict(n)).decode(),
                n.created_at,
                n.created_at,
            )
            for n in notifications
        ]
        try:
            return await asyncio.to_thread(self.outbox.insert_many, rows)
        except (duckdb.Error, StorageError, OSError) as exc:
            log.error(
                "cannot write notifications to the outbox; delivering from memory",
                extra={"rows": len(rows), "error": str(exc)},
            )
            return None

    def _schedule(self, entry: Entry) -> None:
        ch = self._channels.get(entry.notification.channel)
        if ch is None:  # channel removed from config since it was enqueued: leave it pending
            return
        nid = entry.notification.id
        if nid in ch.entries:
            return
        ch.entries[nid] = entry
        due = entry.next_attempt_at.replace(tzinfo=UTC).timestamp()
        self._seq += 1
        heapq.heappush(ch.heap, (due, self._seq, nid))
        ch.wake.set()

    # ---- delivery --------------------------------------------------------------------------
    async def _worker(self, ch: _Channel) -> None:
        while not self._stopping:
            if not ch.heap:
                ch.wake.clear()
                await ch.wake.wait()
                continue
            due, _, nid = ch.heap[0]
            delay = due - self._clock()
            if delay > 0:
                ch.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ch.wake.wait(), delay)
                continue
            heapq.heappop(ch.heap)
            entry = ch.entries.pop(nid)
            ch.in_flight += 1
            try:
                await self._attempt(ch, entry)
            except Exception:  # a worker must outlive any one notification; the row stays pending
                log.exception("notification attempt crashed", extra={"channel": ch.cfg.name, "id": nid})
            finally:
                ch.in_flight -= 1

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Seconds before the next attempt: the receiver's Retry-After, else capped exponential × jitter."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER_SECONDS)
        cfg = self.outbox_cfg
        base = min(cfg.max_backoff_seconds, cfg.initial_backoff_seconds * 2.0 ** (attempts - 1))
        return float(base * (0.5 + 0.5 * self._rng()))  # "equal jitter": spread retries, keep a floor

    def timeout_of(self, ch: _Channel) -> float:
        """The per-attempt bound: the channel's own timeout when it sets a shorter one."""
        own = registry.channel_timeout(ch.plugin)
        return min(own, self.outbox_cfg.timeout_seconds) if own is not None else self.outbox_cfg.timeout_seconds

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def _update(self, method: str, *args: Any) -> bool:
        """An outbox update off the loop; False (logged) when the store cannot take it."""
        if self.outbox is None:
            return False
        try:
            await asyncio.to_thread(getattr(self.outbox, method), *args)
        except (duckdb.Error, StorageError, OSError) as exc:
            log.warning("outbox update failed", extra={"update": method, "error": str(exc)})
            return False
        return True

    async def _attempt(self, ch: _Channel, entry: Entry) -> None:
        n = entry.notification
        attempts = entry.attempts + 1
        timeout = self.timeout_of(ch)
        retry_after: float | None = None
        permanent = False
        ch.attempts += 1
        ch.last_attempt_at = self._now()
        try:
            await asyncio.wait_for(ch.plugin.send(n), timeout)
        except TransientNotifierError as exc:
            error, retry_after = str(exc), exc.retry_after
        except PermanentNotifierError as exc:
            error, permanent = str(exc), True
        except TimeoutError:
            error = f"timed out after {timeout:g}s"
        except Exception as exc:  # a plugin bug is retried like a transient failure, and logged
            error = f"{type(exc).__name__}: {exc}"
            log.warning("notifier plugin raised", extra={"channel": ch.cfg.name, "error": self._scrub(error)})
        else:
            now = self._now()
            ch.consecutive_failures = 0
            ch.last_success_at = now
            ch.delivered += 1
            log.info("notification delivered", extra={"channel": ch.cfg.name, "id": n.id, "attempts": attempts})
            if not await self._update("mark_delivered", n.id, attempts, now):
                # the receiver has it: never send it again as if it had not been tried
                self._unmarked[n.id] = (attempts, now)
            if ch.meta_raised:
                ch.meta_raised = False
                self._meta(False, meta_name(ch.cfg.name))
            return
        error = self._scrub(error)[:2000]
        now = self._now()
        ch.failures += 1
        ch.consecutive_failures += 1
        ch.last_error = error
        dead = permanent or attempts >= self.outbox_cfg.max_attempts
        if not ch.meta_raised and (dead or ch.consecutive_failures >= META_AFTER_FAILURES):
            ch.meta_raised = True  # raised before any outbox write: it must not wait for the disk
            summary = f"notifier channel {ch.cfg.name!r} is failing ({ch.consecutive_failures} in a row): {error}"
            self._meta(True, meta_name(ch.cfg.name), summary)
        if dead:
            ch.dead += 1
            await self._update("mark_dead", n.id, attempts, error, now)
            log.error(
                "notification dead", extra={"channel": ch.cfg.name, "id": n.id, "attempts": attempts, "error": error}
            )
        else:
            delay = self.backoff(attempts, retry_after)
            next_at = now + timedelta(seconds=delay)
            await self._update("mark_retry", n.id, attempts, error, next_at, now)
            log.warning(
                "notification attempt failed",
                extra={
                    "channel": ch.cfg.name,
                    "id": n.id,
                    "attempts": attempts,
                    "retry_in_s": round(delay, 3),
                    "error": error,
                },
            )
            self._schedule(Entry(n, attempts, _naive(next_at), entry.durable))

    def _retry_marks(self) -> None:
        """Record deliveries whose outbox update failed earlier (worker thread)."""
        if self.outbox is None:
            return
        for nid, (attempts, at) in list(self._unmarked.items()):
            try:
                self.outbox.mark_delivered(nid, attempts, at)
            except (duckdb.Error, StorageError, OSError):
                return  # still failing: try again on the next pass
            self._unmarked.pop(nid, None)

    def _meta(self, raise_it: bool, name: str, summary: str = "") -> None:
        """Raise or resolve a channel's meta-alert; never let it break delivery."""
        try:
            if raise_it:
                self.meta.raise_meta(name, summary, "critical")
            else:
                self.meta.resolve_meta(name)
        except Exception:
            log.exception("meta-alert hook failed", extra={"meta": name})

    # ---- inspection ------------------------------------------------------------------------
    def requeue(self, nid: str) -> bool:
        """Retry a dead notification from scratch; False when no dead row has that id. Thread-safe."""
        if self.outbox is None:
            return False
        at = self._now()
        payload = self.outbox.requeue(nid, at)
        if payload is None:
            return False
        entry = Entry(notification_from_dict(orjson.loads(payload)), 0, _naive(at))
        ch = self._channels.get(entry.notification.channel)
        if ch is not None:
            ch.dead = max(0, ch.dead - 1)
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._schedule, entry)
        return True

    def notifications(
        self, state: str = "all", channel: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Outbox rows for the API, newest first."""
        if self.outbox is None:
            return []
        out = []
        for r in self.outbox.list(state, channel, limit, offset):
            doc = orjson.loads(r.payload)
            out.append(
                {
                    "id": r.id,
                    "channel": r.channel,
                    "kind": r.kind,
                    "state": r.state,
                    "attempts": r.attempts,
                    "last_error": r.last_error,
                    "created_at": iso(r.created_at),
                    "next_attempt_at": iso(r.next_attempt_at) if r.state == "pending" else None,
                    "updated_at": iso(r.updated_at),
                    "delivered_at": iso(r.delivered_at),
                    "duration_seconds": doc.get("duration_seconds"),
                    "alert": doc["alert"],
                }
            )
        return out

    def pending(self) -> int:
        """Notifications not yet delivered or given up (in memory: queued, grouped, scheduled)."""
        held = sum(len(g.items) for g in list(self._groups.values()))
        return len(self._inbox) + held + sum(len(ch.entries) + ch.in_flight for ch in self._channels.values())

    def deliverable_pending(self) -> int:
        """Notifications a shutdown drain should wait for: queued, grouped, or scheduled on a
        channel that is not failing. A failing channel's rows are durable and resume after the
        restart; waiting for them would only spend the whole drain timeout."""
        held = sum(len(g.items) for k, g in list(self._groups.items()) if not self._failing(k[0]))
        waiting = sum(
            len(ch.entries) + ch.in_flight for ch in list(self._channels.values()) if not ch.consecutive_failures
        )
        return len(self._inbox) + held + waiting

    def _failing(self, channel: str) -> bool:
        ch = self._channels.get(channel)
        return ch is not None and ch.consecutive_failures > 0

    def health(self) -> list[dict[str, Any]]:
        """Every configured channel with its routing and delivery health (never its settings).

        From memory only: cheap, and it answers while the store is failing."""
        out = []
        for cfg in self.settings.notifiers:
            ch = self._channels.get(cfg.name)
            if ch is None:
                status = "disabled"
            elif ch.consecutive_failures:
                status = "failing"
            elif ch.last_success_at is not None:
                status = "ok"
            else:
                status = "idle"
            held = sum(len(g.items) for k, g in list(self._groups.items()) if k[0] == cfg.name)
            out.append(
                {
                    "name": cfg.name,
                    "type": cfg.type,
                    "enabled": cfg.enabled,
                    "severities": list(cfg.severities),
                    "rules": cfg.rules,
                    "services": cfg.services,
                    "status": status,
                    "consecutive_failures": ch.consecutive_failures if ch else 0,
                    "attempts": ch.attempts if ch else 0,
                    "failures": ch.failures if ch else 0,
                    "last_error": ch.last_error if ch else None,
                    "last_attempt_at": iso(ch.last_attempt_at) if ch else None,
                    "last_success_at": iso(ch.last_success_at) if ch else None,
                    "pending": (len(ch.entries) + ch.in_flight + held) if ch else 0,
                    "delivered": ch.delivered if ch else 0,
                    "dead": ch.dead if ch else 0,
                }
            )
        return out


def _naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo is not None else dt


async def send_test(settings: Settings, channel: str) -> Notification:
    """Build `channel` from config and send it a sample notification directly (no outbox).

    Raises ConfigError (unknown channel or invalid settings) or a NotifierError with the exact reason.
    """
    index = next((i for i, cfg in enumerate(settings.notifiers) if cfg.name == channel), None)
    if index is None:
        known = ", ".join(n.name for n in settings.notifiers) or "none configured"
        file = str(settings.config_path or "config.yaml")
        raise ConfigError([ConfigIssue(file, None, "notifiers", f"no channel named {channel!r} (known: {known})")])
    plugin = registry.build(settings.notifiers[index], index, settings)
    n = sample_notification(channel)
    try:
        await asyncio.wait_for(plugin.send(n), settings.outbox.timeout_seconds)
    except TimeoutError:
        raise TransientNotifierError(f"timed out after {settings.outbox.timeout_seconds:g}s") from None
    finally:
        closer = getattr(plugin, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()
    return n


def run_notify_test(settings: Settings, channel: str) -> int:
    """`loglens notify test CHANNEL`: 0 when delivered, 1 on any failure (printed exactly, no traceback)."""
    import typer

    try:
        n = asyncio.run(send_test(settings, channel))
    except ConfigError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        return 1
    except (TransientNotifierError, PermanentNotifierError) as exc:
        kind = "transient" if isinstance(exc, TransientNotifierError) else "permanent"
        typer.echo(f"{channel}: delivery failed ({kind}): {exc}", err=True)
        return 1
    except Exception as exc:  # a third-party plugin's own bug: show it exactly, still no traceback
        typer.echo(f"{channel}: delivery failed: {type(exc).__name__}: {exc}", err=True)
        return 1
    typer.echo(f"{channel}: test notification delivered (id {n.id})")
    return 0
