"""Wire protocols other than loglens's own JSON: OTLP/HTTP logs, Loki push, Elasticsearch `_bulk`.

Each handler only decodes its wire format (see `loglens.ingest.{otlp,loki,es_bulk}`) and answers
in the protocol's own shape; validation, dead-letter, commit-before-ack and backpressure come
from the shared `IngestPipeline`. Also here: the `protocols` app component that runs the
syslog listeners and the file tailer when config enables them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from loglens.api.deps import AppState, State
from loglens.api.routes.ingest import read_body
from loglens.errors import Backpressure, IngestError, ParseError, PayloadTooLarge, StorageError
from loglens.ingest import es_bulk, loki, otlp
from loglens.ingest.decode import gunzip

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
async def otlp_logs(request: Request, state: State) -> Response:
    """Export logs the OTLP/HTTP way; a partialSuccess names how many records were rejected."""
    kind = otlp.content_kind(request.headers.get("content-type"))
    if kind is None:
        return _otlp_error(415, "Content-Type must be application/x-protobuf or application/json", otlp.JSON)
    limit = state.settings.ingest.max_body_bytes
    body = b""
    try:
        body = await _body(request, limit)
        export = otlp.decode_request(body, kind)
    except PayloadTooLarge as exc:
        await state.pipeline.reject_whole(otlp.dead_letter_text(body), str(exc), "otlp")
        return _otlp_error(413, str(exc), kind)
    except IngestError as exc:
        await state.pipeline.reject_whole(otlp.dead_letter_text(body), str(exc), "otlp")
        return _otlp_error(400, str(exc), kind)
    parsed = otlp.to_parsed(export, state.settings.protocols.mapping.otlp, time.time_ns())
    try:
        result = await state.pipeline.ingest(parsed, "otlp")
    except Backpressure as exc:
        return _otlp_error(429, str(exc), kind, _retry_headers(exc))
    except StorageError as exc:
        return _otlp_error(503, str(exc), kind, _retry_headers(exc))
    message = "; ".join(f"record {e.index}: {e.reason}" for e in result.errors[:10])
    return Response(otlp.encode_response(result.rejected, message, kind), 200, media_type=kind)


# --- Loki push -------------------------------------------------------------------------------


@router.post("/loki/api/v1/push", status_code=204, summary="Loki push (JSON, optionally gzip)")
async def loki_push(request: Request, state: State) -> Response:
    """Push log streams as Loki does: 204 when all entries are stored, 400 listing ignored entries."""
    ctype = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    limit = state.settings.ingest.max_body_bytes
    body = b""
    try:
        body = await read_body(request, limit)
        if ctype in ("application/x-protobuf", "application/protobuf"):
            await state.pipeline.reject_whole(otlp.dead_letter_text(body), loki.PROTOBUF_UNSUPPORTED, "loki")
            return PlainTextResponse(loki.PROTOBUF_UNSUPPORTED + "\n", 415)
        encoding = (request.headers.get("content-encoding") or "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            body = gunzip(body, limit)
        elif encoding not in ("", "identity"):
            raise ParseError(f"unsupported Content-Encoding {encoding!r} (use gzip or none)")
        parsed, streams = loki.decode_push(body, state.settings.protocols.mapping.loki)
    except PayloadTooLarge as exc:
        await state.pipeline.reject_whole(otlp.dead_letter_text(body), str(exc), "loki")
        return PlainTextResponse(str(exc) + "\n", 413)
    except IngestError as exc:
        await state.pipeline.reject_whole(otlp.dead_letter_text(body), str(exc), "loki")
        return PlainTextResponse(str(exc) + "\n", 400)
    try:
        result = await state.pipeline.ingest(parsed, "loki")
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


async def _bulk(request: Request, state: AppState, index: str | None) -> Response:
    started = time.perf_counter()
    limit = state.settings.ingest.max_body_bytes
    body = b""
    try:
        body = await _body(request, limit)
        bulk = es_bulk.parse_bulk(body, index, state.settings.protocols.mapping.es_bulk)
    except PayloadTooLarge as exc:
        await state.pipeline.reject_whole(otlp.dead_letter_text(body), str(exc), "es_bulk")
        return _es_json(es_bulk.es_error(413, "content_too_long_exception", str(exc)), 413)
    except IngestError as exc:
        await state.pipeline.reject_whole(otlp.dead_letter_text(body), str(exc), "es_bulk")
        return _es_json(es_bulk.es_error(400, "illegal_argument_exception", str(exc)), 400)
    # Every item needs its own status, so this request asks the pipeline for all rejections.
    pipeline = copy.copy(state.pipeline)
    pipeline.max_errors = len(bulk.parsed)
    try:
        result = await pipeline.ingest(bulk.parsed, "es_bulk")
    except (Backpressure, StorageError) as exc:
        status = 429 if isinstance(exc, Backpressure) else 503
        kind = "es_rejected_execution_exception" if status == 429 else "unavailable_shards_exception"
        return _es_json(es_bulk.es_error(status, kind, str(exc)), status, _retry_headers(exc))
    took = round((time.perf_counter() - started) * 1000)
    return _es_json(es_bulk.bulk_response(bulk, result.errors, took))


@router.post("/_bulk", summary="Elasticsearch bulk API")
async def es_bulk_root(request: Request, state: State) -> Response:
    """Index action/document pairs; the index comes from each action line."""
    return await _bulk(request, state, None)


@router.put("/_bulk", summary="Elasticsearch bulk API (PUT, as some clients send it)")
async def es_bulk_root_put(request: Request, state: State) -> Response:
    """Same as `POST /_bulk`."""
    return await _bulk(request, state, None)


@router.post("/{index}/_bulk", summary="Elasticsearch bulk API with a default index")
async def es_bulk_index(index: str, request: Request, state: State) -> Response:
    """Index action/document pairs; `index` is used when an action names none."""
    return await _bulk(request, state, index)


@router.put("/{index}/_bulk", summary="Elasticsearch bulk API with a default index (PUT)")
async def es_bulk_index_put(index: str, request: Request, state: State) -> Response:
    """Same as `POST /{index}/_bulk`."""
    return await _bulk(request, state, index)


@router.get("/_es", summary="Elasticsearch version document (what clients probe at GET /)")
async def es_root(state: State) -> Response:
    """The version document Elasticsearch clients expect from `GET /`."""
    return _es_json(es_bulk.es_root_document(state))


@router.head("/", include_in_schema=False)
@router.head("/_es", include_in_schema=False)
async def es_head() -> Response:
    """`HEAD /`: Elasticsearch clients' ping."""
    return Response(status_code=200, headers=es_bulk.PRODUCT_HEADERS)


# --- syslog and file tail as an app component ------------------------------------------------


async def start_protocols(state: AppState) -> None:
    """Start the syslog listeners and the file tailer when the config asks for them."""
    from loglens.ingest.syslog import SyslogServer
    from loglens.ingest.tail import Tailer, default_checkpoint_path, pipeline_sink

    settings = state.settings
    if settings.protocols.syslog.enabled:
        server = SyslogServer(state.pipeline, settings.protocols.mapping.syslog, settings.protocols.syslog)
        await server.start()
        state.extras["syslog"] = server
    if settings.ingest.files:
        tail_cfg = settings.protocols.tail
        tailer = Tailer(
            list(settings.ingest.files),
            pipeline_sink(state.pipeline),
            settings.protocols.mapping.tail,
            tail_cfg,
            default_checkpoint_path(tail_cfg, settings.storage.path),
        )
        state.extras["tailer"] = tailer
        state.extras["tailer_task"] = asyncio.create_task(tailer.run(), name="tailer")


async def stop_protocols(state: AppState) -> None:
    """Stop the tailer (after its current batch) and the syslog listeners (after their last flush)."""
    tailer = state.extras.pop("tailer", None)
    task = state.extras.pop("tailer_task", None)
    if tailer is not None and task is not None:
        tailer.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
    server = state.extras.pop("syslog", None)
    if server is not None:
        await server.stop()
