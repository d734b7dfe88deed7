"""A global budget of request-body bytes in flight (`server.max_inflight_body_bytes`).

Each request body is held in memory while it is read and decoded, so many clients uploading
large bodies slowly at once grow the server's memory without bound (100 × 8.9 MB took RSS from
250 MB to 1.1 GB). This ASGI middleware reserves each request's bytes against one shared budget:

* a request that declares its size (`Content-Length`) reserves it before the app runs; when it
  does not fit, the answer is 503 with `Retry-After` at once (nothing has been read);
* a chunked request reserves its bytes as they arrive and gets the same 503 when the budget runs
  out mid-way (raised from `receive`, so the app's exception handling answers it);
* everything a request reserved is released when its response is done.

A body larger than `ingest.max_body_bytes` is not reserved: the routes refuse it with 413 before
reading it (chunked ones as soon as they pass the limit; other routes get 413 here).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loglens.api.errors import send_json_error

log = logging.getLogger("loglens.api.limits")

_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# slack above the body limit before this layer refuses: the ingest routes refuse first (413 with a
# dead-letter record) as soon as one chunk passes the limit
_CHUNK_SLACK = 1024 * 1024


class BodyLedger:
    """The bytes of request bodies in flight against one shared budget (one ledger per app).

    Shared by the body-budget middleware and the ingest fast path (`api/fast_ingest.py`), which
    answers `POST /api/v1/logs` in front of the middleware stack but reserves its body here too.
    """

    def __init__(self, budget_bytes: int, max_body_bytes: int, retry_after_s: int = 1) -> None:
        self.budget = budget_bytes
        self.max_body = max_body_bytes
        self.retry_after = retry_after_s
        self.in_flight = 0
        self.refused = 0

    def refresh(self, scope: Scope) -> None:
        """Follow a config reload: the limits come from the running settings when the app has them."""
        state = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
        if state is not None:
            self.budget = state.settings.server.max_inflight_body_bytes
            self.max_body = state.settings.ingest.max_body_bytes

    def fits(self, needed: int) -> bool:
        """Whether `needed` more bytes fit the budget now."""
        return self.in_flight + needed <= self.budget

    def busy(self, needed: int) -> HTTPException:
        """Count a refusal and return its 503 (with Retry-After)."""
        self.refused += 1
        if self.refused == 1 or self.refused % 100 == 0:
            log.warning(
                "request body refused: in-flight body budget full",
                extra={"in_flight": self.in_flight, "needed": needed, "budget": self.budget, "refused": self.refused},
            )
        return HTTPException(
            503,
            f"server busy: {self.in_flight} bytes of request bodies in flight (budget {self.budget}); retry later",
            headers={"Retry-After": str(self.retry_after)},
        )


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, or None when absent or not a plain number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyBudget:
    """ASGI middleware: refuse (503 + Retry-After) requests whose body does not fit the shared budget."""

    def __init__(self, app: ASGIApp, ledger: BodyLedger) -> None:
        self.app = app
        self.ledger = ledger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY_METHODS:
            await self.app(scope, receive, send)
            return
        ledger = self.ledger
        ledger.refresh(scope)
        declared = declared_length(scope)
        reserved = 0
        if declared is not None and declared <= ledger.max_body:
            if not ledger.fits(declared):
                await _send_error(send, ledger.busy(declared))
                return
            reserved = declared
            ledger.in_flight += declared
        received = 0

        async def counted_receive() -> Message:
            nonlocal received, reserved
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > reserved:  # chunked (or longer than declared): reserve as it arrives
                    if received > ledger.max_body + _CHUNK_SLACK:
                        raise HTTPException(413, f"body exceeds the {ledger.max_body} byte limit")
                    extra = received - reserved
                    if not ledger.fits(extra):
                        raise ledger.busy(extra)
                    ledger.in_flight += extra
                    reserved = received
            return message

        try:
            await self.app(scope, counted_receive, send)
        finally:
            ledger.in_flight -= reserved


async def _send_error(send: Send, exc: HTTPException) -> None:
    await send_json_error(send, exc.status_code, exc.detail, exc.headers)


def install(app: Any, budget_bytes: int, max_body_bytes: int) -> None:
    """Add the body budget to `app` (a Starlette/FastAPI app); its ledger is `app.state.body_ledger`."""
    ledger = BodyLedger(budget_bytes, max_body_bytes)
    app.state.body_ledger = ledger
    app.add_middleware(BodyBudget, ledger=ledger)
