"""`NotificationService`: routing, the durable outbox and per-channel delivery workers.

`submit()` (any thread, synchronous) writes one outbox row per routed channel — keyed by the
notification's idempotency key — before anything is sent, then wakes that channel's worker.
Each channel has its own asyncio task and schedule, so a slow or failing channel never holds
up another, and nothing here runs on the ingest path. Failed attempts are retried with
exponential backoff and jitter (or the receiver's Retry-After), each attempt bounded by
`outbox.timeout_seconds`; after `outbox.max_attempts` the row becomes `dead`. A channel that
keeps failing raises a meta-alert through the `MetaAlerts` port when one is given. On
start, every pending row is resumed, so a restart between enqueue and delivery still delivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
from pydantic import BaseModel, SecretStr

from loglens.config import NotifierConfig, Settings
from loglens.errors import ConfigError, ConfigIssue, PermanentNotifierError, StorageError, TransientNotifierError
from loglens.models import Alert, Notification, iso
from loglens.notify import registry
from loglens.notify.base import notification_id, sample_notification
from loglens.notify.outbox import Outbox, OutboxEntry
from loglens.ports import MetaAlerts
from loglens.store import Store

log = logging.getLogger("loglens.notify")

META_AFTER_FAILURES = 3  # consecutive failed attempts before a channel raises a meta-alert
MAX_RETRY_AFTER_SECONDS = 86_400.0
PRUNE_DELIVERED_AFTER = timedelta(days=7)


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


@dataclass
class _Channel:
    cfg: NotifierConfig
    plugin: Any
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    heap: list[tuple[float, int, str]] = field(default_factory=list)
    entries: dict[str, OutboxEntry] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    consecutive_failures: int = 0
    attempts: int = 0
    failures: int = 0
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    meta_raised: bool = False


class NotificationService:
    """Routes alert transitions to channels and delivers them durably."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        channels: dict[str, Any] | None = None,
        meta: MetaAlerts | None = None,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.store = store
        self.outbox_cfg = settings.outbox
        self.group_wait = settings.alerts.group_wait_seconds
        self._meta_alerts = meta
        self._clock = clock
        self._rng = rng
        plugins = registry.build_all(settings) if channels is None else channels
        self._channels = {
            cfg.name: _Channel(cfg, plugins[cfg.name]) for cfg in settings.notifiers if cfg.name in plugins
        }
        self._secrets = [s for ch in self._channels.values() for s in _secrets_of(getattr(ch.plugin, "config", None))]
        self._outbox: Outbox | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seq = 0
        self._stopping = False
        self._resumed: set[str] = set()  # ids loaded from the outbox at start (see start())
        # How long stop() lets in-flight attempts finish before cancelling them (they stay pending).
        self.stop_grace_seconds = min(self.outbox_cfg.timeout_seconds, 5.0)

    # ---- lifecycle -------------------------------------------------------------------------
    @property
    def outbox(self) -> Outbox:
        """The outbox table; opened on first use so submit() works as soon as the store runs."""
        if self._outbox is None:
            self._outbox = Outbox(self.store.cursor())
        return self._outbox

    async def start(self) -> None:
        """Start one worker per channel and resume every pending notification."""
        pruned = await asyncio.to_thread(self.outbox.prune, self._now() - PRUNE_DELIVERED_AFTER)
        if pruned:
            log.info("pruned delivered notifications", extra={"rows": pruned})
        await self._start_workers()

    async def _start_workers(self) -> None:
        # Order matters: submits from now on reach the loop, then the backlog is loaded, and only
        # then do workers run — so a row that is both loaded and freshly submitted is sent once.
        for ch in self._channels.values():
            ch.wake = asyncio.Event()
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        pending = await asyncio.to_thread(self.outbox.pending)
        for entry in pending:
            self._resumed.add(entry.notification.id)
            self._schedule(entry)
        for ch in self._channels.values():
            ch.task = asyncio.create_task(self._worker(ch), name=f"loglens-notify-{ch.cfg.name}")
        if pending:
            log.info("notification outbox resumed", extra={"pending": len(pending)})

    async def _stop_workers(self) -> None:
        self._stopping = True
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
            closer = getattr(ch.plugin, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()

    async def stop(self) -> None:
        """Let in-flight attempts finish (bounded), stop the workers and close clients."""
        await self._stop_workers()
        self._loop = None
        if self._outbox is not None:
            with contextlib.suppress(duckdb.Error):
                self._outbox.close()
            self._outbox = None

    def prepare_reload(self, new: Settings) -> Callable[[], Any]:
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
                    prev = old[cfg.name]
                    for key in (
                        "consecutive_failures",
                        "attempts",
                        "failures",
                        "last_error",
                        "last_attempt_at",
                        "last_success_at",
                        "meta_raised",
                    ):
                        setattr(ch, key, getattr(prev, key))
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
        """Write one outbox row per routed channel, then wake the workers. Thread-safe, never blocks on I/O
        beyond the local DuckDB insert; the same transition submitted twice is stored once."""
        now = self._now()
        due = now + timedelta(seconds=self.group_wait)
        for ch in self._channels.values():
            if not routes(ch.cfg, alert):
                continue
            n = Notification(
                id=notification_id(alert, kind, ch.cfg.name),
                channel=ch.cfg.name,
                kind=kind,
                alert=alert,
                created_at=now,
                duration_seconds=duration_seconds,
            )
            try:
                inserted = self.outbox.insert(n, due)
            except (duckdb.Error, StorageError) as exc:
                log.error("cannot write notification to outbox", extra={"channel": ch.cfg.name, "error": str(exc)})
                continue
            loop = self._loop
            if inserted and loop is not None and not self._stopping:
                entry = OutboxEntry(n, 0, due.replace(tzinfo=None))
                with contextlib.suppress(RuntimeError):  # loop closed: the next start resumes it
                    loop.call_soon_threadsafe(self._schedule_new, entry)

    def _schedule_new(self, entry: OutboxEntry) -> None:
        if entry.notification.id not in self._resumed:  # else start() already scheduled it
            self._schedule(entry)

    def _schedule(self, entry: OutboxEntry) -> None:
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
            try:
                await self._attempt(ch, entry)
            except (duckdb.Error, StorageError) as exc:  # store closing: the row stays pending
                log.warning("outbox update failed", extra={"channel": ch.cfg.name, "error": str(exc)})

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Seconds before the next attempt: the receiver's Retry-After, else capped exponential × jitter."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER_SECONDS)
        cfg = self.outbox_cfg
        base = min(cfg.max_backoff_seconds, cfg.initial_backoff_seconds * 2 ** (attempts - 1))
        return base * (0.5 + 0.5 * self._rng())  # "equal jitter": spread retries, keep a floor

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def _attempt(self, ch: _Channel, entry: OutboxEntry) -> None:
        n = entry.notification
        attempts = entry.attempts + 1
        timeout = self.outbox_cfg.timeout_seconds
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
            await asyncio.to_thread(self.outbox.mark_delivered, n.id, attempts, now)
            ch.consecutive_failures = 0
            ch.last_success_at = now
            log.info("notification delivered", extra={"channel": ch.cfg.name, "id": n.id, "attempts": attempts})
            if ch.meta_raised:
                ch.meta_raised = False
                await self._meta("resolve_meta", meta_name(ch.cfg.name))
            return
        error = self._scrub(error)[:2000]
        now = self._now()
        ch.failures += 1
        ch.consecutive_failures += 1
        ch.last_error = error
        dead = permanent or attempts >= self.outbox_cfg.max_attempts
        if dead:
            await asyncio.to_thread(self.outbox.mark_dead, n.id, attempts, error, now)
            log.error(
                "notification dead", extra={"channel": ch.cfg.name, "id": n.id, "attempts": attempts, "error": error}
            )
        else:
            delay = self.backoff(attempts, retry_after)
            next_at = now + timedelta(seconds=delay)
            await asyncio.to_thread(self.outbox.mark_retry, n.id, attempts, error, next_at, now)
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
            self._schedule(OutboxEntry(n, attempts, next_at.replace(tzinfo=None)))
        if not ch.meta_raised and (dead or ch.consecutive_failures >= META_AFTER_FAILURES):
            ch.meta_raised = True
            summary = f"notifier channel {ch.cfg.name!r} is failing ({ch.consecutive_failures} in a row): {error}"
            await self._meta("raise_meta", meta_name(ch.cfg.name), summary, "critical")

    async def _meta(self, method: str, *args: str) -> None:
        """Raise/resolve a meta-alert through the port (off the loop: it persists); never break delivery."""
        if self._meta_alerts is None:
            return
        try:
            await asyncio.to_thread(getattr(self._meta_alerts, method), *args)
        except Exception:
            log.exception("meta-alert hook failed", extra={"method": method})

    # ---- inspection ------------------------------------------------------------------------
    def requeue(self, nid: str) -> bool:
        """Retry a dead notification from scratch; False when no dead row has that id. Thread-safe."""
        entry = self.outbox.requeue(nid, self._now())
        if entry is None:
            return False
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._schedule, entry)
        return True

    def notifications(self, state: str = "all", channel: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Outbox rows for the API."""
        return self.outbox.list(state, channel, limit)

    def health(self) -> list[dict[str, Any]]:
        """Every configured channel with its routing and delivery health (never its settings)."""
        counts = self.outbox.counts()
        out = []
        for cfg in self.settings.notifiers:
            ch = self._channels.get(cfg.name)
            c = counts.get(cfg.name, {"pending": 0, "delivered": 0, "dead": 0})
            if ch is None:
                status = "disabled"
            elif ch.consecutive_failures:
                status = "failing"
            elif ch.last_success_at is not None:
                status = "ok"
            else:
                status = "idle"
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
                    "pending": c.get("pending", 0),
                    "delivered": c.get("delivered", 0),
                    "dead": c.get("dead", 0),
                }
            )
        return out


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
