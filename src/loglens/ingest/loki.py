"""Loki push API (`POST /loki/api/v1/push`, JSON, optionally gzip) → schema records.

Both JSON shapes are read: the current `{"streams":[{"stream":{labels},"values":[[ns, line,
{structured metadata}?]]}]}` and the legacy `{"streams":[{"labels":"{a=\\"b\\"}","entries":
[{"ts":rfc3339,"line":...}]}]}`. Stream labels give the defaults: `service`/`service_name`/
`job`/`app` → service and `level`/`detected_level`/`severity` → level (`protocols.mapping.loki`);
the other labels go to `metadata.labels`. A line that is a JSON object is mapped field by
field (its own fields win over labels); any other line is the message. The entry time is the
timestamp unless the JSON line has one.

The snappy-compressed protobuf body (`Content-Type: application/x-protobuf`, the default of
Promtail, Grafana Alloy and winston-loki; see `loki_proto`) is mapped the same way, with each
entry's structured metadata pairs as `metadata.structured_metadata`. A tenant header
(`X-Scope-OrgID`) is kept as `metadata.tenant`: loglens has one tenant, but the value is not lost.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from loglens.config import FieldMapping
from loglens.errors import ParseError
from loglens.ingest import loki_proto
from loglens.ingest.mapping import iso_from_epoch, map_document
from loglens.models import Parsed, Rejection

_LABEL_RE = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=~?\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_label_string(text: str) -> dict[str, str]:
    """Labels from Prometheus notation, `{job="api", level="error"}`."""
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        m = _LABEL_RE.match(body, pos)
        if m is None:
            raise ValueError(f"invalid label set {text[:80]!r}")
        labels[m.group(1)] = re.sub(r"\\(.)", r"\1", m.group(2))
        pos = m.end()
    return labels


def _iso_from_ns(value: Any) -> str:
    ns = int(value)
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000).isoformat()


def _label_defaults(labels: dict[str, str], mapping: FieldMapping) -> tuple[dict[str, Any], dict[str, str]]:
    """(service/level defaults, remaining labels) for a stream."""
    rest = dict(labels)
    defaults: dict[str, Any] = {}
    for field in ("service", "level"):
        for name in getattr(mapping, field):
            if rest.get(name):
                defaults[field] = rest.pop(name)
                break
    return defaults, rest


def _entries(stream: dict[str, Any]) -> tuple[dict[str, str], list[tuple[Any, Any, Any]]]:
    """Labels and (time, line, structured metadata) triples of either JSON shape."""
    if "stream" in stream or "values" in stream:
        labels = stream.get("stream")
        labels = {} if labels is None else labels
        if not isinstance(labels, dict):
            raise ParseError("streams[].stream must be an object of labels")
        values = stream.get("values")
        values = [] if values is None else values
        if not isinstance(values, list):
            raise ParseError("streams[].values must be an array of [timestamp, line] pairs")
        entries = []
        for v in values:
            if isinstance(v, list) and len(v) in (2, 3):
                entries.append((v[0], v[1], v[2] if len(v) == 3 else None))
            else:
                entries.append((v, None, None))  # not a pair: rejected per entry below
        return {str(k): str(v) for k, v in labels.items()}, entries
    try:
        labels = parse_label_string(str(stream.get("labels", "")))
    except ValueError as exc:
        raise ParseError(str(exc)) from None
    raw_entries = stream.get("entries")
    raw_entries = [] if raw_entries is None else raw_entries
    if not isinstance(raw_entries, list):
        raise ParseError("streams[].entries must be an array")
    out = []
    for e in raw_entries:
        if isinstance(e, dict):
            out.append((e.get("ts", e.get("timestamp")), e.get("line"), None))
        else:
            out.append((e, None, None))
    return labels, out


class _Collector:
    """Records of one push, built the same way whichever encoding the push used."""

    def __init__(self, mapping: FieldMapping, tenant: str | None) -> None:
        self.mapping = mapping
        self.tenant = tenant
        self.values: list[Any] = []
        self.failures: dict[int, str] = {}
        self.raws: list[tuple[Any, Any]] = []  # (time, line) as sent, rendered for dead letters on demand
        self.stream_names: list[str] = []

    def stream(self, labels: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
        """(field defaults, metadata base, label text) of one stream."""
        defaults, rest = _label_defaults(labels, self.mapping)
        meta: dict[str, Any] = {}
        if rest:
            meta["labels"] = rest
        if self.tenant:
            meta["tenant"] = self.tenant
        label_text = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        return defaults, meta or None, label_text

    def fail(self, ts: Any, line: Any, label_text: str, reason: str) -> None:
        """An entry that cannot become a record: it goes to dead-letter with `reason`."""
        self.failures[len(self.values)] = reason
        self.values.append(None)
        self.raws.append((ts, line))
        self.stream_names.append(label_text)

    def add(
        self,
        ts: Any,
        when: str,
        line: str,
        structured: dict[str, Any] | None,
        defaults: dict[str, Any],
        meta: dict[str, Any] | None,
        label_text: str,
    ) -> None:
        """Map one entry: a JSON-object line field by field (its fields win), any other line is the message."""
        self.raws.append((ts, line))
        self.stream_names.append(label_text)
        if structured:
            meta = {**(meta or {}), "structured_metadata": structured}
        if line.startswith("{"):
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                value = line  # not JSON after all: the whole line is the message
            if isinstance(value, dict):
                record = map_document(value, self.mapping, defaults={**defaults, "timestamp": when})
                if meta:
                    existing = record.get("metadata")
                    record["metadata"] = {**meta, **existing} if isinstance(existing, dict) else meta
                self.values.append(record)
                return
        # The common case (a plain text line), built directly: what map_line gives for a string.
        record = {"message": line, **defaults, "timestamp": when}
        if "level" not in record and self.mapping.default_level is not None:
            record["level"] = self.mapping.default_level
        if "service" not in record and self.mapping.default_service is not None:
            record["service"] = self.mapping.default_service
        if meta:
            record["metadata"] = meta
        self.values.append(record)

    def parsed(self) -> tuple[Parsed, list[str]]:
        """The `Parsed` records plus each record's stream label text (for the 400 listing)."""
        raws = self.raws

        def raw(i: int) -> str:
            try:
                return orjson.dumps(raws[i], default=str).decode()
            except TypeError:  # e.g. an integer beyond 64 bits in a JSON push
                return repr(raws[i])

        return Parsed(self.values, self.failures, raw), self.stream_names


def decode_push(body: bytes, mapping: FieldMapping, tenant: str | None = None) -> tuple[Parsed, list[str]]:
    """Parsed records of a JSON push plus each record's stream label text (for the 400 listing)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"malformed Loki push JSON: {exc}") from None
    streams = doc.get("streams") if isinstance(doc, dict) else None
    if not isinstance(streams, list):
        raise ParseError('a Loki push body must be an object with a "streams" array')
    out = _Collector(mapping, tenant)
    for stream in streams:
        if not isinstance(stream, dict):
            raise ParseError("each element of streams must be an object")
        labels, entries = _entries(stream)
        defaults, meta, label_text = out.stream(labels)
        for ts, line, structured in entries:
            if not isinstance(line, str):
                out.fail(ts, line, label_text, "entry must be [timestamp, line] with a string line")
                continue
            try:
                when = _iso_from_ns(ts) if str(ts).isdigit() else datetime.fromisoformat(str(ts)).isoformat()
            except (ValueError, OverflowError, TypeError):
                reason = f"timestamp: not nanoseconds since the epoch (got {str(ts)[:40]!r})"
                out.fail(ts, line, label_text, reason)
                continue
            sm = structured if isinstance(structured, dict) and structured else None
            out.add(ts, when, line, sm, defaults, meta, label_text)
    return out.parsed()


def decode_protobuf(
    body: bytes, mapping: FieldMapping, limit: int, tenant: str | None = None
) -> tuple[Parsed, list[str]]:
    """Parsed records of a snappy-compressed protobuf push (Promtail, Alloy, winston-loki), mapped
    exactly like the JSON push; structured metadata pairs become `metadata.structured_metadata`."""
    streams = loki_proto.parse_push_request(loki_proto.unsnappy(body, limit))
    out = _Collector(mapping, tenant)
    for stream in streams:
        try:
            labels = parse_label_string(stream.labels)
        except ValueError as exc:
            raise ParseError(str(exc)) from None
        defaults, meta, label_text = out.stream(labels)
        for entry in stream.entries:
            ts = entry.timestamp
            seconds, nanos = ts.seconds, ts.nanos
            ns = str(seconds * 1_000_000_000 + nanos)  # as the JSON push writes it, for dead letters
            try:
                when = iso_from_epoch(seconds, nanos)
            except (ValueError, OverflowError, OSError):
                out.fail(ns, entry.line, label_text, f"timestamp: out of range ({seconds} s)")
                continue
            sm = entry.structuredMetadata
            structured = {p.name: p.value for p in sm} if sm else None
            out.add(ns, when, entry.line, structured, defaults, meta, label_text)
    return out.parsed()


def ignored_message(rejected: int, rejections: list[Rejection], total: int, streams: list[str]) -> str:
    """Loki-style 400 text: how many entries were ignored and why, one listed entry per line."""
    lines = [f"{rejected} of {total} entries ignored:"]
    for r in rejections:
        lines.append(f"stream {streams[r.index]} entry {r.index}: {r.reason}")
    if rejected > len(rejections):
        lines.append(f"... and {rejected - len(rejections)} more (see GET /api/v1/dead-letter?source=loki)")
    return "\n".join(lines) + "\n"
