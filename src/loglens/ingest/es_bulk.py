"""Elasticsearch `_bulk` compatibility: action + document NDJSON pairs → schema records.

`index` and `create` actions store their document (mapped with `protocols.mapping.es_bulk`,
ECS names by default: `@timestamp`, `log.level`, `service.name`, `message`, ...; when a
document names no service, the index name is used). `update` and `delete` cannot apply to an
append-only log store: they get a per-item 400. The response has Elasticsearch's shape
(`took`, `errors`, `items[*].<action>.status`), so clients such as `helpers.bulk` see exactly
which documents failed, and every response carries `X-Elastic-Product: Elasticsearch`,
which the official clients check.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson

from loglens import __version__
from loglens.config import FieldMapping
from loglens.errors import ParseError
from loglens.ingest.mapping import map_document
from loglens.models import Parsed, Rejection

PRODUCT_HEADERS = {"X-Elastic-Product": "Elasticsearch"}
ES_VERSION = "9.0.0"  # the API level loglens answers like; clients only check the major version
_ACTIONS = ("index", "create", "update", "delete")


@dataclass(slots=True)
class BulkItem:
    """One action of a bulk request and, once known, its outcome."""

    action: str
    index: str
    doc_id: str
    record: int | None = None  # position in Parsed.values
    error: str | None = None


@dataclass(slots=True)
class BulkRequest:
    """The decoded bulk body: items in order plus the records handed to the pipeline."""

    items: list[BulkItem] = field(default_factory=list)
    parsed: Parsed = field(default_factory=lambda: Parsed([], {}, lambda i: ""))


def es_root_document() -> dict[str, Any]:
    """The `GET /` document Elasticsearch clients probe before talking to a cluster."""
    return {
        "name": "loglens",
        "cluster_name": "loglens",
        "cluster_uuid": "loglens-" + __version__,
        "version": {
            "number": ES_VERSION,
            "build_flavor": "default",
            "build_type": "loglens",
            "build_hash": "loglens",
            "build_snapshot": False,
            "lucene_version": "10.0.0",
            "minimum_wire_compatibility_version": "8.18.0",
            "minimum_index_compatibility_version": "8.0.0",
        },
        "tagline": "You Know, for Search",
    }


def es_error(status: int, kind: str, reason: str) -> dict[str, Any]:
    """An Elasticsearch-shaped error body."""
    return {
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": status,
    }


def _new_id() -> str:
    return secrets.token_urlsafe(15)  # 20 characters, like Elasticsearch's auto ids


def parse_bulk(body: bytes, default_index: str | None, mapping: FieldMapping) -> BulkRequest:
    """Decode a bulk body. A malformed action line rejects the whole request (ParseError → 400),
    as Elasticsearch does; a malformed document fails only its own item."""
    lines = [ln for ln in body.split(b"\n") if ln.strip()]
    out = BulkRequest()
    values: list[Any] = []
    failures: dict[int, str] = {}
    raws: list[bytes] = []
    i = 0
    while i < len(lines):
        try:
            action_doc = orjson.loads(lines[i])
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"line {i + 1}: malformed action/metadata line: {exc}") from None
        if not isinstance(action_doc, dict) or len(action_doc) != 1 or next(iter(action_doc)) not in _ACTIONS:
            raise ParseError(
                f'line {i + 1}: expected an action line like {{"index":{{...}}}} '
                f"(one of {', '.join(_ACTIONS)}), got {lines[i][:80]!r}"
            )
        action, meta = next(iter(action_doc.items()))
        meta = meta if isinstance(meta, dict) else {}
        index = str(meta.get("_index") or default_index or "")
        doc_id = str(meta.get("_id") or _new_id())
        item = BulkItem(action, index, doc_id, record=len(values))
        out.items.append(item)
        i += 1
        doc_line = b""
        if action != "delete":
            if i >= len(lines):
                raise ParseError(f"line {i}: the {action} action has no document line after it")
            doc_line = lines[i]
            i += 1
        raws.append(lines[i - 1] if action == "delete" else doc_line)
        if action in ("update", "delete"):
            # Refused actions still go through the pipeline as failures, so they reach dead-letter.
            item.error = f"loglens stores logs append-only; {action} is not supported"
        elif not index:
            item.error = "no _index in the action and none in the URL"
        if item.error is not None:
            failures[item.record] = item.error  # type: ignore[index]
            values.append(None)
            continue
        try:
            doc = orjson.loads(doc_line)
        except orjson.JSONDecodeError as exc:
            failures[item.record] = f"malformed JSON document: {exc}"  # type: ignore[index]
            values.append(None)
            continue
        if not isinstance(doc, dict):
            values.append(doc)  # the schema names the problem ("must be a JSON object")
            continue
        values.append(map_document(doc, mapping, defaults={"service": index}))
    out.parsed = Parsed(values, failures, lambda k: raws[k].decode("utf-8", errors="replace"))
    return out


def bulk_response(request: BulkRequest, rejections: list[Rejection], took_ms: int) -> dict[str, Any]:
    """The `_bulk` answer: one item per action with status 201 or an error."""
    reasons = {r.index: r.reason for r in rejections}
    items = []
    errors = False
    for item in request.items:
        reason = reasons.get(item.record)  # type: ignore[arg-type]
        if reason is not None:
            errors = True
            kind = "action_request_validation_exception" if item.error else "document_parsing_exception"
            body: dict[str, Any] = {
                "_index": item.index,
                "_id": item.doc_id,
                "status": 400,
                "error": {"type": kind, "reason": reason},
            }
        else:
            body = {
                "_index": item.index,
                "_id": item.doc_id,
                "_version": 1,
                "result": "created",
                "_shards": {"total": 1, "successful": 1, "failed": 0},
                "_seq_no": 0,
                "_primary_term": 1,
                "status": 201,
            }
        items.append({item.action: body})
    return {"took": took_ms, "errors": errors, "items": items}
