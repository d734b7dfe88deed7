"""The composition root: the one place that builds every part of a running loglens server.

`Runtime(settings)` constructs each component with its dependencies passed explicitly (no
service locator): the store and ingest pipeline, the notifier, the alert evaluator, the store
watch, the SSE publisher, the syslog and file-tail listeners, self-metrics and config reload.
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
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import anyio.to_thread

from loglens.alerting import AlertDB, AlertEngine
from loglens.api.events import EventHub
from loglens.api.live import MetricsPublisher, StreamSettings
from loglens.config import Settings
from loglens.evaluator import AnomalyValidator, Evaluator, PatternWorker
from loglens.ingest.pipeline import IngestPipeline
from loglens.ingest.syslog import SyslogServer
from loglens.ingest.tail import Tailer, default_checkpoint_path, pipeline_sink
from loglens.notify.service import NotificationService
from loglens.ports import MetaAlertRelay, NotificationSink, Publish, ReloadApply
from loglens.reload import ReloadHook, ReloadManager
from loglens.schema import LogSchema
from loglens.selfmetrics import SelfMetrics
from loglens.store import Store
from loglens.storewatch import StoreWatch

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
    """The alert engine and the evaluator thread, fed by store commits.

    Built at start, not at construction: the engine restores firing alerts and silences, and
    the evaluator its windows, from the store, which must be open.
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
        self.evaluator: Evaluator | None = None

    @property
    def engine(self) -> AlertEngine | None:
        """The running alert engine (None before start)."""
        return self.evaluator.engine if self.evaluator is not None else None

    def build(self) -> Evaluator:
        """Create the engine and evaluator and restore their state from the store (blocking I/O)."""
        settings = self.settings
        # the notifier service groups bursts per channel (alerts.group_wait_seconds) in its
        # outbox; holding them here as well would make people wait twice
        engine = AlertEngine(
            settings.alerts.model_copy(update={"group_wait_seconds": 0.0}),
            clock=self.clock,
            db=AlertDB(self.store.cursor()),
            notify=self.sink.submit,
            publish=self.publish,
        )
        engine.restore()
        validator = AnomalyValidator(settings.schemas.anomaly)
        evaluator = Evaluator(settings, engine, clock=self.clock, validator=validator, publish=self.publish)
        if settings.alerts.rules.new_pattern.enabled:
            path = settings.storage.path.with_name(settings.storage.path.name + ".templates.json")
            evaluator.patterns = PatternWorker(settings.alerts, evaluator.on_pattern, state_path=path, clock=self.clock)
        evaluator.restore(self.store)
        return evaluator

    async def start(self) -> None:
        """Build, restore, listen to commits and run the evaluator thread."""
        evaluator = await anyio.to_thread.run_sync(self.build)
        self.evaluator = evaluator
        self.meta.bind(evaluator.engine)
        self.store.listeners.append(evaluator.on_commit)
        evaluator.start()

    async def stop(self) -> None:
        """Detach from the store and stop the threads."""
        evaluator, self.evaluator = self.evaluator, None
        self.meta.bind(None)
        if evaluator is None:
            return
        with contextlib.suppress(ValueError):
            self.store.listeners.remove(evaluator.on_commit)
        await anyio.to_thread.run_sync(evaluator.stop)
        if evaluator.engine.db is not None:
            evaluator.engine.db.close()

    def prepare_reload(self, new: Settings) -> ReloadApply | None:
        """Reload hook: the evaluator applies new thresholds on its own thread, off the event loop."""
        evaluator = self.evaluator
        if evaluator is None:
            return None

        async def apply() -> None:
            await anyio.to_thread.run_sync(evaluator.reconfigure, new)

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
        self.settings = settings
        self.started_at = clock()
        self.schema = build_schema(settings)
        self.store = build_store(settings)
        self.pipeline = IngestPipeline(self.schema, self.store, settings.ingest.max_errors_reported)
        self.hub = EventHub()
        self.meta = MetaAlertRelay()
        self.notifier = NotificationService(settings, self.store, meta=self.meta)
        self.alerting = AlertingStage(
            settings, self.store, sink=self.notifier, publish=self.hub.publish, meta=self.meta, clock=clock
        )
        self.storewatch = StoreWatch(self.store, self.meta)
        self.stream = MetricsPublisher(self.hub, StreamSettings(), store=self.store)
        self.syslog: SyslogServer | None = None
        if settings.protocols.syslog.enabled:
            self.syslog = SyslogServer(self.pipeline, settings.protocols.mapping.syslog, settings.protocols.syslog)
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
            *([TailComponent(self.tailer)] if self.tailer is not None else []),
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
    def evaluator(self) -> Evaluator | None:
        """The running evaluator."""
        return self.alerting.evaluator

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

    async def stop(self) -> None:
        """Stop the started components in reverse order; one failing does not keep others running."""
        while self._started:
            component = self._started.pop()
            try:
                await component.stop()
            except Exception:
                log.exception("component failed to stop", extra={"component": component.name})

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
