"""FastAPI dependencies: typed parts of the running server, and token checks, as `Annotated` aliases.

The app's lifespan puts one `Runtime` on `app.state.runtime`; each dependency here returns one
concrete part of it, so a route declares exactly what it uses (`store: StoreDep`) and nothing
looks components up by name. A part that is not running answers 503.

Every dependency is `async def` on purpose: FastAPI runs a plain `def` dependency in its thread
pool, and that hop per dependency costs more than the work it does (several per request).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from loglens.alerting import AlertEngine
from loglens.alerting.component import AlertingComponent
from loglens.api import auth
from loglens.api.events import EventHub
from loglens.api.live import StreamSettings
from loglens.config import Settings
from loglens.ingest.pipeline import IngestPipeline
from loglens.notify.service import NotificationService
from loglens.ops.reload import ReloadManager
from loglens.ops.selfmetrics import SelfMetrics
from loglens.runtime import Runtime
from loglens.store import Store


async def get_runtime(request: Request) -> Runtime:
    """The runtime of the app serving this request (503 outside the app's lifespan)."""
    runtime = getattr(request.app.state, "runtime", None)
    if not isinstance(runtime, Runtime):
        raise HTTPException(503, "loglens is not running")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    """The active config (reloads swap it)."""
    return runtime.settings


async def get_store(runtime: RuntimeDep) -> Store:
    """The store."""
    return runtime.store


async def get_pipeline(runtime: RuntimeDep) -> IngestPipeline:
    """The ingest pipeline every protocol commits through."""
    return runtime.pipeline


async def get_hub(runtime: RuntimeDep) -> EventHub:
    """The live-update hub."""
    return runtime.hub


async def get_stream_settings(runtime: RuntimeDep) -> StreamSettings:
    """Timing of the SSE stream."""
    return runtime.stream.settings


async def get_engine(runtime: RuntimeDep) -> AlertEngine:
    """The alert engine; 503 while alerting is not running."""
    engine = runtime.engine
    if engine is None:
        raise HTTPException(503, "alerting is not running")
    return engine


async def get_evaluator(runtime: RuntimeDep) -> AlertingComponent | None:
    """The running alerting stage, None while alerting is not running."""
    return runtime.evaluator


async def get_notifier(runtime: RuntimeDep) -> NotificationService:
    """The notification service."""
    return runtime.notifier


async def get_reload(runtime: RuntimeDep) -> ReloadManager:
    """The config reload manager."""
    return runtime.reload


async def get_selfmetrics(runtime: RuntimeDep) -> SelfMetrics:
    """The Prometheus registry of this app."""
    return runtime.selfmetrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
PipelineDep = Annotated[IngestPipeline, Depends(get_pipeline)]
HubDep = Annotated[EventHub, Depends(get_hub)]
StreamSettingsDep = Annotated[StreamSettings, Depends(get_stream_settings)]
EngineDep = Annotated[AlertEngine, Depends(get_engine)]
EvaluatorDep = Annotated[AlertingComponent | None, Depends(get_evaluator)]
NotifierDep = Annotated[NotificationService, Depends(get_notifier)]
ReloadDep = Annotated[ReloadManager, Depends(get_reload)]
SelfMetricsDep = Annotated[SelfMetrics, Depends(get_selfmetrics)]


async def require_token(request: Request, settings: SettingsDep) -> None:
    """When tokens are set, require one whose scope fits the route (see `loglens.api.auth`)."""
    auth.require(request, settings.server)


async def require_admin(request: Request, settings: SettingsDep) -> None:
    """When tokens are set, admin endpoints need the admin token."""
    auth.require(request, settings.server, "admin")
