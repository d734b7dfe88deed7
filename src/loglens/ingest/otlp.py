"""OTLP/HTTP logs: decode `ExportLogsServiceRequest` (protobuf or JSON) into schema records.

Mapping (defaults; the attribute names are `protocols.mapping.otlp` in config):
resource `service.name` → service; severityNumber (or severityText) → level; body → message
(non-string bodies as JSON text); timeUnixNano, else observedTimeUnixNano, else arrival → timestamp;
traceId → trace_id (hex); attributes named in the mapping → user_id / ip_address /
response_time_ms; every other attribute → metadata, with the resource attributes under
`resource`, the scope under `otel.scope`, and spanId / flags / severityText kept too.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from loglens.config import FieldMapping
from loglens.errors import ParseError
from loglens.models import Parsed

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# OTLP severity numbers 1-24 in bands of four: TRACE, DEBUG, INFO, WARN, ERROR, FATAL.
_SEVERITY_BANDS = ("DEBUG", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


def content_kind(content_type: str | None) -> str | None:
    """PROTOBUF or JSON for a request Content-Type, or None when it is neither."""
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype in ("application/x-protobuf", "application/protobuf", "application/vnd.google.protobuf"):
        return PROTOBUF
    if ctype in ("application/json", ""):
        return JSON
    return None


def _hex_to_b64(value: Any, name: str) -> Any:
    """OTLP/JSON writes trace and span ids as hex, protobuf's JSON mapping wants base64."""
    if not isinstance(value, str) or not value:
        return value
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        raise ParseError(f"{name} must be a hex string (got {value[:40]!r})") from None


def _list(node: Any, *keys: str) -> list[Any]:
    """The list under the first present key of a dict (anything else: empty, ParseDict judges it)."""
    if not isinstance(node, dict):
        return []
    for key in keys:
        if key in node:
            value = node[key]
            return value if isinstance(value, list) else []
    return []


def _fix_json_ids(doc: Any) -> None:
    if not isinstance(doc, dict):
        raise ParseError("OTLP/JSON body must be an object with resourceLogs")
    for rl in _list(doc, "resourceLogs", "resource_logs"):
        for sl in _list(rl, "scopeLogs", "scope_logs"):
            for rec in _list(sl, "logRecords", "log_records"):
                if isinstance(rec, dict):
                    for key in ("traceId", "trace_id", "spanId", "span_id"):
                        if key in rec:
                            rec[key] = _hex_to_b64(rec[key], key)


def decode_request(body: bytes, kind: str) -> ExportLogsServiceRequest:
    """Decode an export request; ParseError (→ 400) when the body is not a valid request."""
    request = ExportLogsServiceRequest()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise ParseError(f"undecodable OTLP protobuf body: {exc}") from None
        return request
    try:
        doc = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"malformed OTLP/JSON body: {exc}") from None
    _fix_json_ids(doc)
    try:
        json_format.ParseDict(doc, request, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise ParseError(f"OTLP/JSON body does not match ExportLogsServiceRequest: {exc}") from None
    return request


def any_value(value: AnyValue) -> Any:
    """A plain Python value for an OTLP AnyValue (nested arrays and key-value lists included)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def attributes(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP attributes as a dict."""
    return {kv.key: any_value(kv.value) for kv in kvs}


def severity_level(number: int, text: str, default: str | None) -> str | None:
    """The schema level for an OTLP severity; the text is used when the number is unset."""
    if 1 <= number <= 24:
        return _SEVERITY_BANDS[(number - 1) // 4]
    return text or default


def _iso_from_nanos(ns: int) -> str:
    """RFC 3339 with microseconds."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000).isoformat()


def _record_dict(
    rec: LogRecord, service: Any, resource: dict[str, Any], scope: str, mapping: FieldMapping, now_ns: int
) -> dict[str, Any]:
    attrs = attributes(rec.attributes)
    out: dict[str, Any] = {}
    for field in ("user_id", "ip_address", "response_time_ms", "trace_id"):
        for name in getattr(mapping, field):
            if attrs.get(name) is not None:
                out[field] = attrs.pop(name)
                break
    if service is None:
        for name in mapping.service:
            if attrs.get(name) is not None:
                service = attrs.pop(name)
                break
    service = service if service is not None else mapping.default_service
    if service is not None:
        out["service"] = service
    level = severity_level(rec.severity_number, rec.severity_text, mapping.default_level)
    if level is not None:
        out["level"] = level
    body = any_value(rec.body)
    out["message"] = body if isinstance(body, str) else ("" if body is None else orjson.dumps(body).decode())
    out["timestamp"] = _iso_from_nanos(rec.time_unix_nano or rec.observed_time_unix_nano or now_ns)
    if rec.trace_id and "trace_id" not in out:
        out["trace_id"] = rec.trace_id.hex()
    meta = attrs
    if rec.span_id:
        meta["span_id"] = rec.span_id.hex()
    if rec.severity_text:
        meta["severity_text"] = rec.severity_text
    if resource:
        meta["resource"] = resource
    if scope:
        meta["otel.scope"] = scope
    if rec.event_name:
        meta["event_name"] = rec.event_name
    if meta:
        out["metadata"] = meta
    return out


def to_parsed(request: ExportLogsServiceRequest, mapping: FieldMapping, now_ns: int) -> Parsed:
    """Every log record of the request as a schema record (the schema decides validity)."""
    values: list[Any] = []
    protos: list[LogRecord] = []
    for rl in request.resource_logs:
        resource = attributes(rl.resource.attributes)
        service = resource.pop("service.name", None)
        for sl in rl.scope_logs:
            scope = sl.scope.name
            for rec in sl.log_records:
                protos.append(rec)
                # fixed64 nanoseconds end in 2554, so every time converts; the schema judges skew.
                values.append(_record_dict(rec, service, resource.copy(), scope, mapping, now_ns))

    def raw(i: int) -> str:
        return str(json_format.MessageToJson(protos[i], indent=None))

    return Parsed(values, {}, raw)


def encode_response(rejected: int, message: str, kind: str) -> bytes:
    """ExportLogsServiceResponse: empty on full success, partialSuccess when records were rejected."""
    response = ExportLogsServiceResponse()
    if rejected:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = message
    if kind == PROTOBUF:
        return bytes(response.SerializeToString())
    return str(json_format.MessageToJson(response, indent=None)).encode()


def encode_status(code: int, message: str, kind: str) -> bytes:
    """A google.rpc.Status body (code + message), the OTLP error response, in the request's encoding."""
    if kind == JSON:
        return orjson.dumps({"code": code, "message": message})
    msg = message.encode()
    # Status has field 1 (int32 code) and 2 (string message); encoded by hand so no extra dependency.
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(msg)) + msg


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def looks_binary(body: bytes) -> bool:
    """True when a body would not survive as text in the dead-letter store."""
    try:
        body[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def dead_letter_text(body: bytes) -> str:
    """Raw text kept for an undecodable body: base64 for binary so nothing is mangled."""
    if looks_binary(body):
        return "base64:" + binascii.b2a_base64(body[:65536], newline=False).decode()
    return body.decode("utf-8", errors="replace")
