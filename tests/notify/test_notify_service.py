"""NotificationService + durable outbox on a real DuckDB store, delivering to real HTTP receivers."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from notify_receivers import Receiver, Reply, free_port

from loglens.config import Settings
from loglens.errors import ConfigError, TransientNotifierError
from loglens.models import Alert, Notification
from loglens.notify.service import NotificationService, meta_name, routes
from loglens.notify.webhook import WebhookNotifier
from loglens.store import Store
from loglens.store.outbox import OutboxRepository

pytestmark = pytest.mark.anyio


def _yaml(channels: list[dict[str, Any]], outbox: str = "", group_wait: float = 0) -> str:
    lines = [f"alerts: {{group_wait_seconds: {group_wait}}}", "notifiers:" + ("" if channels else " []")]
    for ch in channels:
        lines.append(f"  - name: {ch['name']}")
        lines.append(f"    type: {ch.get('type', 'webhook')}")
        for key in ("severities", "rules", "services"):
            if key in ch:
                lines.append(f"    {key}: [{', '.join(ch[key])}]")
        if "enabled" in ch:
            lines.append(f"    enabled: {str(ch['enabled']).lower()}")
        if "url" in ch:
            lines.append(f"    settings: {{url: '{ch['url']}'}}")
        elif ch.get("type", "webhook") == "webhook":
            lines.append("    settings: {url: 'http://127.0.0.1:9/unused'}")
    lines.append(outbox or "outbox: {initial_backoff_seconds: 0.05, max_backoff_seconds: 0.2, timeout_seconds: 2}")
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def running(
    settings: Settings, outbox: type[OutboxRepository] = OutboxRepository, **kwargs: Any
) -> AsyncIterator[NotificationService]:
    store = Store(settings.storage.path).start()
    svc = NotificationService(settings, outbox(store.cursor), **kwargs)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()
        store.close()


async def wait_rows(
    svc: NotificationService, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 60
) -> list[dict[str, Any]]:
    """Poll the outbox table until `pred(rows)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await asyncio.to_thread(svc.notifications, "all", None, 1000)
        if rows and pred(rows):  # rows are written by the grouping pass, a moment after submit()
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"outbox never reached the expected state: {rows}")
        await asyncio.sleep(0.02)


def _delivered(n: int = 1) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda rows: sum(r["state"] == "delivered" for r in rows) >= n


class MetaRecorder:
    """Stands in for the alerting engine's meta-alert hooks (the engine is built elsewhere)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def raise_meta(self, name: str, summary: str, severity: str) -> None:
        self.calls.append(("raise", name, summary, severity))

    def resolve_meta(self, name: str) -> None:
        self.calls.append(("resolve", name))


async def test_routing_by_severity_rule_and_service(settings_factory, alert_factory) -> None:
    settings = settings_factory(
        _yaml(
            [
                {"name": "crit", "severities": ["critical"]},
                {"name": "payments", "severities": ["critical", "warning"], "services": ["payments"]},
                {"name": "absence_only", "rules": ["absence"]},
                {"name": "off", "enabled": False},
            ],
            outbox="outbox: {initial_backoff_seconds: 60, max_backoff_seconds: 60}",
        )
    )
    async with running(settings) as svc:  # every channel points at a closed port: rows stay pending
        svc.submit(alert_factory(alert_id="1", severity="critical", rule="error_rate", service="checkout"), "firing")
        svc.submit(alert_factory(alert_id="2", severity="warning", rule="volume", service="payments"), "firing")
        svc.submit(alert_factory(alert_id="3", severity="critical", rule="absence", service="payments"), "firing")
        rows = await wait_rows(svc, lambda rows: len(rows) == 5)
    got = sorted((r["alert"]["id"], r["channel"]) for r in rows)
    assert got == [("1", "crit"), ("2", "payments"), ("3", "absence_only"), ("3", "crit"), ("3", "payments")]
    assert {r["state"] for r in rows} == {"pending"}


async def test_fails_n_times_then_succeeds_with_exponential_backoff(
    settings_factory, receiver_factory, alert_factory
) -> None:
    r = receiver_factory(script=[Reply(500), Reply(502), Reply(503)])
    settings = settings_factory(_yaml([{"name": "hook", "url": r.url}]))
    async with running(settings, rng=lambda: 1.0) as svc:  # jitter factor 1.0: delays 0.05, 0.1, 0.2
        svc.submit(alert_factory(), "firing")
        rows = await wait_rows(svc, _delivered())
    reqs = r.requests
    assert len(reqs) == 4 and len({q.headers["idempotency-key"] for q in reqs}) == 1
    gaps = [b.at - a.at for a, b in itertools.pairwise(reqs)]
    for gap, expected in zip(gaps, [0.05, 0.1, 0.2], strict=True):
        assert gap >= expected * 0.9, gaps
    (row,) = rows
    assert row["attempts"] == 4 and row["last_error"].endswith("answered HTTP 503: ok")
    assert row["delivered_at"] is not None and row["next_attempt_at"] is None


async def test_retry_after_is_honoured(settings_factory, receiver_factory, alert_factory) -> None:
    r = receiver_factory(script=[Reply(429, {"Retry-After": "1"})])
    settings = settings_factory(
        _yaml(
            [{"name": "hook", "url": r.url}],
            outbox="outbox: {initial_backoff_seconds: 0.01, max_backoff_seconds: 0.02}",
        )
    )
    async with running(settings) as svc:
        svc.submit(alert_factory(), "firing")
        await wait_rows(svc, _delivered())
    first, second = r.requests
    assert second.at - first.at >= 0.95  # not the 0.01-0.02 s backoff


async def test_connection_refused_then_delivered_once_receiver_starts(
    settings_factory, receiver_factory, alert_factory
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    settings = settings_factory(_yaml([{"name": "hook", "url": url}]))
    async with running(settings) as svc:
        svc.submit(alert_factory(), "firing")
        rows = await wait_rows(svc, lambda rows: rows and rows[0]["attempts"] >= 2)
        assert rows[0]["state"] == "pending" and "cannot reach" in rows[0]["last_error"]
        r = receiver_factory(port=port)
        rows = await wait_rows(svc, _delivered())
    assert len(r.requests) == 1 and rows[0]["attempts"] >= 3


async def test_gives_up_into_dead_and_raises_then_resolves_meta_alert(
    settings_factory, receiver_factory, alert_factory
) -> None:
    r = receiver_factory(default=Reply(500, body=b"down"))
    settings = settings_factory(
        _yaml(
            [{"name": "hook", "url": r.url}],
            outbox="outbox: {max_attempts: 3, initial_backoff_seconds: 0.01, max_backoff_seconds: 0.02}",
        )
    )
    meta = MetaRecorder()
    async with running(settings, meta=meta) as svc:
        svc.submit(alert_factory(), "firing")
        rows = await wait_rows(svc, lambda rows: rows[0]["state"] == "dead")
        assert rows[0]["attempts"] == 3 and "HTTP 500: down" in rows[0]["last_error"]
        assert await asyncio.to_thread(svc.notifications, "dead") == rows
        assert await asyncio.to_thread(svc.notifications, "pending") == []
        assert [c[:2] for c in meta.calls] == [("raise", meta_name("hook"))]
        assert meta.calls[0][3] == "critical" and "'hook' is failing (3 in a row)" in meta.calls[0][2]
        health = {h["name"]: h for h in svc.health()}["hook"]
        assert health["status"] == "failing" and health["dead"] == 1 and health["consecutive_failures"] == 3
        # The receiver recovers: the next notification is delivered and the meta-alert resolves.
        r.default = Reply(200)
        svc.submit(alert_factory(alert_id="a-2"), "firing")
        await wait_rows(svc, _delivered())
        assert meta.calls[-1] == ("resolve", meta_name("hook"))
        assert {h["name"]: h for h in svc.health()}["hook"]["status"] == "ok"
        # A dead notification can be retried by hand.
        assert svc.requeue(rows[0]["id"]) is True
        assert svc.requeue(rows[0]["id"]) is False
        await wait_rows(svc, _delivered(2))


async def test_permanent_error_goes_dead_at_once(settings_factory, receiver_factory, alert_factory) -> None:
    r = receiver_factory(default=Reply(404))
    settings = settings_factory(_yaml([{"name": "hook", "url": r.url}]))
    async with running(settings) as svc:  # no alerting engine: meta-alert hooks are skipped
        svc.submit(alert_factory(), "firing")
        rows = await wait_rows(svc, lambda rows: rows[0]["state"] == "dead")
    assert rows[0]["attempts"] == 1 and len(r.requests) == 1


async def test_slow_channel_does_not_stall_another(settings_factory, receiver_factory, alert_factory) -> None:
    # The slow receiver holds each request far longer than the fast channel needs for all three,
    # so the order of events proves independence without timing the machine.
    slow = receiver_factory(default=Reply(delay=4.0))
    fast = receiver_factory()
    settings = settings_factory(_yaml([{"name": "slow", "url": slow.url}, {"name": "fast", "url": fast.url}]))
    async with running(settings) as svc:
        for i, rule in enumerate(("error_rate", "volume", "absence")):  # 3 rules: 3 notifications each
            svc.submit(alert_factory(alert_id=f"s-{i}", rule=rule), "firing")
        await asyncio.to_thread(fast.wait_for, 3, 60.0)
        rows = await asyncio.to_thread(svc.notifications, "pending", "slow")
        assert len(rows) >= 2  # the slow channel is still busy with its first one


async def test_attempt_timeout_counts_as_transient(settings_factory, receiver_factory, alert_factory) -> None:
    r = receiver_factory(default=Reply(delay=1.0))
    settings = settings_factory(
        _yaml(
            [{"name": "hook", "url": r.url}],
            outbox="outbox: {max_attempts: 2, initial_backoff_seconds: 0.01, timeout_seconds: 0.2}",
        )
    )
    async with running(settings) as svc:
        svc.submit(alert_factory(), "firing")
        rows = await wait_rows(svc, lambda rows: rows[0]["state"] == "dead")
    assert rows[0]["last_error"] == "timed out after 0.2s" and rows[0]["attempts"] == 2


async def test_same_transition_is_stored_and_sent_once(settings_factory, receiver_factory, alert_factory) -> None:
    r = receiver_factory()
    settings = settings_factory(_yaml([{"name": "hook", "url": r.url}]))
    async with running(settings) as svc:
        alert = alert_factory()
        svc.submit(alert, "firing")
        svc.submit(alert, "firing")
        resolved = alert_factory(state="resolved", resolved_at=alert.started_at.replace(minute=9))
        svc.submit(resolved, "resolved", duration_seconds=300.0)
        rows = await wait_rows(svc, _delivered(2))
    assert len(rows) == 2 and len(r.requests) == 2
    bodies = sorted((q.json()["kind"], q.json()["duration_seconds"]) for q in r.requests)
    assert bodies == [("firing", None), ("resolved", 300.0)]


async def test_restart_between_enqueue_and_delivery_delivers_exactly_once(
    settings_factory, receiver_factory, alert_factory
) -> None:
    r = receiver_factory()
    settings = settings_factory(_yaml([{"name": "hook", "url": r.url}]))
    # Process 1 writes the outbox row; its channel never answers, and it stops with the row pending.
    store = Store(settings.storage.path).start()
    first = NotificationService(settings, OutboxRepository(store.cursor), channels={"hook": Blocking()})
    first.stop_grace_seconds = 0.05
    await first.start()
    alert = alert_factory()
    first.submit(alert, "firing")
    await wait_rows(first, lambda rows: [row["state"] for row in rows] == ["pending"])
    await first.stop()
    store.close()
    assert r.requests == []
    # Process 2 resumes it; the alerting engine re-submitting the same transition changes nothing.
    async with running(settings) as svc:
        svc.submit(alert, "firing")
        await wait_rows(svc, _delivered())
        await asyncio.sleep(0.2)
    async with running(settings) as svc:  # a third start has nothing left to send
        await asyncio.sleep(0.2)
    assert len(r.requests) == 1


async def test_plugin_bug_is_retried_and_secrets_are_scrubbed(settings_factory, alert_factory) -> None:
    class Flaky:
        name = "flaky"
        Config = WebhookNotifier.Config

        def __init__(self) -> None:
            self.config = WebhookNotifier.Config(url="http://127.0.0.1:9/x", secret="sk-very-secret")
            self.calls: list[Notification] = []

        async def send(self, n: Notification) -> None:
            self.calls.append(n)
            if len(self.calls) == 1:
                raise RuntimeError("handshake failed with key sk-very-secret")
            if len(self.calls) == 2:
                raise TransientNotifierError("rate limited", retry_after=0.05)

    plugin = Flaky()
    settings = settings_factory(_yaml([{"name": "x", "type": "console"}]))
    async with running(settings, channels={"x": plugin}) as svc:
        svc.submit(alert_factory(), "firing")
        rows = await wait_rows(svc, _delivered())
        health = svc.health()[0]
    assert len(plugin.calls) == 3 and rows[0]["attempts"] == 3
    assert health["failures"] == 2 and health["status"] == "ok" and health["type"] == "console"
    assert "sk-very-secret" not in str(rows)


async def test_group_wait_delays_first_attempt(settings_factory, receiver_factory, alert_factory) -> None:
    r = receiver_factory()
    settings = settings_factory(_yaml([{"name": "hook", "url": r.url}], group_wait=0.3))
    async with running(settings) as svc:
        t0 = time.monotonic()
        svc.submit(alert_factory(), "firing")
        await asyncio.to_thread(r.wait_for, 1, 5.0)
    assert r.requests[0].at - t0 >= 0.28


def test_routes_skip_meta_alert_about_the_same_channel(alert_factory) -> None:
    from loglens.config import NotifierConfig

    cfg = NotifierConfig(name="hook", type="webhook", severities=["critical"])
    meta: Alert = alert_factory(rule="meta", service="loglens", labels={"channel": "hook"})
    meta2: Alert = alert_factory(rule="meta", service=meta_name("hook"), labels={})
    assert routes(cfg, alert_factory()) is True
    assert routes(cfg, meta) is False and routes(cfg, meta2) is False
    assert routes(cfg.model_copy(update={"name": "other"}), meta) is True
    assert routes(cfg.model_copy(update={"name": "other"}), meta2) is True
    assert routes(cfg, alert_factory(severity="warning")) is False


async def test_backoff_is_capped_and_jittered(settings_factory) -> None:
    settings = settings_factory(_yaml([], outbox="outbox: {initial_backoff_seconds: 1, max_backoff_seconds: 8}"))
    store = Store(settings.storage.path).start()
    try:
        low = NotificationService(settings, None, rng=lambda: 0.0)
        high = NotificationService(settings, None, rng=lambda: 1.0)
        assert [high.backoff(a, None) for a in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 8, 8, 8]
        assert [low.backoff(a, None) for a in (1, 4)] == [0.5, 4]
        assert high.backoff(1, 30) == 30 and high.backoff(1, 10**9) == 86_400
    finally:
        store.close()


async def test_health_lists_disabled_channels_without_settings(settings_factory, receiver: Receiver) -> None:
    settings = settings_factory(_yaml([{"name": "hook", "url": receiver.url}, {"name": "off", "enabled": False}]))
    async with running(settings) as svc:
        health = {h["name"]: h for h in svc.health()}
    assert health["off"]["status"] == "disabled" and health["hook"]["status"] == "idle"
    assert "settings" not in health["hook"] and "secret-path-token" not in str(health)


class Blocking:
    """A channel whose receiver never answers (until cancelled)."""

    name = "blocking"
    Config = WebhookNotifier.Config

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def send(self, n: Notification) -> None:
        self.started.set()
        await asyncio.Event().wait()


async def test_stop_cancels_a_stuck_attempt_and_the_row_stays_pending(settings_factory, alert_factory) -> None:
    settings = settings_factory(_yaml([{"name": "x", "type": "console"}]))
    plugin = Blocking()
    store = Store(settings.storage.path).start()
    svc = NotificationService(settings, OutboxRepository(store.cursor), channels={"x": plugin})
    svc.stop_grace_seconds = 0.05
    await svc.start()
    svc.submit(alert_factory(), "firing")
    await asyncio.wait_for(plugin.started.wait(), 5)
    started = time.monotonic()
    await svc.stop()
    assert time.monotonic() - started < 1.0
    svc2 = NotificationService(settings, OutboxRepository(store.cursor), channels={})  # channel removed
    await svc2.start()
    rows = svc2.notifications()
    await svc2.stop()
    store.close()
    assert [(r["state"], r["attempts"]) for r in rows] == [("pending", 0)]


class Recording:
    """A channel plugin that records what it is sent."""

    name = "recording"
    Config = WebhookNotifier.Config

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    async def send(self, n: Notification) -> None:
        self.sent.append(n)


async def test_a_store_that_cannot_write_still_delivers_from_memory(settings_factory, alert_factory, caplog) -> None:
    """Disk full / store gone: the meta-alert about the store (and any other notification) still
    reaches the channel; nothing raises into the alerting engine."""
    settings = settings_factory(_yaml([{"name": "x", "type": "console"}]))
    store = Store(settings.storage.path).start()
    plugin = Recording()
    svc = NotificationService(settings, OutboxRepository(store.cursor), channels={"x": plugin})
    store.close()  # every outbox statement now fails
    await svc.start()
    try:
        svc.submit(alert_factory(rule="meta", service="store", severity="critical"), "firing")
        svc.submit(alert_factory(alert_id="a-2"), "firing")
        deadline = time.monotonic() + 10
        while len(plugin.sent) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        await svc.stop()
    assert sorted(n.alert.rule for n in plugin.sent) == ["error_rate", "meta"]
    assert "delivering from memory" in caplog.text


class MarkFailsOnce(OutboxRepository):
    """The real outbox, with the first delivered-mark failing like a full disk would."""

    failed = 0

    def mark_delivered(self, nid: str, attempts: int, at: Any) -> None:
        if MarkFailsOnce.failed == 0:
            MarkFailsOnce.failed += 1
            raise OSError("No space left on device")
        super().mark_delivered(nid, attempts, at)


async def test_a_failed_delivered_mark_is_retried_not_resent(settings_factory, receiver_factory, alert_factory) -> None:
    r = receiver_factory()
    settings = settings_factory(_yaml([{"name": "hook", "url": r.url}]))
    async with running(settings, outbox=MarkFailsOnce) as svc:
        svc.submit(alert_factory(), "firing")
        await asyncio.to_thread(r.wait_for, 1, 10.0)
        svc.submit(alert_factory(alert_id="a-2"), "firing")  # the next pass retries the mark
        rows = await wait_rows(svc, _delivered(2))
    assert MarkFailsOnce.failed == 1
    assert len(r.requests) == 2 and all(row["attempts"] == 1 for row in rows)
    async with running(settings) as svc:  # a restart finds nothing pending: nothing is sent again
        await asyncio.sleep(0.3)
    assert len(r.requests) == 2


async def test_a_storm_of_one_rule_becomes_one_grouped_notification(
    settings_factory, receiver_factory, alert_factory
) -> None:
    r = receiver_factory()
    settings = settings_factory(_yaml([{"name": "hook", "url": r.url}], group_wait=0.5))
    async with running(settings) as svc:
        for i in range(500):
            svc.submit(alert_factory(alert_id=f"abs-{i}", rule="absence", service=f"svc-{i:03d}"), "firing")
        svc.submit(alert_factory(alert_id="meta-1", rule="meta", service="store"), "firing")
        svc.submit(alert_factory(alert_id="er-1", rule="error_rate", service="api"), "firing")
        rows = await wait_rows(svc, _delivered(3))
        await asyncio.sleep(0.3)
    assert len(rows) == 3 and len(r.requests) == 3
    bodies = {q.json()["alert"]["rule"]: q.json() for q in r.requests}
    group = bodies["absence"]["alert"]
    assert group["labels"]["group_size"] == "500" and group["service"] == "500 services"
    assert (
        group["summary"].startswith("500 absence alerts firing: svc-000, svc-001") and "(+480 more)" in group["summary"]
    )
    assert bodies["error_rate"]["alert"]["id"] == "er-1"  # alone in its group: sent as itself
    assert svc.grouped == 500


async def test_a_storm_that_keeps_building_is_collected_per_interval(
    settings_factory, receiver_factory, alert_factory
) -> None:
    r = receiver_factory()
    settings = settings_factory(_yaml([{"name": "hook", "url": r.url}]))
    async with running(settings) as svc:
        for i in range(50):
            svc.submit(alert_factory(alert_id=f"abs-{i}", rule="absence", service=f"s{i}"), "firing")
        await asyncio.to_thread(r.wait_for, 1, 60.0)  # the storm's first group
        # the storm goes on: its next members wait for the group interval, other rules do not
        for i in range(50, 60):
            svc.submit(alert_factory(alert_id=f"abs-{i}", rule="absence", service=f"s{i}"), "firing")
        svc.submit(alert_factory(alert_id="er-1", rule="error_rate"), "firing")
        await asyncio.to_thread(r.wait_for, 3, 60.0)
    rules = [(q.json()["alert"]["rule"], q.json()["alert"]["labels"].get("group_size")) for q in r.requests]
    assert rules == [("absence", "50"), ("error_rate", None), ("absence", "10")]


async def test_submit_never_blocks_and_overflow_is_counted_and_alerted(settings_factory, alert_factory) -> None:
    settings = settings_factory(_yaml([{"name": "x", "type": "console"}], outbox="outbox: {max_queue: 100}"))
    meta = MetaRecorder()
    svc = NotificationService(settings, None, channels={"x": Recording()}, meta=meta)
    for i in range(150):  # not started: nothing drains the queue
        svc.submit(alert_factory(alert_id=f"a-{i}"), "firing")
    svc.submit(alert_factory(alert_id="m", rule="meta", service="store"), "firing")  # meta always passes
    assert svc.dropped == 50 and svc.pending() == 101
    assert [c[:2] for c in meta.calls] == [("raise", "notifier:queue")]


async def test_channel_timeout_bounds_attempts_and_a_longer_one_is_a_config_error(
    settings_factory, receiver_factory, alert_factory
) -> None:
    from loglens.notify import registry

    r = receiver_factory(default=Reply(delay=1.0))
    ok = settings_factory(
        "notifiers: [{name: hook, type: webhook, settings: {url: '" + r.url + "', timeout_seconds: 0.2}}]\n"
        "outbox: {max_attempts: 1, timeout_seconds: 5}\n"
    )
    async with running(ok) as svc:
        svc.submit(alert_factory(), "firing")
        rows = await wait_rows(svc, lambda rows: rows and rows[0]["state"] == "dead")
    assert "timed out" in rows[0]["last_error"]  # the channel's 0.2 s, not the outbox's 5 s
    bad = settings_factory(
        "notifiers: [{name: hook, type: webhook, settings: {url: 'http://x', timeout_seconds: 60}}]\n"
    )
    with pytest.raises(ConfigError, match=r"notifiers\[0\].settings.timeout_seconds.*longer than outbox"):
        registry.build_all(bad)


async def test_a_broken_meta_hook_never_breaks_delivery(
    settings_factory, receiver_factory, alert_factory, monkeypatch, caplog
) -> None:
    class Exploding:
        def raise_meta(self, *args: Any) -> None:
            raise RuntimeError("alerting engine bug")

    monkeypatch.setenv("LOGLENS_T_HOOK_SECRET", "env-provided-secret")
    r = receiver_factory(default=Reply(500, body=b"env-provided-secret leaked by receiver"))
    settings = settings_factory(
        _yaml([{"name": "hook", "url": r.url}], outbox="outbox: {max_attempts: 1, initial_backoff_seconds: 0.01}")
    )
    plugin = WebhookNotifier(WebhookNotifier.Config(url=r.url, secret_env="LOGLENS_T_HOOK_SECRET"))
    async with running(settings, channels={"hook": plugin}, meta=Exploding()) as svc:
        svc.submit(alert_factory(), "firing")
        rows = await wait_rows(svc, lambda rows: rows[0]["state"] == "dead")
    assert "meta-alert hook failed" in caplog.text
    assert "env-provided-secret" not in rows[0]["last_error"] and "*** leaked" in rows[0]["last_error"]


async def test_config_reload_swaps_channels_and_keeps_pending(
    settings_factory, receiver_factory, alert_factory
) -> None:
    a, b = receiver_factory(default=Reply(500)), receiver_factory()
    settings = settings_factory(
        _yaml([{"name": "a", "url": a.url}], outbox="outbox: {initial_backoff_seconds: 5, max_backoff_seconds: 5}")
    )
    async with running(settings) as svc:
        svc.submit(alert_factory(alert_id="1"), "firing")
        await wait_rows(svc, lambda rows: rows[0]["attempts"] == 1)  # failing, next try in ~5 s
        with pytest.raises(ConfigError, match=r"notifiers\[0\].settings.url"):
            svc.prepare_reload(settings_factory("notifiers: [{name: a, type: webhook}]\n"))
        # channel "a" now points at the healthy receiver and "b" is new: the pending row is retried
        # by the new worker (its persisted next attempt), new alerts reach both.
        new = settings_factory(_yaml([{"name": "a", "url": b.url}, {"name": "b", "url": b.url}]))
        await svc.prepare_reload(new)()
        assert {h["name"]: h["failures"] for h in svc.health()} == {"a": 1, "b": 0}
        svc.submit(alert_factory(alert_id="2"), "firing")
        rows = await wait_rows(svc, _delivered(2))
    assert sorted((r["channel"], r["alert"]["id"], r["state"]) for r in rows) == [
        ("a", "1", "pending"),
        ("a", "2", "delivered"),
        ("b", "2", "delivered"),
    ]
    assert sorted(q.json()["alert"]["id"] for q in b.requests) == ["2", "2"]


async def test_a_drain_does_not_wait_for_a_failing_channel(settings_factory, receiver_factory, alert_factory) -> None:
    """Rows of a channel that keeps failing are durable and resume after a restart: a shutdown
    drain waits for deliverable notifications only, not for the drain timeout."""
    r = receiver_factory(default=Reply(500))
    settings = settings_factory(
        _yaml([{"name": "hook", "url": r.url}], outbox="outbox: {initial_backoff_seconds: 30, max_backoff_seconds: 30}")
    )
    async with running(settings) as svc:
        svc.submit(alert_factory(), "firing")
        assert svc.deliverable_pending() == 1  # queued: a drain waits for it
        await wait_rows(svc, lambda rows: rows[0]["attempts"] == 1)  # failed once, next try in ~30 s
        assert svc.pending() == 1 and svc.deliverable_pending() == 0
