"""The one mapping from loglens's exception tree to HTTP: status code, message, Retry-After.

The JSON API answers `{"detail": message}` through the app's exception handler; the protocol
endpoints (OTLP, Loki, Elasticsearch) render the same `HttpError` in their own wire shape, so
every protocol gives the same status for the same failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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
