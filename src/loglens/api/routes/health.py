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
    """200 when the store accepts writes; 503 with the last store error otherwise."""
    body = {
        "status": "ok" if state.store.last_error is None else "degraded",
        "version": __version__,
        "uptime_seconds": round(time.time() - state.started_at, 3),
        "queue_depth": state.store.queue_depth,
        "store_error": state.store.last_error,
    }
    return JSONResponse(body, status_code=200 if state.store.last_error is None else 503)
