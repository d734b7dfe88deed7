"""Wire protocols other than loglens's own JSON: OTLP/HTTP logs, Loki push, Elasticsearch `_bulk`.

Each handler only decodes its wire format (see `loglens.ingest.{otlp,loki,es_bulk}`) and answers
in the protocol's own shape; validation, dead-letter, commit-before-ack and backpressure come
from the shared `IngestPipeline`. (The syslog listeners and the file tailer are runtime
components: see `loglens.runtime`.)
"""

from __future__ import annotations

import copy
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from loglens.api.deps import PipelineDep, SettingsDep
from loglens.api.routes.ingest import read_body
from loglens.config import Settings
from loglens.errors import Backpressure, IngestError, ParseError, PayloadTooLarge, StorageError
from loglens.ingest import es_bulk, loki, otlp
from loglens.ingest.decode import gunzip
from loglens.ingest.pipeline import IngestPipeline

router = APIRouter(tags=["protocols"])


async def _body(request: Request, limit: int) -> bytes:
    """Body within the size limit, gunzipped when Content-Encoding says so (PayloadTooLarge/ParseError)."""
    body = await read_body(request, limit)
    encoding = (request.headers.get("content-encoding") or "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        return gunzip(body, limit)
    if encoding not in ("", "identity"):
        raise ParseError(f"unsupported Content-Encoding {encoding!r} (use gzip or none)")
    return body


def _retry_headers(exc: Backpressure | StorageError) -> dict[str, str]:
    return {"Retry-After": str(exc.retry_after)}


# --- OTLP/HTTP -------------------------------------------------------------------------------


def _otlp_error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> Response:
    # gRPC status codes in the body: 3 INVALID_ARGUMENT, 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE.
    code = {400: 3, 413: 3, 415: 3, 429: 8, 503: 14}.get(status, 2)
    return Response(otlp.encode_status(code, message, kind), status, headers=headers, media_type=kind)


@router.post("/v1/logs", summary="OTLP/HTTP logs (protobuf or JSON)")
async def otlp_logs(request: Request, settings: SettingsDep, pipeline: PipelineDep) -> Response:
    """Export logs the OTLP/HTTP way; a partialSuccess names how many records were rejected."""
    kind = otlp.content_kind(request.headers.get("content-type"))
    if kind is None:
        return _otlp_error(415, "Content-Type must be application/x-protobuf or application/json", otlp.JSON)
    limit = settings.ingest.max_body_bytes
    body = b""
    try:
        body = await _body(request, limit)
        export = otlp.decode_request(body, kind)
    except PayloadTooLarge as exc:
        await pipeline.reject_whole(otlp.dead_letter_text(body), str(exc), "otlp")
        return _otlp_error(413, str(exc), kind)
    except IngestError as exc:
        await pipeline.reject_whole(otlp.dead_letter_text(body), str(exc), "otlp")
        return _otlp_error(400, str(exc), kind)
    parsed = otlp.to_parsed(export, settings.protocols.mapping.otlp, time.time_ns())
    try:
        result = await pipeline.ingest(parsed, "otlp")
    except Backpressure as exc:
        return _otlp_error(429, str(exc), kind, _retry_headers(exc))
    except StorageError as exc:
        return _otlp_error(503, str(exc), kind, _retry_headers(exc))
    message = "; ".join(f"record {e.index}: {e.reason}" for e in result.errors[:10])
    return Response(otlp.encode_response(result.rejected, message, kind), 200, media_type=kind)


# --- Loki push -------------------------------------------------------------------------------


@router.post("/loki/api/v1/push", status_code=204, summary="Loki push (JSON, optionally gzip)")
async def loki_push(request: Request, settings: SettingsDep, pipeline: PipelineDep) -> Response:
    """Push log streams as Loki does: 204 when all entries are stored, 400 listing ignored entries."""
    ctype = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    limit = settings.ingest.max_body_bytes
    body = b""
    try:
        body = await read_body(request, limit)
        if ctype in ("application/x-protobuf", "application/protobuf"):
            await pipeline.reject_whole(otlp.dead_letter_text(body), loki.PROTOBUF_UNSUPPORTED, "loki")
            return PlainTextResponse(loki.PROTOBUF_UNSUPPORTED + "\n", 415)
        encoding = (request.headers.get("content-encoding") or "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            body = gunzip(body, limit)
        elif encoding not in ("", "identity"):
            raise ParseError(f"unsupported Content-Encoding {encoding!r} (use gzip or none)")
        parsed, streams = loki.decode_push(body, settings.protocols.mapping.loki)
    except PayloadTooLarge as exc:
        await pipeline.reject_whole(otlp.dead_letter_text(body), str(exc), "loki")
        return PlainTextResponse(str(exc) + "\n", 413)
    except IngestError as exc:
        await pipeline.reject_whole(otlp.dead_letter_text(body), str(exc), "loki")
        return PlainTextResponse(str(exc) + "\n", 400)
    try:
        result = await pipeline.ingest(parsed, "loki")
    except (Backpressure, StorageError) as exc:
        status = 429 if isinstance(exc, Backpressure) else 503
        return PlainTextResponse(str(exc) + "\n", status, headers=_retry_headers(exc))
    if result.rejected:
        text = loki.ignored_message(result.rejected, result.errors, len(parsed), streams)
        return PlainTextResponse(text, 400)
    return Response(status_code=204)


# --- Elasticsearch ---------------------------------------------------------------------------


def _es_json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status, headers={**es_bulk.PRODUCT_HEADERS, **(headers or {})})


async def _bulk(request: Request, settings: Settings, pipeline: IngestPipeline, index: str | None) -> Response:
    started = time.perf_counter()
    limit = settings.ingest.max_body_bytes
    body = b""
    try:
        body = await _body(request, limit)
        bulk = es_bulk.parse_bulk(body, index, settings.protocols.mapping.es_bulk)
    except PayloadTooLarge as exc:
        await pipeline.reject_whole(otlp.dead_letter_text(body), str(exc), "es_bulk")
        return _es_json(es_bulk.es_error(413, "content_too_long_exception", str(exc)), 413)
    except IngestError as exc:
        await pipeline.reject_whole(otlp.dead_letter_text(body), str(exc), "es_bulk")
        return _es_json(es_bulk.es_error(400, "illegal_argument_exception", str(exc)), 400)
    # Every item needs its own status, so this request asks the pipeline for all rejections.
    every_error = copy.copy(pipeline)
    every_error.max_errors = len(bulk.parsed)
    try:
        result = await every_error.ingest(bulk.parsed, "es_bulk")
    except (Backpressure, StorageError) as exc:
        status = 429 if isinstance(exc, Backpressure) else 503
        kind = "es_rejected_execution_exception" if status == 429 else "unavailable_shards_exception"
        return _es_json(es_bulk.es_error(status, kind, str(exc)), status, _retry_headers(exc))
    took = round((time.perf_counter() - started) * 1000)
    return _es_json(es_bulk.bulk_response(bulk, result.errors, took))


@router.post("/_bulk", summary="Elasticsearch bulk API")
@router.put("/_bulk", include_in_schema=False)
async def es_bulk_root(request: Request, settings: SettingsDep, pipeline: PipelineDep) -> Response:
    """Index action/document pairs; the index comes from each action line."""
    return await _bulk(request, settings, pipeline, None)


@router.post("/{index}/_bulk", summary="Elasticsearch bulk API with a default index")
@router.put("/{index}/_bulk", include_in_schema=False)
async def es_bulk_index(index: str, request: Request, settings: SettingsDep, pipeline: PipelineDep) -> Response:
    """Index action/document pairs; `index` is used when an action names none."""
    return await _bulk(request, settings, pipeline, index)


@router.get("/_es", summary="Elasticsearch version document (what clients probe at GET /)")
async def es_root() -> Response:
    """The version document Elasticsearch clients expect from `GET /`."""
    return _es_json(es_bulk.es_root_document())


@router.head("/", include_in_schema=False)
@router.head("/_es", include_in_schema=False)
async def es_head() -> Response:
    """`HEAD /`: Elasticsearch clients' ping."""
    return Response(status_code=200, headers=es_bulk.PRODUCT_HEADERS)
