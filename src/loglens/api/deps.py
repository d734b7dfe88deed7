"""FastAPI dependencies: the running app's state and token checks, as `Annotated` aliases."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from loglens.api import auth
from loglens.api.events import EventHub
from loglens.config import Settings
from loglens.ingest.pipeline import IngestPipeline
from loglens.schema import LogSchema
from loglens.store import Store


@dataclass
class AppState:
    """Everything a request may need; owned by the app lifespan, one per app (no globals)."""

    settings: Settings
    store: Store
    schema: LogSchema
    pipeline: IngestPipeline
    hub: EventHub
    started_at: float
    extras: dict[str, Any] = field(default_factory=dict)


def component(state: AppState, name: str, what: str) -> Any:
    """The running component `state.extras[name]`, or 503 naming `what` when it is not running."""
    found = state.extras.get(name)
    if found is None:
        raise HTTPException(503, f"{what} is not running")
    return found


def get_state(request: Request) -> AppState:
    """The AppState of the app serving this request."""
    return request.app.state.loglens


State = Annotated[AppState, Depends(get_state)]


def require_token(request: Request) -> None:
    """When tokens are set, require one whose scope fits the route (see `loglens.api.auth`)."""
    auth.require(request)


def require_admin(request: Request) -> None:
    """When tokens are set, admin endpoints need the admin token."""
    auth.require(request, "admin")
