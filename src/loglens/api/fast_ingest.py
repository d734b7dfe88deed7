"""`POST /api/v1/logs` answered straight from ASGI, in front of FastAPI's router.

An app that posts each log as it happens makes this the hottest request of the server, and
FastAPI's routing, dependency solving and response-model validation cost several times the
work of validating and committing one log (profiled: about 40 % of the request's CPU). This
layer does exactly what the FastAPI route `routes/ingest.py` does — same body limit, same
decoding, same pipeline, same error mapping and answers — with none of that machinery. It sits
inside the request guard (Host, cross-site and token checks) and the body budget, so every
protection still applies. The FastAPI route stays: it documents the endpoint in OpenAPI and
answers the unusual requests this layer hands over unchanged (a malformed `Idempotency-Key`
gets FastAPI's documented 422).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import anyio.to_thread
import orjson
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from loglens.api.body import read_body
from loglens.api.errors import http_error
from loglens.api.routes.ingest import INLINE_DECODE_BYTES, MAX_IDEMPOTENCY_KEY
from loglens.errors import IngestError, LoglensError, PayloadTooLarge
from loglens.ingest.decode import decode_body
from loglens.models import IngestResult

log = logging.getLogger("loglens.api")

PATH = "/api/v1/logs"
_KEY_PATTERN = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_IDEMPOTENCY_KEY)
_JSON_HEADERS = [(b"content-type", b"application/json")]


class IngestFastPath:
    """ASGI middleware: serve `POST /api/v1/logs` itself; everything else goes to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
        headers = _headers_of(scope)
        if runtime is None or headers is None:
            await self.app(scope, receive, send)  # not running yet, or a header FastAPI must judge
            return
        content_type, content_encoding, key = headers
        pipeline = runtime.pipeline
        limit = runtime.settings.ingest.max_body_bytes
        body = b""
        try:
            try:
                body = await read_body(Request(scope, receive), limit)
            except PayloadTooLarge as exc:
                await pipeline.reject_whole(b"", str(exc), "http")
                raise
            try:
                if len(body) > INLINE_DECODE_BYTES:  # big bodies decode off the event loop
                    parsed = await anyio.to_thread.run_sync(decode_body, body, content_type, content_encoding, limit)
                else:
                    parsed = decode_body(body, content_type, content_encoding, limit)
            except IngestError as exc:
                await pipeline.reject_whole(body, str(exc), "http")
                raise
            result = await pipeline.ingest(parsed, "http", key)
        except LoglensError as exc:
            err = http_error(exc)
            await _answer(send, err.status, {"detail": err.message}, err.headers)
            return
        except HTTPException as exc:  # the body budget refused a chunked body mid-way
            await _answer(send, exc.status_code, {"detail": exc.detail}, exc.headers)
            return
        except ClientDisconnect:
            log.info("client disconnected during the request", extra={"path": PATH})
            return
        await _answer(send, 200, response_body(result))


def response_body(result: IngestResult) -> dict[str, Any]:
    """The documented `IngestResponse` of one request (what the FastAPI route's model dumps)."""
    return {
        "accepted": result.accepted,
        "rejected": result.rejected,
        "errors": [{"index": e.index, "reason": e.reason} for e in result.errors],
        "duplicate": result.duplicate,
    }


def _headers_of(scope: Scope) -> tuple[str | None, str | None, str | None] | None:
    """(content type, content encoding, idempotency key); None when the request has a header
    only the FastAPI route can answer properly (a malformed or repeated key)."""
    content_type = content_encoding = key = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"content-encoding":
            content_encoding = value.decode("latin-1")
        elif name == b"idempotency-key":
            if key is not None or not _KEY_PATTERN.fullmatch(value):
                return None
            key = value.decode("ascii")
    return content_type, content_encoding, key


async def _answer(send: Send, status: int, payload: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
    body = orjson.dumps(payload)
    raw = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
