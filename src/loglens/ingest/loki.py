"""Loki push API (`POST /loki/api/v1/push`, JSON, optionally gzip) → schema records.

Both JSON shapes are read: the current `{"streams":[{"stream":{labels},"values":[[ns, line,
{structured metadata}?]]}]}` and the legacy `{"streams":[{"labels":"{a=\\"b\\"}","entries":
[{"ts":rfc3339,"line":...}]}]}`. Stream labels give the defaults: `service`/`service_name`/
`job`/`app` → service and `level`/`detected_level`/`severity` → level (`protocols.mapping.loki`);
the other labels go to `metadata.labels`. A line that is a JSON object is mapped field by
field (its own fields win over labels); any other line is the message. The entry time is the
timestamp unless the JSON line has one.

Snappy-compressed protobuf (Promtail's default) is answered 415: send JSON instead
(Promtail/Grafana Alloy: `loki.write` with the JSON encoding, or any client's JSON mode).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from loglens.config import FieldMapping
from loglens.errors import ParseError
from loglens.ingest.mapping import map_line
from loglens.models import Parsed, Rejection

PROTOBUF_UNSUPPORTED = (
    "loglens accepts Loki pushes as JSON (Content-Type: application/json, optionally gzip); "
    "snappy-compressed protobuf is not supported — configure the client's JSON encoding"
)
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


def decode_push(body: bytes, mapping: FieldMapping) -> tuple[Parsed, list[str]]:
    """Parsed records plus each record's stream label text (for the 400 listing)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"malformed Loki push JSON: {exc}") from None
    streams = doc.get("streams") if isinstance(doc, dict) else None
    if not isinstance(streams, list):
        raise ParseError('a Loki push body must be an object with a "streams" array')
    values: list[Any] = []
    failures: dict[int, str] = {}
    raws: list[str] = []
    stream_names: list[str] = []
    for stream in streams:
        if not isinstance(stream, dict):
            raise ParseError("each element of streams must be an object")
        labels, entries = _entries(stream)
        defaults, rest = _label_defaults(labels, mapping)
        label_text = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        for ts, line, structured in entries:
            idx = len(values)
            raws.append(orjson.dumps([ts, line], default=str).decode())
            stream_names.append(label_text)
            if not isinstance(line, str):
                failures[idx] = "entry must be [timestamp, line] with a string line"
                values.append(None)
                continue
            try:
                when = _iso_from_ns(ts) if str(ts).isdigit() else datetime.fromisoformat(str(ts)).isoformat()
            except (ValueError, OverflowError, TypeError):
                failures[idx] = f"timestamp: not nanoseconds since the epoch (got {str(ts)[:40]!r})"
                values.append(None)
                continue
            value: Any = line
            if line.startswith("{"):
                try:
                    value = orjson.loads(line)
                except orjson.JSONDecodeError:
                    value = line  # not JSON after all: the whole line is the message
            meta: dict[str, Any] = {}
            if rest:
                meta["labels"] = rest
            if isinstance(structured, dict) and structured:
                meta["structured_metadata"] = structured
            record = map_line(value, mapping, defaults={**defaults, "timestamp": when})
            if meta:
                existing = record.get("metadata")
                record["metadata"] = {**meta, **existing} if isinstance(existing, dict) else meta
            values.append(record)
    return Parsed(values, failures, lambda i: raws[i]), stream_names


def ignored_message(rejected: int, rejections: list[Rejection], total: int, streams: list[str]) -> str:
    """Loki-style 400 text: how many entries were ignored and why, one listed entry per line."""
    lines = [f"{rejected} of {total} entries ignored:"]
    for r in rejections:
        lines.append(f"stream {streams[r.index]} entry {r.index}: {r.reason}")
    if rejected > len(rejections):
        lines.append(f"... and {rejected - len(rejections)} more (see GET /api/v1/dead-letter?source=loki)")
    return "\n".join(lines) + "\n"
