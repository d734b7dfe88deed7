"""The composition root: what it builds, the order it starts and stops parts in, and its ports.

In-process with a real store in tmp_path; no HTTP server unless the test is about the API.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from loglens.api.app import create_app, runtime_of
from loglens.config import Settings
from loglens.errors import StorageError
from loglens.models import Alert
from loglens.ports import MetaAlertRelay
from loglens.runtime import Runtime

pytestmark = pytest.mark.anyio

ORDER = ["store", "notifier", "alerting", "storewatch", "stream", "syslog", "tail", "selfmetrics", "reload"]


class Recorder:
    """A component that records its calls into a shared list (and can fail on start)."""

    def __init__(self, name: str, calls: list[str], fail: bool = False) -> None:
        self.name = name
        self.calls = calls
        self.fail = fail

    async def start(self) -> None:
        self.calls.append(f"start {self.name}")
        if self.fail:
            raise RuntimeError(f"{self.name} cannot start")

    async def stop(self) -> None:
        self.calls.append(f"stop {self.name}")


def _full(settings_factory: Callable[..., Settings], tmp_path: Path) -> Settings:
    """Settings that enable every optional component (syslog on free ports, one tailed file)."""
    followed = tmp_path / "app.log"
    followed.write_text("")
    return settings_factory(
        "protocols:\n  syslog: {enabled: true, udp_port: 0, tcp_port: 0}\n", ingest={"files": [followed]}
    )


async def test_builds_every_component_and_runs_them_in_the_declared_order(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    runtime = Runtime(_full(settings_factory, tmp_path))
    assert [c.name for c in runtime.components] == ORDER
    assert runtime.engine is None and runtime.evaluator is None  # alerting is built at start
    await runtime.start()
    try:
        assert runtime.engine is not None and runtime.evaluator is not None
        assert runtime.syslog is not None and runtime.syslog.udp_port
        assert runtime.stream.on_commit in runtime.store.listeners
        assert runtime.evaluator.scheduler.on_commit in runtime.store.listeners
    finally:
        await runtime.stop()
    assert runtime.engine is None
    assert runtime.store.listeners == []  # every component detached from the store


async def test_a_failing_start_stops_what_was_started_in_reverse(
    settings_factory: Callable[..., Settings],
) -> None:
    calls: list[str] = []
    runtime = Runtime(settings_factory())
    first, second = runtime.components[0], runtime.components[1]
    runtime.components = [first, Recorder("a", calls), Recorder("b", calls, fail=True), second]
    with pytest.raises(RuntimeError, match="b cannot start"):
        await runtime.start()
    assert calls == ["start a", "start b", "stop a"]
    with pytest.raises(StorageError):  # the store was started first and closed last
        runtime.store.cursor()


async def test_a_component_failing_to_stop_does_not_keep_the_others_running(
    settings_factory: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    class BadStop(Recorder):
        async def stop(self) -> None:
            await super().stop()
            raise RuntimeError("stuck")

    runtime = Runtime(settings_factory())
    runtime.components = [runtime.components[0], Recorder("a", calls), BadStop("bad", calls)]
    await runtime.start()
    await runtime.stop()
    assert calls == ["start a", "start bad", "stop bad", "stop a"]
    assert "component failed to stop" in caplog.text


async def test_reload_hooks_are_registered_once_per_component(settings_factory: Callable[..., Settings]) -> None:
    runtime = Runtime(settings_factory())
    hooks = runtime.reload.hooks
    assert len(hooks) == 2
    assert hooks.count(runtime.notifier.prepare_reload) == 1
    assert hooks.count(runtime.alerting.prepare_reload) == 1
    assert runtime.alerting.prepare_reload(runtime.settings) is None  # nothing to apply before start


async def test_meta_alerts_raised_before_alerting_runs_reach_the_engine_when_it_starts(
    settings_factory: Callable[..., Settings],
) -> None:
    runtime = Runtime(settings_factory())
    runtime.meta.raise_meta("early", "raised before alerting runs", "critical")
    runtime.meta.raise_meta("gone", "raised, then resolved, before alerting runs")
    runtime.meta.resolve_meta("gone")
    await runtime.start()
    try:
        assert runtime.engine is not None

        def firing(name: str) -> list[Alert]:
            assert runtime.engine is not None
            return [a for a in runtime.engine.active() if a.rule == "meta" and a.service == name]

        assert firing("early") and firing("early")[0].severity == "critical"
        assert not firing("gone")
        runtime.meta.raise_meta("probe", "raised through the relay")
        assert firing("probe")
        runtime.meta.resolve_meta("probe")
        assert not firing("probe")
    finally:
        await runtime.stop()


class Recording:
    """A MetaAlerts target that records calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def raise_meta(self, name: str, summary: str, severity: str = "warning") -> None:
        self.calls.append(("raise", name, summary, severity))

    def resolve_meta(self, name: str) -> None:
        self.calls.append(("resolve", name))


def test_relay_keeps_the_latest_state_per_name_until_bound_and_again_after_unbinding() -> None:
    relay, target = MetaAlertRelay(), Recording()
    relay.raise_meta("a", "first")
    relay.raise_meta("a", "second", "critical")
    relay.resolve_meta("b")
    relay.bind(target)
    assert target.calls == [("raise", "a", "second", "critical"), ("resolve", "b")]
    relay.resolve_meta("a")
    assert target.calls[-1] == ("resolve", "a")
    relay.bind(None)
    relay.raise_meta("c", "while unbound")
    assert len(target.calls) == 3
    relay.bind(target)
    assert target.calls[-1] == ("raise", "c", "while unbound", "warning")


async def test_routes_answer_503_outside_the_lifespan(settings_factory: Callable[..., Settings]) -> None:
    app = create_app(settings_factory())
    assert runtime_of(app) is None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
        resp = await client.get("/api/v1/services")
    assert resp.status_code == 503 and resp.json()["detail"] == "loglens is not running"
