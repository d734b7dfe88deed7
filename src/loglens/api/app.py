"""`create_app(settings)`: the FastAPI application, its lifespan and the error → HTTP mapping.

The lifespan builds one `loglens.runtime.Runtime` (every long-lived part, wired there), starts
it, publishes it on `app.state.runtime` for the route dependencies (`api/deps.py`) and stops
it on shutdown; nothing starts at import time, so each test builds its own app.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from loglens import __version__
from loglens.api import fast_ingest
from loglens.api.deps import require_token
from loglens.api.errors import install_error_handlers
from loglens.api.routes import (
    alerts,
    dashboard,
    docs,
    health,
    ingest,
    login,
    notifications,
    ops,
    protocols,
    query,
    stream,
)
from loglens.api.security import install_guards
from loglens.config import Settings
from loglens.runtime import Runtime

RuntimeFactory = Callable[[Settings], Runtime]


def runtime_of(app: FastAPI) -> Runtime | None:
    """The running runtime of `app` (None outside its lifespan)."""
    runtime = getattr(app.state, "runtime", None)
    return runtime if isinstance(runtime, Runtime) else None


def create_app(settings: Settings, runtime_factory: RuntimeFactory = Runtime, ingest_fast_path: bool = True) -> FastAPI:
    """Build a loglens app for `settings`; its runtime is built and started in the lifespan.

    `ingest_fast_path=False` leaves `POST /api/v1/logs` to the FastAPI route alone (the fast
    path must answer exactly as the route does; a test compares the two).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = runtime_factory(settings)
        await runtime.start()
        app.state.runtime = runtime
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="loglens",
        version=__version__,
        description="High-throughput log analytics and monitoring engine.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from routes.docs, with assets served locally (no CDN)
        redoc_url=None,
        # FastAPI's built-in OpenTelemetry hooks check for providers on every request; loglens
        # reports itself on /metrics and `loglens status`, so they are off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    if settings.server.cors_origins:
        # Browsers on these origins may call the API; the token still applies (sent as a header,
        # so no cookies and no credentials mode are needed).
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.server.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Content-Encoding", "Idempotency-Key", "X-API-Token"],
        )
    install_error_handlers(app)
    install_guards(app, settings)  # Host / cross-site checks, token scopes, request-body budget
    protected = [Depends(require_token)]
    for router, needs_token in routers():
        app.include_router(router, dependencies=protected if needs_token else None)
    if ingest_fast_path:
        fast_ingest.install(app)  # in front of the whole stack; it applies the guards itself
    return app


def routers() -> list[tuple[APIRouter, bool]]:
    """Every router of the API: (router, requires_api_token)."""
    return [
        (health.router, False),
        (docs.build_router(), False),
        (ingest.router, True),
        (query.router, True),
        (alerts.router, True),
        (stream.router, True),
        (dashboard.build_router(), False),
        (login.router, False),  # the dashboard's sign-in form (sets the session cookie)
        (dashboard.config_router, True),
        (notifications.router, True),
        (protocols.router, True),
        (ops.router, True),
    ]
