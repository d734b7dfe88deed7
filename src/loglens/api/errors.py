"""The one mapping from loglens's exception tree to HTTP: status code, message, Retry-After.

The JSON API answers `{"detail": message}` through the app's exception handler; the protocol
endpoints (OTLP, Loki, Elasticsearch) render the same `HttpError` in their own wire shape, so
every protocol gives the same status for the same failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import Send

from loglens.errors import (
    Backpressure,
    ConfigError,
    IngestError,
    LoglensError,
    PayloadTooLarge,
    StorageError,
    UnsupportedMediaType,
)


@dataclass(frozen=True, slots=True)
class HttpError:
    """How an exception is answered over HTTP."""

    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def http_error(exc: LoglensError) -> HttpError:
    """413 too large, 415 unsupported format, 400 undecodable or bad config, 429/503 with Retry-After, else 500."""
    message = str(exc)
    if isinstance(exc, PayloadTooLarge):
        return HttpError(413, message)
    if isinstance(exc, UnsupportedMediaType):
        return HttpError(415, message)
    if isinstance(exc, IngestError | ConfigError):
        return HttpError(400, message)
    if isinstance(exc, Backpressure | StorageError):
        return HttpError(429 if isinstance(exc, Backpressure) else 503, message, {"Retry-After": str(exc.retry_after)})
    return HttpError(500, message)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every LoglensError a JSON route raises as `{"detail": ...}` with its mapped status."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        err = http_error(exc) if isinstance(exc, LoglensError) else HttpError(500, str(exc))
        return JSONResponse({"detail": err.message}, status_code=err.status, headers=err.headers or None)

    app.add_exception_handler(LoglensError, handle)


async def send_json_error(send: Send, status: int, detail: Any, headers: Mapping[str, str] | None = None) -> None:
    """Answer `{"detail": detail}` straight on an ASGI `send`, for layers in front of FastAPI's handlers."""
    await send_json(send, status, {"detail": detail}, headers)


async def send_json(send: Send, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
    """Answer `payload` as JSON straight on an ASGI `send` (status line, headers, body)."""
    body = orjson.dumps(payload)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
