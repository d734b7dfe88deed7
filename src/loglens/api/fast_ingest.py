"""`POST /api/v1/logs` answered straight from ASGI, in front of FastAPI's whole stack.

An app that posts each log as it happens makes this the hottest request of the server. Going
through FastAPI's middleware stack (error and telemetry wrappers, the request guard, the body
budget, CORS, routing, dependency solving, response-model validation) cost more CPU than
validating the log and writing it to the WAL (measured: the event loop's CPU per one-log request
fell by a quarter once this layer moved in front of the stack). So this layer comes first and
does exactly what the FastAPI route `routes/ingest.py` does — same decoding, same pipeline, same
error mapping and answers — after the same protections, applied by the same functions:

* Host and cross-site checks and the token scope (`security.refusal_of`, as the request guard);
* the shared body budget (`limits.BodyLedger`): the declared body is reserved before reading.

It serves only the plain case and hands everything else, unchanged, to the full stack, which
answers it as it always did: requests from browsers (an `Origin` or `Sec-Fetch-Site` header:
CORS headers and cross-site rules apply), refused requests (the stack gives the exact refusal),
bodies without a Content-Length or larger than the limit (chunked reading, 413), a full body
budget (503), and a malformed or repeated `Idempotency-Key` (FastAPI's documented 422).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from loglens.api.body import read_body
from loglens.api.errors import http_error, send_json, send_json_error
from loglens.api.limits import BodyLedger, declared_length
from loglens.api.routes.ingest import INLINE_DECODE_BYTES, MAX_IDEMPOTENCY_KEY
from loglens.api.security import refusal_of
from loglens.errors import IngestError, LoglensError, PayloadTooLarge
from loglens.ingest.decode import decode_body
from loglens.models import IngestResult

log = logging.getLogger("loglens.api")

PATH = "/api/v1/logs"
_KEY_PATTERN = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_IDEMPOTENCY_KEY)
# Headers only browsers send: such requests take the full stack (CORS, cross-site rules).
_BROWSER_HEADERS = frozenset({b"origin", b"sec-fetch-site"})


def install(app: Any) -> None:
    """Put the fast path in front of `app`'s whole middleware stack (a FastAPI/Starlette app).

    Starlette builds the stack on the first request; wrapping the builder keeps the fast path
    outside every middleware added before or after this call.
    """
    build: Callable[[], ASGIApp] = app.build_middleware_stack
    app.build_middleware_stack = lambda: IngestFastPath(build())


class IngestFastPath:
    """ASGI app: serve plain `POST /api/v1/logs` requests itself; everything else goes to `app`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        owner = scope.get("app")
        state = getattr(owner, "state", None)
        runtime = getattr(state, "runtime", None)
        ledger: BodyLedger | None = getattr(state, "body_ledger", None)
        headers = _headers_of(scope)
        if runtime is None or ledger is None or headers is None:
            await self.app(scope, receive, send)  # not running yet, or a request the stack must judge
            return
        server = runtime.settings.server
        ledger.refresh(scope)
        declared = declared_length(scope)
        if (
            declared is None
            or declared > ledger.max_body
            or not ledger.fits(declared)
            or refusal_of("POST", PATH, headers.all, server) is not None
        ):
            await self.app(scope, receive, send)
            return
        ledger.in_flight += declared
        try:
            await self._ingest(scope, receive, send, runtime, headers, ledger.max_body)
        finally:
            ledger.in_flight -= declared

    @staticmethod
    async def _ingest(scope: Scope, receive: Receive, send: Send, runtime: Any, headers: _Headers, limit: int) -> None:
        pipeline = runtime.pipeline
        body = b""
        try:
            try:
                body = await read_body(Request(scope, receive), limit)
            except PayloadTooLarge as exc:  # sent more than it declared
                await pipeline.reject_whole(b"", str(exc), "http")
                raise
            try:
                if len(body) > INLINE_DECODE_BYTES:  # big bodies decode off the event loop
                    parsed = await anyio.to_thread.run_sync(
                        decode_body, body, headers.content_type, headers.content_encoding, limit
                    )
                else:
                    parsed = decode_body(body, headers.content_type, headers.content_encoding, limit)
            except IngestError as exc:
                await pipeline.reject_whole(body, str(exc), "http")
                raise
            result = await pipeline.ingest(parsed, "http", headers.idempotency_key)
        except LoglensError as exc:
            err = http_error(exc)
            await send_json_error(send, err.status, err.message, err.headers)
            return
        except ClientDisconnect:
            log.info("client disconnected during the request", extra={"path": PATH})
            return
        except Exception as exc:  # what the stack's error middleware would answer: 500, and a log line
            log.exception("ingest request failed", extra={"path": PATH})
            await send_json_error(send, 500, str(exc) or type(exc).__name__)
            return
        await send_json(send, 200, response_body(result))


def response_body(result: IngestResult) -> dict[str, Any]:
    """The documented `IngestResponse` of one request (what the FastAPI route's model dumps)."""
    return {
        "accepted": result.accepted,
        "rejected": result.rejected,
        "errors": [{"index": e.index, "reason": e.reason} for e in result.errors],
        "duplicate": result.duplicate,
    }


class _Headers:
    """The request headers the fast path needs, read in one pass."""

    __slots__ = ("all", "content_encoding", "content_type", "idempotency_key")

    def __init__(self, everything: dict[str, str], content_type: str | None, encoding: str | None, key: str | None):
        self.all = everything
        self.content_type = content_type
        self.content_encoding = encoding
        self.idempotency_key = key


def _headers_of(scope: Scope) -> _Headers | None:
    """The headers, or None when the request has one only the full stack can answer properly
    (a browser's Origin/Sec-Fetch-Site, a malformed or repeated Idempotency-Key)."""
    everything: dict[str, str] = {}
    content_type = content_encoding = key = None
    for name, value in scope["headers"]:
        if name in _BROWSER_HEADERS:
            return None
        if name == b"idempotency-key":
            if key is not None or not _KEY_PATTERN.fullmatch(value):
                return None
            key = value.decode("ascii")
        text = value.decode("latin-1")
        everything[name.decode("latin-1")] = text
        if name == b"content-type":
            content_type = text
        elif name == b"content-encoding":
            content_encoding = text
    return _Headers(everything, content_type, content_encoding, key)
