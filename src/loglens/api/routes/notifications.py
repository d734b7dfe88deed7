"""Notification endpoints: the outbox (pending / delivered / dead) and channel health."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Query

from loglens.api.deps import NotifierDep, require_admin
from loglens.api.responses import NotificationsOut, NotifiersOut, RequeuedOut

router = APIRouter(prefix="/api/v1", tags=["notifications"])


@router.get("/notifications", response_model=NotificationsOut)
async def notifications(
    service: NotifierDep,
    state_filter: Annotated[
        Literal["pending", "delivered", "dead", "all"], Query(alias="state", description="Outbox state")
    ] = "all",
    channel: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Outbox rows, newest first: each with its channel, state, attempts, last error and the alert."""
    rows = await anyio.to_thread.run_sync(service.notifications, state_filter, channel, limit)
    return {"notifications": rows}


@router.post(
    "/notifications/{notification_id}/retry", dependencies=[Depends(require_admin)], response_model=RequeuedOut
)
async def retry_notification(service: NotifierDep, notification_id: str) -> dict[str, Any]:
    """Move a dead notification back to pending with a fresh attempt budget."""
    if not await anyio.to_thread.run_sync(service.requeue, notification_id):
        raise HTTPException(404, f"no dead notification {notification_id!r}")
    return {"id": notification_id, "state": "pending"}


@router.get("/notifiers", response_model=NotifiersOut)
async def notifiers(service: NotifierDep) -> dict[str, Any]:
    """Configured channels with routing and delivery health; plugin settings (secrets) are never shown."""
    return {"notifiers": await anyio.to_thread.run_sync(service.health)}
