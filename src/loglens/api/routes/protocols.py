"""Wire protocols other than loglens's own JSON: OTLP/HTTP logs, Loki push, Elasticsearch `_bulk`.

Each handler only decodes its wire format (see `loglens.ingest.{otlp,loki,es_bulk}`) and answers
in the protocol's own shape; validation, dead-letter, commit-before-ack and backpressure come
from the shared `IngestPipeline`. (The syslog and Fluent forward listeners and the file tailer
are runtime components: see `loglens.runtime`.)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from loglens.api.body import read_body, read_decoded
from loglens.api.deps import PipelineDep, SettingsDep
from loglens.api.errors import HttpError, http_error
from loglens.api.responses import EsBulkOut, EsErrorOut, EsRootOut
from loglens.config import Settings
from loglens.errors import Backpressure, IngestError, StorageError
from loglens.ingest import es_bulk, loki, otlp
from loglens.ingest.decode import decode_content
from loglens.ingest.pipeline import IngestPipeline
from loglens.models import IngestResult, Parsed

_ERROR_WHY = {
    400: "Undecodable body or malformed action line.",
    413: "Body over `ingest.max_body_bytes`.",
    429: "Ingest queue full; see Retry-After.",
    503: "Store failing or draining; see Retry-After.",
}

router = APIRouter(tags=["protocols"])
T = TypeVar("T")

_OTLP_CONTENT: dict[str, dict[str, Any]] = {otlp.PROTOBUF: {}, otlp.JSON: {}}
_OTLP_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "ExportLogsServiceResponse; `partialSuccess` counts rejected records.",
        "content": _OTLP_CONTENT,
    },
    400: {"description": "Undecodable request (google.rpc.Status).", "content": _OTLP_CONTENT},
    413: {"description": "Body over `ingest.max_body_bytes`.", "content": _OTLP_CONTENT},
    415: {"description": "Neither protobuf nor JSON.", "content": _OTLP_CONTENT},
    429: {"description": "Ingest queue full; see Retry-After.", "content": _OTLP_CONTENT},
    503: {"description": "Store failing or draining; see Retry-After.", "content": _OTLP_CONTENT},
}
_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_LOKI_RESPONSES: dict[int | str, dict[str, Any]] = {
    204: {"description": "Every entry is stored."},
    400: {"description": "Undecodable push, or the entries that were ignored and why.", "content": _TEXT},
    413: {"description": "Body over `ingest.max_body_bytes`.", "content": _TEXT},
    429: {"description": "Ingest queue full; see Retry-After.", "content": _TEXT},
    503: {"description": "Store failing or draining; see Retry-After.", "content": _TEXT},
}
_ES_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": EsBulkOut, "description": "One item per action (201 or its error)."},
    **{code: {"model": EsErrorOut, "description": why} for code, why in _ERROR_WHY.items()},
}


async def _decoded(
    request: Request, limit: int, pipeline: IngestPipeline, source: str, decode: Callable[[bytes], T]
) -> T | HttpError:
    """The decoded body, or (after keeping it as a dead letter) the error to answer with."""
    body = b""
    try:
        body = await read_decoded(request, limit)
        return decode(body)
    except IngestError as exc:
        await pipeline.reject_whole(otlp.dead_letter_text(body), str(exc), source)
        return http_error(exc)


async def _committed(pipeline: IngestPipeline, parsed: Parsed, source: str) -> IngestResult | HttpError:
    """The pipeline's result, or the backpressure / storage error to answer with."""
    try:
        return await pipeline.ingest(parsed, source)
    except (Backpressure, StorageError) as exc:
        return http_error(exc)


# --- OTLP/HTTP -------------------------------------------------------------------------------


def _otlp_error(err: HttpError, kind: str) -> Response:
    # gRPC status codes in the body: 3 INVALID_ARGUMENT, 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE.
    code = {400: 3, 413: 3, 415: 3, 429: 8, 503: 14}.get(err.status, 2)
    return Response(otlp.encode_status(code, err.message, kind), err.status, headers=err.headers, media_type=kind)


@router.post("/v1/logs", summary="OTLP/HTTP logs (protobuf or JSON)", responses=_OTLP_RESPONSES)
async def otlp_logs(request: Request, settings: SettingsDep, pipeline: PipelineDep) -> Response:
    """Export logs the OTLP/HTTP way; a partialSuccess names how many records were rejected."""
    kind = otlp.content_kind(request.headers.get("content-type"))
    if kind is None:
        return _otlp_error(HttpError(415, "Content-Type must be application/x-protobuf or application/json"), otlp.JSON)
    export = await _decoded(
        request, settings.ingest.max_body_bytes, pipeline, "otlp", lambda body: otlp.decode_request(body, kind)
    )
    if isinstance(export, HttpError):
        return _otlp_error(export, kind)
    parsed = otlp.to_parsed(export, settings.protocols.mapping.otlp, time.time_ns())
    result = await _committed(pipeline, parsed, "otlp")
    if isinstance(result, HttpError):
        return _otlp_error(result, kind)
    message = "; ".join(f"record {e.index}: {e.reason}" for e in result.errors[:10])
    return Response(otlp.encode_response(result.rejected, message, kind), 200, media_type=kind)


# --- Loki push -------------------------------------------------------------------------------


def _loki_error(err: HttpError) -> Response:
    return PlainTextResponse(err.message + "\n", err.status, headers=err.headers)


_PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf", "application/vnd.google.protobuf")
_LOKI_THREAD_BYTES = 16 * 1024  # decode bigger pushes off the event loop, as big ingest bodies are


def _loki_decoder(
    ctype: str, encoding: str, limit: int, settings: Settings, tenant: str | None
) -> Callable[[bytes], tuple[Parsed, list[str]]]:
    """Loki's rule: `application/json` is JSON; any other type is a snappy-compressed protobuf
    `PushRequest` (which is what Promtail, Alloy and winston-loki send, with no Content-Encoding)."""
    mapping = settings.protocols.mapping.loki

    def decode(body: bytes) -> tuple[Parsed, list[str]]:
        if encoding != "snappy":  # `snappy` here only names the protobuf body's own compression
            body = decode_content(body, encoding, limit)
        if ctype in _PROTOBUF_TYPES or (ctype not in ("application/json", "") and not body.lstrip().startswith(b"{")):
            return loki.decode_protobuf(body, mapping, limit, tenant)
        return loki.decode_push(body, mapping, tenant)

    return decode


@router.post(
    "/loki/api/v1/push",
    status_code=204,
    summary="Loki push (snappy protobuf as Promtail/Alloy send, or JSON)",
    responses=_LOKI_RESPONSES,
)
@router.post(
    "/api/prom/push", status_code=204, summary="Loki push, legacy path (same bodies)", responses=_LOKI_RESPONSES
)
async def loki_push(request: Request, settings: SettingsDep, pipeline: PipelineDep) -> Response:
    """Push log streams as Loki does: 204 when all entries are stored, 400 listing ignored entries.

    Bodies: `application/x-protobuf` (a snappy-compressed `logproto.PushRequest`, the default of
    Promtail, Grafana Alloy and winston-loki) or `application/json` (optionally gzip). An
    `X-Scope-OrgID` tenant header is accepted and kept as `metadata.tenant`.
    """
    ctype = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    encoding = (request.headers.get("content-encoding") or "").strip().lower()
    limit = settings.ingest.max_body_bytes
    decode = _loki_decoder(ctype, encoding, limit, settings, request.headers.get("x-scope-orgid"))
    body = b""
    try:
        body = await read_body(request, limit)
        if len(body) > _LOKI_THREAD_BYTES:
            parsed, streams = await anyio.to_thread.run_sync(decode, body)
        else:
            parsed, streams = decode(body)
    except IngestError as exc:
        await pipeline.reject_whole(otlp.dead_letter_text(body), str(exc), "loki")
        return _loki_error(http_error(exc))
    result = await _committed(pipeline, parsed, "loki")
    if isinstance(result, HttpError):
        return _loki_error(result)
    if result.rejected:
        return PlainTextResponse(loki.ignored_message(result.rejected, result.errors, len(parsed), streams), 400)
    return Response(status_code=204)


# --- Elasticsearch ---------------------------------------------------------------------------

_ES_KIND = {
    400: "illegal_argument_exception",
    413: "content_too_long_exception",
    415: "illegal_argument_exception",
    429: "es_rejected_execution_exception",
    503: "unavailable_shards_exception",
}


def _es_json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status, headers={**es_bulk.PRODUCT_HEADERS, **(headers or {})})


def _es_error(err: HttpError) -> JSONResponse:
    kind = _ES_KIND.get(err.status, "exception")
    return _es_json(es_bulk.es_error(err.status, kind, err.message), err.status, err.headers)


async def _bulk(request: Request, settings: Settings, pipeline: IngestPipeline, index: str | None) -> Response:
    started = time.perf_counter()
    mapping = settings.protocols.mapping.es_bulk
    bulk = await _decoded(
        request,
        settings.ingest.max_body_bytes,
        pipeline,
        "es_bulk",
        lambda body: es_bulk.parse_bulk(body, index, mapping),
    )
    if isinstance(bulk, HttpError):
        return _es_error(bulk)
    # Every item needs its own status, so this request asks the pipeline for all rejections.
    every_error = copy.copy(pipeline)
    every_error.max_errors = len(bulk.parsed)
    result = await _committed(every_error, bulk.parsed, "es_bulk")
    if isinstance(result, HttpError):
        return _es_error(result)
    took = round((time.perf_counter() - started) * 1000)
    return _es_json(es_bulk.bulk_response(bulk, result.errors, took))


@router.post("/_bulk", summary="Elasticsearch bulk API", responses=_ES_RESPONSES)
@router.put(
    "/_bulk",
    summary="Elasticsearch bulk API (PUT, as some clients send it)",
    responses=_ES_RESPONSES,
    operation_id="es_bulk_root_put",
)
async def es_bulk_root(request: Request, settings: SettingsDep, pipeline: PipelineDep) -> Response:
    """Index action/document pairs; the index comes from each action line."""
    return await _bulk(request, settings, pipeline, None)


@router.post("/{index}/_bulk", summary="Elasticsearch bulk API with a default index", responses=_ES_RESPONSES)
@router.put(
    "/{index}/_bulk",
    summary="Elasticsearch bulk API with a default index (PUT)",
    responses=_ES_RESPONSES,
    operation_id="es_bulk_index_put",
)
async def es_bulk_index(index: str, request: Request, settings: SettingsDep, pipeline: PipelineDep) -> Response:
    """Index action/document pairs; `index` is used when an action names none."""
    return await _bulk(request, settings, pipeline, index)


@router.get(
    "/_es",
    summary="Elasticsearch version document (what clients probe at GET /)",
    response_model=EsRootOut,
)
async def es_root() -> Response:
    """The version document Elasticsearch clients expect from `GET /`."""
    return _es_json(es_bulk.es_root_document())


@router.head("/", include_in_schema=False)
@router.head("/_es", include_in_schema=False)
async def es_head() -> Response:
    """`HEAD /`: Elasticsearch clients' ping."""
    return Response(status_code=200, headers=es_bulk.PRODUCT_HEADERS)
