"""FastAPI dependencies: the running app's state and token checks, as `Annotated` aliases."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

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


# The dependencies below are `async def` on purpose: FastAPI runs a plain `def` dependency in the
# thread pool, and that hop (twice per request with the token check) cost more than the whole
# ingest commit — loglens's GET /healthz reached a fifth of a bare Starlette route because of it.
async def get_state(request: Request) -> AppState:
    """The AppState of the app serving this request."""
    return request.app.state.loglens


State = Annotated[AppState, Depends(get_state)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-token") or request.query_params.get("token")


async def require_token(request: Request) -> None:
    """When server.api_token is set, require it (Bearer header, X-API-Token, or ?token= for SSE).

    The admin token is accepted too: it grants everything the API token does, so admin endpoints
    (which sit behind both checks) work with the admin token alone.
    """
    server = request.app.state.loglens.settings.server
    expected = server.api_token
    given = (_bearer(request) or "").encode()
    if expected and not (
        hmac.compare_digest(given, expected.encode())
        or (server.admin_token and hmac.compare_digest(given, server.admin_token.encode()))
    ):
        raise HTTPException(401, "missing or invalid API token", headers={"WWW-Authenticate": "Bearer"})


async def require_admin(request: Request) -> None:
    """When server.admin_token is set, require it for admin endpoints."""
    settings = request.app.state.loglens.settings.server
    expected = settings.admin_token or settings.api_token
    if expected and not hmac.compare_digest((_bearer(request) or "").encode(), expected.encode()):
        raise HTTPException(401, "missing or invalid admin token", headers={"WWW-Authenticate": "Bearer"})
