"""Operator endpoints: /metrics, status, active config, reload, dead-letter detail and replay."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import anyio.to_thread
import duckdb
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from loglens.api.deps import PipelineDep, ReloadDep, RuntimeDep, SelfMetricsDep, SettingsDep, StoreDep, require_admin
from loglens.api.responses import ConfigOut, DeadLetterOut, ReloadOut, ReplayOut, StatusOut
from loglens.config import mask_secrets
from loglens.ingest import replay
from loglens.notify import registry
from loglens.ops import status
from loglens.ops.selfmetrics import CONTENT_TYPE
from loglens.timeparse import Instant

router = APIRouter(tags=["operations"])
Admin = [Depends(require_admin)]


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(registry: SelfMetricsDep) -> Response:
    """loglens's own metrics in Prometheus text format."""
    body = await anyio.to_thread.run_sync(registry.render)
    return Response(body, media_type=CONTENT_TYPE)


@router.get("/api/v1/status", response_model=StatusOut)
async def get_status(runtime: RuntimeDep) -> dict[str, Any]:
    """Version, uptime, config and store paths, rows per table, retention, rates, alerts, notifiers."""
    return await anyio.to_thread.run_sync(status.server_status, runtime)


@router.get("/api/v1/config", response_model=ConfigOut)
async def get_config(settings: SettingsDep) -> dict[str, Any]:
    """The active config (after reloads) with every secret-looking value masked."""
    path = settings.config_path
    return {"config_path": str(path) if path else None, "config": mask_secrets(settings, registry.secret_fields)}


@router.post(
    "/api/v1/admin/reload",
    dependencies=Admin,
    response_model=ReloadOut,
    responses={400: {"model": ReloadOut, "description": "The config was rejected; `issues` name file:line."}},
)
async def reload_config(manager: ReloadDep) -> JSONResponse:
    """Re-read the config file; 200 when applied, 400 with `file:line` issues when rejected."""
    result = await manager.reload("api")
    return JSONResponse(result.to_json(), status_code=200 if result.ok else 400)


@router.get("/api/v1/dead-letter/{dead_id}", response_model=DeadLetterOut)
async def get_dead_letter(store: StoreDep, dead_id: int) -> dict[str, Any]:
    """One rejected record with its reason and stored raw text."""
    row = await anyio.to_thread.run_sync(replay.get, store, dead_id)
    if row is None:
        raise HTTPException(404, f"no dead-letter record {dead_id}")
    return row


class ReplayRequest(BaseModel):
    """Which dead letters to re-validate; all filters are optional and combine with AND."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=1000, description="Substring of the rejection reason.")
    since: Instant | None = Field(None, description="Only records received at/after this time.")
    ids: list[int] | None = Field(None, max_length=100_000, description="Only these dead-letter ids.")
    limit: Annotated[int, Field(ge=1, le=100_000)] = replay.DEFAULT_LIMIT


def _replay_lock(request: Request) -> asyncio.Lock:
    """One replay at a time per app: concurrent claims of the same records would conflict."""
    lock: asyncio.Lock | None = getattr(request.app.state, "replay_lock", None)
    if lock is None:
        lock = request.app.state.replay_lock = asyncio.Lock()
    return lock


@router.post(
    "/api/v1/dead-letter/replay",
    dependencies=Admin,
    response_model=ReplayOut,
    responses={409: {"description": "Another replay is running; try again when it has finished"}},
)
async def replay_dead_letters(request: Request, pipeline: PipelineDep, body: ReplayRequest | None = None) -> Any:
    """Re-validate matching records with the current schema; ingest the valid ones (each only once)."""
    req = body or ReplayRequest.model_validate({})
    lock = _replay_lock(request)
    if lock.locked():
        return _conflict()
    async with lock:
        try:
            result = await anyio.to_thread.run_sync(
                lambda: replay.replay(pipeline, reason=req.reason, since=req.since, ids=req.ids, limit=req.limit)
            )
        except duckdb.TransactionException:  # e.g. a replay from another process on the same records
            return _conflict()
    return result.to_json()


def _conflict() -> JSONResponse:
    return JSONResponse(
        {"detail": "another dead-letter replay is running; try again when it has finished"},
        status_code=409,
        headers={"Retry-After": "1"},
    )
