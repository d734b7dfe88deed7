"""`create_app(settings)`: the FastAPI application, its lifespan and the error → HTTP mapping.

The lifespan owns every long-lived part (store writer, and the components other stages add
through `AppState.extras`); nothing starts at import time, so each test builds its own app.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from loglens import __version__
from loglens.api.deps import AppState, require_token
from loglens.api.events import EventHub
from loglens.api.routes import health, ingest, query
from loglens.api.security import install_guards
from loglens.config import Settings
from loglens.errors import (
    Backpressure,
    ConfigError,
    IngestError,
    LoglensError,
    PayloadTooLarge,
    StorageError,
)
from loglens.ingest.pipeline import build_pipeline

# Components started after the store and stopped before it: (name, start, stop) callables that
# receive the AppState. Stages register here instead of editing the lifespan.
Component = tuple[str, Callable[[AppState], Awaitable[None]], Callable[[AppState], Awaitable[None]]]


_SWITCH_INTERVAL_S = 0.0005


def build_state(settings: Settings) -> AppState:
    """Create (not start) the stages for `settings`."""
    pipeline = build_pipeline(settings)
    return AppState(settings, pipeline.store, pipeline.schema, pipeline, EventHub(), time.time())


def _error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    """Map the loglens exception tree to HTTP codes — the one place this happens."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, PayloadTooLarge):
            return _error_response(413, str(exc))
        if isinstance(exc, IngestError):
            return _error_response(400, str(exc))
        if isinstance(exc, Backpressure):
            return _error_response(429, str(exc), {"Retry-After": str(exc.retry_after)})
        if isinstance(exc, StorageError):
            return _error_response(503, str(exc), {"Retry-After": str(exc.retry_after)})
        if isinstance(exc, ConfigError):
            return _error_response(400, str(exc))
        return _error_response(500, str(exc))

    app.add_exception_handler(LoglensError, handle)


def create_app(settings: Settings, components: list[Component] | None = None) -> FastAPI:
    """Build a loglens app for `settings`; stages start in the lifespan, not here."""
    extra_components = list(components or [])

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = build_state(settings)
        state.hub.bind(asyncio.get_running_loop())
        # The writer, evaluator and validation threads release the GIL in DuckDB/Arrow calls
        # many times per commit; with the default 5 ms switch interval each reacquisition can
        # wait behind the busy event loop (a convoy that made a small commit take ~30 ms).
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        await asyncio.to_thread(state.store.start)
        app.state.loglens = state
        started: list[Component] = []
        try:
            for comp in [*default_components(), *extra_components]:
                await comp[1](state)
                started.append(comp)
            yield
        finally:
            for comp in reversed(started):
                with contextlib.suppress(Exception):
                    await comp[2](state)
            await asyncio.to_thread(state.store.close)

    app = FastAPI(
        title="loglens",
        version=__version__,
        description="High-throughput log analytics and monitoring engine.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    install_guards(app, settings)  # Host / cross-site checks and the request-body budget
    app.include_router(health.router)
    protected = [Depends(require_token)]
    app.include_router(ingest.router, dependencies=protected)
    app.include_router(query.router, dependencies=protected)
    for router, needs_token in optional_routers():
        app.include_router(router, dependencies=protected if needs_token else None)
    return app


def default_components() -> list[Component]:
    """Components every app runs; stages append theirs here (alerting, notifier workers, ...)."""
    from loglens import evaluator, reload, selfmetrics, storewatch
    from loglens.api.routes import protocols, stream
    from loglens.notify import service as notify_service

    # The notifier starts first (and stops last) so alerting finds state.extras["notifier"].
    return [
        ("notifier", notify_service.start_component, notify_service.stop_component),
        ("alerting", evaluator.start_component, evaluator.stop_component),
        ("storewatch", storewatch.start_component, storewatch.stop_component),
        ("stream", stream.start_stream, stream.stop_stream),
        ("protocols", protocols.start_protocols, protocols.stop_protocols),
        ("selfmetrics", selfmetrics.start_component, selfmetrics.stop_component),
        ("reload", reload.start_component, reload.stop_component),
    ]


def optional_routers() -> list[tuple[Any, bool]]:
    """Routers contributed by other stages: (router, requires_api_token)."""
    from loglens.api.routes import alerts, dashboard, login, notifications, ops, protocols, stream

    return [
        (alerts.router, True),
        (stream.router, True),
        (dashboard.build_router(), False),
        (login.router, False),  # the dashboard's sign-in form (sets the session cookie)
        (dashboard.config_router, True),
        (notifications.router, True),
        (protocols.router, True),
        (ops.router, True),
    ]
