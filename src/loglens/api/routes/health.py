"""Liveness/readiness."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from loglens import __version__
from loglens.api.deps import RuntimeDep
from loglens.api.responses import HealthOut

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "The store is failing writes."}},
)
async def healthz(state: RuntimeDep) -> Any:
    """200 while the WAL accepts writes (a failing loader is reported as degraded); 503 otherwise."""
    store = state.store
    wal = store.wal_status()
    body = {
        "status": "ok" if store.last_error is None else "degraded",
        "version": __version__,
        "uptime_seconds": round(time.time() - state.started_at, 3),
        "queue_depth": store.queue_depth,
        "store_error": store.last_error,
        "wal_lag_bytes": wal.lag_bytes,
        "replay_progress": round(wal.replay_progress, 4),
    }
    return JSONResponse(body, status_code=200 if store.wal_error is None else 503)
