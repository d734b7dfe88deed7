"""POST /api/v1/logs: JSON object, JSON array or NDJSON (optionally gzip), answered after commit."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Header, Request

from loglens.api.body import read_body
from loglens.api.deps import PipelineDep, SettingsDep
from loglens.api.responses import IngestResponse
from loglens.errors import IngestError, PayloadTooLarge
from loglens.ingest.decode import decode_body

router = APIRouter(tags=["ingest"])
INLINE_DECODE_BYTES = 64 * 1024  # larger bodies are decoded in a worker thread
MAX_IDEMPOTENCY_KEY = 200  # keys are stored per request: an unbounded header would be stored too


@router.post(
    "/api/v1/logs",
    response_model=IngestResponse,
    summary="Ingest logs",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array"}]}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            }
        }
    },
)
async def ingest_logs(
    request: Request,
    settings: SettingsDep,
    pipeline: PipelineDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=MAX_IDEMPOTENCY_KEY,
            pattern=r"^[\x21-\x7e]+$",
            description="Makes a retried request count once (printable ASCII, at most 200 characters).",
        ),
    ] = None,
) -> Any:
    """Accept one log, an array of logs, or NDJSON. Returns after the accepted logs are durable.

    Invalid records are rejected individually (and kept in the dead-letter store); the rest
    are accepted. Send an `Idempotency-Key` header to make a retried request count once.
    """
    limit = settings.ingest.max_body_bytes
    try:
        body = await read_body(request, limit)
    except PayloadTooLarge as exc:
        await pipeline.reject_whole(b"", str(exc), "http")
        raise
    args = (body, request.headers.get("content-type"), request.headers.get("content-encoding"), limit)
    try:
        # Large bodies are decoded off the event loop so SSE and small requests stay responsive.
        parsed = (
            await anyio.to_thread.run_sync(decode_body, *args)
            if len(body) > INLINE_DECODE_BYTES
            else decode_body(*args)
        )
    except IngestError as exc:
        await pipeline.reject_whole(body, str(exc), "http")
        raise
    result = await pipeline.ingest(parsed, "http", idempotency_key)
    return result.to_json()
