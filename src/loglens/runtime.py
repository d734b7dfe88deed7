"""The composition root: the one place that builds every part of a running loglens server.

`Runtime(settings)` constructs each component with its dependencies passed explicitly (no
service locator): the store and ingest pipeline, the notifier, the alert evaluator, the store
watch, the SSE publisher, the syslog, Fluent forward and file-tail listeners, self-metrics and config reload.
Parts that need each other meet through the ports in `loglens.ports`:

- the alert engine hands transitions to the notifier through `NotificationSink`;
- the notifier, the store watch and the reload manager raise meta-alerts through `MetaAlerts`.
  The engine only exists once the store is open, so they get a `MetaAlertRelay` (ports.py)
  that forwards to it while it runs — this relay is what breaks the notify ⇄ alerting cycle.

`start()` starts the components in the declared order of `components` (each a `Component`),
`stop()` stops them in reverse. The FastAPI app (`api/app.py`) holds one runtime per lifespan on
`app.state.runtime`, and routes get typed parts of it through `api/deps.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import anyio.to_thread

from loglens.alerting import AlertEngine
from loglens.alerting.component import AlertingComponent, persistence_alarm
from loglens.alerting.evaluator import Evaluator
from loglens.alerting.scheduler import Scheduler
from loglens.api.events import EventHub
from loglens.api.live import MetricsPublisher, StreamSettings
from loglens.config import Settings
from loglens.detect.pattern_worker import PatternWorker
from loglens.detect.validator import AnomalyValidator
from loglens.ingest.fluent import FluentServer
from loglens.ingest.pipeline import IngestPipeline
from loglens.ingest.syslog import SyslogServer
from loglens.ingest.tail import Tailer, default_checkpoint_path, pipeline_sink
from loglens.notify.service import NotificationService
from loglens.ops.archiver import Archiver
from loglens.ops.malloc import cap_malloc_arenas
from loglens.ops.reload import ReloadHook, ReloadManager
from loglens.ops.selfmetrics import SelfMetrics
from loglens.ops.storewatch import StoreWatch
from loglens.ports import MetaAlertRelay, NotificationSink, Publish, ReloadApply
from loglens.schema import LogSchema
from loglens.store import Store
from loglens.store.alerts import AlertRepository, AlertWriter
from loglens.store.outbox import OutboxRepository

log = logging.getLogger("loglens.runtime")

# The writer, evaluator and validation threads release the GIL in DuckDB/Arrow calls many times
# per commit; with the default 5 ms switch interval each reacquisition can wait behind the busy
# event loop (a convoy that made a small commit take ~30 ms).
_SWITCH_INTERVAL_S = 0.0005
_TAIL_STOP_TIMEOUT_S = 10.0


class Component(Protocol):
    """A long-lived part of the server with an async start and stop."""

    @property
    def name(self) -> str:
        """Short name used in logs."""
        ...

    async def start(self) -> None:
        """Start; the components before it in the runtime's order are running."""
        ...

    async def stop(self) -> None:
        """Stop; the components before it in the runtime's order are still running."""
        ...


# ---- construction helpers also used by the CLI (`ingest`, `tail` into the local store) -----------
def build_schema(settings: Settings) -> LogSchema:
    """The compiled log schema that `settings` name."""
    return LogSchema.from_file(
        settings.schemas.log,
        allowed_lateness_s=settings.ingest.allowed_lateness_seconds,
        max_future_skew_s=settings.ingest.max_future_skew_seconds,
        raw_limit=settings.ingest.dead_letter_raw_limit,
    )


def build_store(settings: Settings) -> Store:
    """The store (not started) that `settings` describe."""
    return Store(
        settings.storage.path,
        max_queue_logs=settings.ingest.max_queue_logs,
        max_batch_logs=settings.ingest.max_batch_logs,
        retention_days=settings.storage.retention_days,
        metrics_retention_days=settings.storage.metrics_retention_days,
        retention_interval_s=settings.storage.retention_interval_seconds,
        commit_window_s=settings.ingest.commit_interval_ms / 1000,
        memory_limit=settings.storage.memory_limit,
        max_idempotency_keys=settings.ingest.idempotency_keys_max,
        wal_dir=settings.storage.wal_dir,
        wal_max_bytes=settings.storage.wal_max_bytes,
        wal_segment_bytes=settings.storage.wal_segment_bytes,
        load_interval_s=settings.storage.load_interval_ms / 1000,
        load_batch_logs=settings.storage.load_batch_logs,
    )


def build_pipeline(settings: Settings) -> IngestPipeline:
    """Schema, store (not started) and the ingest pipeline over them."""
    return IngestPipeline(build_schema(settings), build_store(settings), settings.ingest.max_errors_reported)


@contextlib.asynccontextmanager
async def local_pipeline(settings: Settings) -> AsyncIterator[IngestPipeline]:
    """An ingest pipeline into the local store, open for the `with` block (CLI without a server)."""
    pipeline = build_pipeline(settings)
    await asyncio.to_thread(pipeline.store.start)
    try:
        yield pipeline
    finally:
        await asyncio.to_thread(pipeline.store.close)


# ---- components ---------------------------------------------------------------------------------
class StoreComponent:
    """Opens the DuckDB store (migrations, writer thread) first and closes it last."""

    name = "store"

    def __init__(self, store: Store) -> None:
        self.store = store

    async def start(self) -> None:
        """Open the database and start the writer thread."""
        await asyncio.to_thread(self.store.start)

    async def stop(self) -> None:
        """Commit what is queued, checkpoint and close."""
        await asyncio.to_thread(self.store.close)


class NotifierComponent:
    """The notification service's workers and outbox."""

    name = "notifier"

    def __init__(self, service: NotificationService) -> None:
        self.service = service

    async def start(self) -> None:
        """Start one worker per channel and resume the outbox."""
        await self.service.start()

    async def stop(self) -> None:
        """Let in-flight deliveries finish (bounded) and stop."""
        await self.service.stop()


class AlertingStage:
    """The alerting stage (`loglens.alerting.component`): engine, evaluator thread, alert writer.

    Built at start, not at construction: the engine takes back firing alerts and silences from
    the store, which must be open (the evaluator restores its windows on its own thread).
    """

    name = "alerting"

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        sink: NotificationSink,
        publish: Publish,
        meta: MetaAlertRelay,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sink = sink
        self.publish = publish
        self.meta = meta
        self.clock = clock
        self.component: AlertingComponent | None = None

    @property
    def engine(self) -> AlertEngine | None:
        """The running alert engine (None before start)."""
        return self.component.engine if self.component is not None else None

    def build(self) -> AlertingComponent:
        """Construct the stage (not started); takes back firing alerts and silences (small reads)."""
        settings, clock = self.settings, self.clock
        repo = AlertRepository(self.store.cursor)
        engine = AlertEngine(settings.alerts, clock=clock, sink=self.sink, silence_store=repo, publish=self.publish)
        overflow, error = persistence_alarm(engine)
        writer = AlertWriter(repo, max_rows=settings.alerts.max_queue_rows, on_overflow=overflow, on_error=error)
        engine.persistence = writer
        engine.restore(repo.load_active(limit=settings.alerts.max_series * 5), repo.load_silences())
        validator = AnomalyValidator(settings.schemas.anomaly)
        evaluator = Evaluator(
            settings, engine, clock=clock, validator=validator, persistence=writer, publish=self.publish
        )
        scheduler = Scheduler(evaluator, restore_from=self.store, max_queue_logs=settings.alerts.max_queue_logs)
        if settings.alerts.rules.new_pattern.enabled:
            path = settings.storage.path.with_name(settings.storage.path.name + ".templates.json")
            evaluator.patterns = PatternWorker(settings.alerts, scheduler.on_pattern, state_path=path, clock=clock)
        return AlertingComponent(engine, evaluator, scheduler, repo, writer)

    async def start(self) -> None:
        """Build, listen to commits and run the threads (the evaluator restores on its own thread)."""
        component = await anyio.to_thread.run_sync(self.build)
        self.component = component
        self.meta.bind(component.engine)
        self.store.listeners.append(component.scheduler.on_commit)
        component.start()

    async def stop(self) -> None:
        """Detach from the store and stop the threads (queued alert rows are written)."""
        component, self.component = self.component, None
        self.meta.bind(None)
        if component is None:
            return
        with contextlib.suppress(ValueError):
            self.store.listeners.remove(component.scheduler.on_commit)
        await anyio.to_thread.run_sync(component.stop)

    def prepare_reload(self, new: Settings) -> ReloadApply | None:
        """Reload hook: the evaluator applies new thresholds on its own thread, off the event loop."""
        component = self.component
        if component is None:
            return None
        self.settings = new

        async def apply() -> None:
            await anyio.to_thread.run_sync(component.scheduler.reconfigure, new)

        return apply


class SyslogComponent:
    """The UDP/TCP syslog listeners (when `protocols.syslog.enabled`)."""

    name = "syslog"

    def __init__(self, server: SyslogServer) -> None:
        self.server = server

    async def start(self) -> None:
        """Bind the ports."""
        await self.server.start()

    async def stop(self) -> None:
        """Close the listeners after their last flush."""
        await self.server.stop()


class TailComponent:
    """The file tailer of `ingest.files`, running as a task on the event loop."""

    name = "tail"

    def __init__(self, tailer: Tailer) -> None:
        self.tailer = tailer
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start following the files."""
        self._task = asyncio.create_task(self.tailer.run(), name="loglens-tail")

    async def stop(self) -> None:
        """Stop after the current batch (its checkpoint is saved only once committed)."""
        task, self._task = self._task, None
        if task is None:
            return
        self.tailer.stop()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, _TAIL_STOP_TIMEOUT_S)


class Runtime:
    """Every part of one running server, built from `settings`; `start()`/`stop()` run them."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        # before any of the server's threads exist: each would otherwise get its own arena
        cap_malloc_arenas()
        self.settings = settings
        self.started_at = clock()
        self.schema = build_schema(settings)
        self.store = build_store(settings)
        self.pipeline = IngestPipeline(self.schema, self.store, settings.ingest.max_errors_reported)
        self.hub = EventHub()
        self.meta = MetaAlertRelay()
        self.notifier = NotificationService(settings, OutboxRepository(self.store.cursor), meta=self.meta)
        self.alerting = AlertingStage(
            settings, self.store, sink=self.notifier, publish=self.hub.publish, meta=self.meta, clock=clock
        )
        self.storewatch = StoreWatch(self.store, self.meta)
        self.stream = MetricsPublisher(self.hub, StreamSettings(), store=self.store)
        self.syslog: SyslogServer | None = None
        if settings.protocols.syslog.enabled:
            self.syslog = SyslogServer(self.pipeline, settings.protocols.mapping.syslog, settings.protocols.syslog)
        self.fluent: FluentServer | None = None
        if settings.protocols.fluent.enabled:  # the mapping is read per message, so reloads apply
            self.fluent = FluentServer(
                self.pipeline, lambda: self.settings.protocols.mapping.fluent, settings.protocols.fluent
            )
        self.tailer: Tailer | None = None
        if settings.ingest.files:
            tail_cfg = settings.protocols.tail
            self.tailer = Tailer(
                list(settings.ingest.files),
                pipeline_sink(self.pipeline),
                settings.protocols.mapping.tail,
                tail_cfg,
                default_checkpoint_path(tail_cfg, settings.storage.path),
            )
        self.archiver: Archiver | None = None
        if settings.archive.enabled:  # hourly Parquet of closed hours (store/archive.py)
            self.archiver = Archiver(self.store, settings.archive, settings.storage.retention_days)
        self.selfmetrics = SelfMetrics(self)
        # one hook per component that takes part in a reload (each registered exactly once)
        hooks: list[ReloadHook] = [self.notifier.prepare_reload, self.alerting.prepare_reload]
        self.reload = ReloadManager(lambda: self.settings, self.apply_settings, hooks, self.meta)
        # Start order: the store first (everything reads or writes it), the notifier before
        # alerting (the engine's transitions go to it), the listeners that take logs after the
        # parts that react to them; reload last. `stop()` runs this list backwards.
        self.components: list[Component] = [
            StoreComponent(self.store),
            NotifierComponent(self.notifier),
            self.alerting,
            self.storewatch,
            self.stream,
            *([SyslogComponent(self.syslog)] if self.syslog is not None else []),
            *([self.fluent] if self.fluent is not None else []),
            *([TailComponent(self.tailer)] if self.tailer is not None else []),
            *([self.archiver] if self.archiver is not None else []),
            self.selfmetrics,
            self.reload,
        ]
        self._started: list[Component] = []

    # ---- views used by routes, status and /metrics --------------------------------------------
    @property
    def engine(self) -> AlertEngine | None:
        """The running alert engine."""
        return self.alerting.engine

    @property
    def evaluator(self) -> AlertingComponent | None:
        """The running alerting stage (rule stats, pattern miner, series cap, alert repository)."""
        return self.alerting.component

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every component in order; on a failure, stop the ones started and re-raise."""
        self.hub.bind(asyncio.get_running_loop())
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        try:
            for component in self.components:
                await component.start()
                self._started.append(component)
        except BaseException:
            await self.stop()
            raise
        # Everything built so far lives as long as the server: keep it out of the cyclic GC's
        # full collections, whose pause (all threads, event loop included) grows with the heap.
        gc.freeze()

    async def stop(self) -> None:
        """Stop the started components in reverse order; one failing does not keep others running."""
        while self._started:
            component = self._started.pop()
            try:
                await component.stop()
            except Exception:
                log.exception("component failed to stop", extra={"component": component.name})
        # Back into the collector what start() froze: cycles left in the permanent generation
        # are never freed, and at exit DuckDB's bindings would report them as leaks on stderr.
        gc.unfreeze()

    # ---- config reload ------------------------------------------------------------------------
    def apply_settings(self, new: Settings, schema: LogSchema) -> None:
        """Swap in a validated config: the shared settings and schema, and the core's own knobs.

        In-flight requests keep the schema reference they started with.
        """
        self.settings = new
        self.schema = schema
        self.pipeline.schema = schema
        self.pipeline.max_errors = new.ingest.max_errors_reported
        store = self.store
        store.retention_days = new.storage.retention_days
        store.metrics_retention_days = new.storage.metrics_retention_days
        store.retention_interval_s = new.storage.retention_interval_seconds
        logging.getLogger("loglens").setLevel(new.logging.level)
