"""loglens's own metrics in Prometheus text format (`GET /metrics`), one registry per app.

Most values are read from live state at scrape time by `LoglensCollector` (queue depth, store
size and rows, firing alerts, notifier counters, SSE clients, rule timings), so no other module
has to carry metric calls. Only what cannot be read afterwards is counted as it happens:
per-request ingest outcomes (an `IngestPipeline` observer, on the event loop) and the commit
latency histogram (a store listener, in the writer thread: one `observe()`, nothing more).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from loglens import __version__
from loglens.models import CommitEvent, Rejection
from loglens.store import Store

if TYPE_CHECKING:  # types only: the runtime builds these parts and passes itself as `Observed`
    from loglens.alerting import AlertEngine
    from loglens.alerting.component import AlertingComponent
    from loglens.config import Settings
    from loglens.ingest.pipeline import IngestPipeline
    from loglens.notify.service import NotificationService
    from loglens.ops.reload import ReloadManager

log = logging.getLogger("loglens.ops.selfmetrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STORE_TABLES = ("logs", "dead_letter", "metrics_minute", "latency_sketch", "user_minute", "services", "ingest_keys")
OPTIONAL_TABLES = ("alerts", "anomalies", "silences", "notification_outbox")
_COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def reason_class(reason: str) -> str:
    """A bounded label for a rejection reason (the full reason stays in the dead-letter store)."""
    text = reason.lower()
    if "json" in text and ("malformed" in text or "invalid" in text or "decode" in text):
        return "malformed"
    if text.startswith("missing required field"):
        return "missing_field"
    if text.startswith("timestamp:"):
        return "timestamp"
    if "exceeds" in text or "too large" in text:
        return "too_large"
    if text.startswith(("syslog:", "fluent:", "entry must be", "otlp", "loki", "es_bulk")):
        return "protocol"
    if text.startswith("log: must be"):
        return "not_an_object"
    if ": " in text:
        return "invalid_field"
    return "other"


class Subscribers(Protocol):
    """The live-update hub, as /metrics sees it."""

    @property
    def subscriber_count(self) -> int:
        """Connected SSE clients."""
        ...


class Observed(Protocol):
    """The running parts /metrics and `GET /api/v1/status` read (the runtime provides them)."""

    @property
    def settings(self) -> Settings:
        """The running config."""
        ...

    @property
    def started_at(self) -> float:
        """Epoch seconds the server started."""
        ...

    @property
    def hub(self) -> Subscribers:
        """The live-update hub (SSE subscribers)."""
        ...

    @property
    def pipeline(self) -> IngestPipeline:
        """The ingest pipeline (draining flag, in-flight requests)."""
        ...

    @property
    def store(self) -> Store:
        """The store."""
        ...

    @property
    def engine(self) -> AlertEngine | None:
        """The alert engine, while alerting runs."""
        ...

    @property
    def evaluator(self) -> AlertingComponent | None:
        """The rule evaluator, while alerting runs."""
        ...

    @property
    def notifier(self) -> NotificationService:
        """The notification service."""
        ...

    @property
    def reload(self) -> ReloadManager:
        """The config reload manager."""
        ...


class SelfMetrics:
    """The registry of one app plus the few event-driven instruments."""

    name = "selfmetrics"

    def __init__(self, state: Observed) -> None:
        self.state = state
        self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter(
            "loglens_logs_received", "Log records received, by source.", ["source"], registry=self.registry
        )
        self.accepted = Counter(
            "loglens_logs_accepted", "Log records stored, by source.", ["source"], registry=self.registry
        )
        # source -> (received, accepted) children; sources are the protocol names, a short list
        self._by_source: dict[str, tuple[Any, Any]] = {}
        self.rejected = Counter(
            "loglens_logs_rejected",
            "Log records sent to dead-letter, by source and reason class.",
            ["source", "reason"],
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "loglens_store_commit_seconds",
            "Duration of one group commit into the write-ahead log (encode, append, fsync).",
            buckets=_COMMIT_BUCKETS,
            registry=self.registry,
        )
        self._collector = LoglensCollector(state)

    async def start(self) -> None:
        """Runtime component: read live state at scrape time and hook the two event-driven instruments.

        The collector is registered here, not at construction: registering describes it by
        collecting once, which reads the store (open by now) and every other part (built by now).
        """
        self.registry.register(self._collector)
        from loglens.ingest.inputs import sources

        for source in sources(self.state):  # every running input's counters exist from the start, at 0
            self.received.labels(source)
            self.accepted.labels(source)
        self.state.pipeline.observers.append(self.on_ingest)
        self.state.store.listeners.append(self.on_commit)

    async def stop(self) -> None:
        """Runtime component: unhook from the pipeline and the store."""
        self.registry.unregister(self._collector)
        if self.on_ingest in self.state.pipeline.observers:
            self.state.pipeline.observers.remove(self.on_ingest)
        if self.on_commit in self.state.store.listeners:
            self.state.store.listeners.remove(self.on_commit)

    def on_ingest(self, source: str, accepted: int, rejections: list[Rejection]) -> None:
        """IngestPipeline observer: count a committed request."""
        counters = self._by_source.get(source)
        if counters is None:  # labels() costs a lock and a tuple lookup per call: once per source
            counters = self._by_source[source] = (self.received.labels(source), self.accepted.labels(source))
        counters[0].inc(accepted + len(rejections))
        if accepted:
            counters[1].inc(accepted)
        for r in rejections:
            self.rejected.labels(r.source or source, reason_class(r.reason)).inc()

    def on_commit(self, event: CommitEvent) -> None:
        """Store listener (dispatcher thread): one observation per WAL group commit the event carries."""
        for seconds in event.commit_seconds:
            self.commit_seconds.observe(seconds)

    def render(self) -> bytes:
        """The exposition text of every metric (reads the store: call it off the event loop).

        Counts every batch acknowledged before the scrape: the listeners get it first.
        """
        self.state.store.wait_delivered()
        return generate_latest(self.registry)


class LoglensCollector(Collector):
    """Reads the running app's state at scrape time."""

    def __init__(self, state: Observed) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        """Yield every live-state metric; a part that fails is skipped and logged, never the whole scrape."""
        for part in (self._process, self._store, self._alerting, self._notifier, self._reload, self._inputs):
            try:
                yield from part()
            except Exception:  # one broken part must not hide the others
                log.exception("metrics collection failed", extra={"part": part.__name__})

    def _process(self) -> Iterator[Metric]:
        state = self.state
        info = GaugeMetricFamily("loglens_build_info", "Version of the running loglens.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "loglens_uptime_seconds", "Seconds since the server started.", value=time.time() - state.started_at
        )
        yield GaugeMetricFamily(
            "loglens_sse_clients", "Connected live-stream (SSE) clients.", value=state.hub.subscriber_count
        )
        yield GaugeMetricFamily(
            "loglens_draining", "1 while the server drains before exiting.", value=1 if state.pipeline.draining else 0
        )

    def _store(self) -> Iterator[Metric]:
        store = self.state.store
        yield GaugeMetricFamily(
            "loglens_ingest_queue_depth", "Logs submitted and not yet committed.", value=store.queue_depth
        )
        yield CounterMetricFamily("loglens_store_commits", "Group commits since start.", value=store.commits)
        yield GaugeMetricFamily(
            "loglens_store_size_bytes", "Size of the DuckDB file and its WAL.", value=store.size_bytes()
        )
        yield GaugeMetricFamily(
            "loglens_store_healthy", "0 when the last WAL write or load failed.", value=0 if store.last_error else 1
        )
        wal = store.wal_status()
        yield GaugeMetricFamily("loglens_wal_bytes", "Bytes of write-ahead log segments on disk.", value=wal.wal_bytes)
        yield GaugeMetricFamily(
            "loglens_wal_lag_bytes", "WAL bytes acknowledged but not yet loaded into DuckDB.", value=wal.lag_bytes
        )
        yield GaugeMetricFamily(
            "loglens_loader_lag_seconds",
            "Age of the oldest acknowledged batch not yet loaded into DuckDB (0 when caught up).",
            value=wal.lag_seconds,
        )
        yield GaugeMetricFamily(
            "loglens_wal_replay_progress", "Share (0-1) of the start-up WAL backlog loaded.", value=wal.replay_progress
        )
        yield GaugeMetricFamily(
            "loglens_wal_replay_remaining_bytes",
            "Bytes of the start-up WAL backlog not yet loaded.",
            value=wal.replay_total_bytes - wal.replay_done_bytes,
        )
        yield CounterMetricFamily("loglens_loader_loads", "DuckDB load transactions since start.", value=wal.loads)
        yield CounterMetricFamily(
            "loglens_loader_failures", "Failed load transactions (retried).", value=wal.load_failures
        )
        yield GaugeMetricFamily(
            "loglens_loader_drain_bytes_per_second", "Measured loader throughput.", value=wal.drain_bytes_per_s
        )
        rows = GaugeMetricFamily("loglens_store_rows", "Rows per table.", labels=["table"])
        for table, n in table_rows(store).items():
            rows.add_metric([table], n)
        yield rows

    def _alerting(self) -> Iterator[Metric]:
        engine = self.state.engine
        evaluator = self.state.evaluator
        firing = GaugeMetricFamily(
            "loglens_alerts_firing", "Firing alerts by rule and severity.", labels=["rule", "severity"]
        )
        pending = GaugeMetricFamily("loglens_alerts_pending", "Pending alerts by rule.", labels=["rule"])
        if engine is not None:
            counts: dict[tuple[str, str], int] = {}
            waiting: dict[str, int] = {}
            for a in engine.active():
                if a.state == "firing":
                    counts[(a.rule, a.severity)] = counts.get((a.rule, a.severity), 0) + 1
                else:
                    waiting[a.rule] = waiting.get(a.rule, 0) + 1
            for (rule, severity), n in sorted(counts.items()):
                firing.add_metric([rule, severity], n)
            for rule, n in sorted(waiting.items()):
                pending.add_metric([rule], n)
            yield CounterMetricFamily(
                "loglens_alert_notifications", "Alert transitions handed to notifiers.", value=engine.notifications
            )
        yield firing
        yield pending
        if evaluator is None:
            return
        last = GaugeMetricFamily(
            "loglens_rule_evaluation_seconds", "Duration of the last evaluation of a rule.", labels=["rule"]
        )
        for name, st in sorted(evaluator.stats.items()):
            if st.last_duration_ms is not None:
                last.add_metric([name], st.last_duration_ms / 1000.0)
        yield last
        yield CounterMetricFamily(
            "loglens_rule_evaluations", "Evaluation passes over the rules.", value=evaluator.evaluations
        )
        patterns = evaluator.patterns
        if patterns is not None:
            yield CounterMetricFamily(
                "loglens_pattern_logs_dropped", "Logs the template miner skipped (behind).", value=patterns.dropped
            )

    def _notifier(self) -> Iterator[Metric]:
        notifier = self.state.notifier
        sent = CounterMetricFamily(
            "loglens_notifications_sent", "Successful deliveries by channel.", labels=["channel"]
        )
        failed = CounterMetricFamily(
            "loglens_notifications_failed", "Failed delivery attempts by channel.", labels=["channel"]
        )
        retrying = GaugeMetricFamily(
            "loglens_notifications_retrying",
            "Notifications waiting in the outbox (pending or retrying).",
            labels=["channel"],
        )
        dead = GaugeMetricFamily(
            "loglens_notifications_dead", "Notifications that gave up, by channel.", labels=["channel"]
        )
        healthy = GaugeMetricFamily("loglens_notifier_healthy", "0 while a channel keeps failing.", labels=["channel"])
        for ch in notifier.health():
            name = ch["name"]
            sent.add_metric([name], ch["attempts"] - ch["failures"])
            failed.add_metric([name], ch["failures"])
            retrying.add_metric([name], ch["pending"])
            dead.add_metric([name], ch["dead"])
            healthy.add_metric([name], 0 if ch["status"] == "failing" else 1)
        yield from (sent, failed, retrying, dead, healthy)

    def _inputs(self) -> Iterator[Metric]:
        from loglens.ingest import inputs

        yield from inputs.collect(self.state)

    def _reload(self) -> Iterator[Metric]:
        manager = self.state.reload
        reloads = CounterMetricFamily("loglens_config_reloads", "Config reloads by result.", labels=["result"])
        reloads.add_metric(["success"], manager.successes)
        reloads.add_metric(["failure"], manager.failures)
        yield reloads
        yield GaugeMetricFamily(
            "loglens_config_last_reload_successful",
            "1 when the last reload was applied.",
            value=1 if manager.last_ok else 0,
        )


def table_rows(store: Store) -> dict[str, int]:
    """Exact row count of every loglens table present in the store."""
    present = {
        r[0] for r in store.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")
    }
    tables = [t for t in (*STORE_TABLES, *OPTIONAL_TABLES) if t in present]
    if not tables:
        return {}
    sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in tables)  # names from our own list
    return {name: int(n) for name, n in store.query(sql)}
