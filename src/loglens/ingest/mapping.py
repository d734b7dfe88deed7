"""Map a decoded input document onto the log schema, driven by a `FieldMapping` from config.

Every protocol adapter ends here: it builds a plain dict per record, and `map_document` picks
each schema field from the first candidate key that is present. Whatever is not mapped stays
in the record, and the schema moves unknown top-level keys into `metadata` — nothing is
dropped. Validity is decided by the schema, not here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from loglens.config import FieldMapping
from loglens.models import SCHEMA_FIELDS

_MISSING = object()


def lookup(doc: dict[str, Any], name: str) -> Any:
    """Value of `name` in `doc`: a flat key first, then a dotted path into nested objects."""
    value = doc.get(name, _MISSING)
    if value is not _MISSING or "." not in name:
        return value
    node: Any = doc
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _pop_path(doc: dict[str, Any], name: str) -> None:
    """Remove a mapped source key so its value is not stored twice (flat key or nested leaf)."""
    if name in doc:
        del doc[name]
        return
    parts = name.split(".")
    node: Any = doc
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(parts[-1], None)
        if not node and len(parts) > 1:
            _pop_path(doc, ".".join(parts[:-1]))


_PLANS: dict[int, tuple[FieldMapping, tuple[tuple[str, tuple[str, ...]], ...]]] = {}


def _plan(mapping: FieldMapping) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(field, candidates) pairs of a mapping, built once per mapping object (this runs per record)."""
    cached = _PLANS.get(id(mapping))
    if cached is not None and cached[0] is mapping:
        return cached[1]
    plan = tuple((field, tuple(getattr(mapping, field))) for field in SCHEMA_FIELDS)
    if len(_PLANS) > 64:  # mappings change only on reload: keep the cache small
        _PLANS.clear()
    _PLANS[id(mapping)] = (mapping, plan)
    return plan


def map_document(
    doc: dict[str, Any],
    mapping: FieldMapping,
    fixed: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A schema record from `doc`: `fixed` values win, then the mapping's first present candidate,
    then `defaults` (e.g. stream labels), then the mapping's default level/service.

    `doc` is consumed (mapped keys are removed from it); the remaining keys stay as extra
    fields, which the schema keeps in `metadata`.
    """
    out: dict[str, Any] = dict(fixed) if fixed else {}
    get = doc.get
    for field, candidates in _plan(mapping):
        if field in out:
            if field in candidates:  # a protocol-given value wins; drop the duplicate source key
                doc.pop(field, None)
            continue
        for name in candidates:
            # `lookup` inlined for flat keys: this loop runs for every field of every record
            value = get(name, _MISSING)
            flat = value is not _MISSING
            if not flat and "." in name:
                value = lookup(doc, name)
            if value is not _MISSING and value is not None and not isinstance(value, dict):
                out[field] = value
                if flat:
                    del doc[name]
                else:
                    _pop_path(doc, name)
                break
    if defaults:
        for key, value in defaults.items():
            if key not in out and value is not None:
                out[key] = value
    if "level" not in out and mapping.default_level is not None:
        out["level"] = mapping.default_level
    if "service" not in out and mapping.default_service is not None:
        out["service"] = mapping.default_service
    meta = doc.pop("metadata", None)
    if isinstance(meta, dict):
        out["metadata"] = {**meta, **out.get("metadata", {})}
    elif meta is not None:
        doc["metadata_value"] = meta
    for key, value in doc.items():
        if key not in out:
            out[key] = value
        else:  # e.g. {"service": {"version": ..}} left after service.name was mapped: keep it
            out["metadata"] = {**(out.get("metadata") or {}), key: value}
    return out


@lru_cache(maxsize=4096)
def _second_prefix(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def iso_from_epoch(seconds: int, nanos: int = 0) -> str:
    """RFC 3339 UTC text of an epoch time, to the microsecond (truncated, as datetime does).

    Wire protocols give event times as (seconds, nanoseconds); a batch shares few distinct
    seconds, so the date part is cached. Raises ValueError/OverflowError/OSError out of range.
    """
    if not 0 <= nanos < 1_000_000_000:
        raise ValueError(f"nanoseconds {nanos} out of range")
    return f"{_second_prefix(seconds)}.{nanos // 1000:06d}+00:00"


def map_line(
    value: Any,
    mapping: FieldMapping,
    fixed: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Map one decoded line: a JSON object is mapped field by field; anything else is the message."""
    if isinstance(value, dict):
        return map_document(value, mapping, fixed, defaults)
    text = value if isinstance(value, str) else str(value)
    return map_document({}, mapping, {**(fixed or {}), "message": text}, defaults)
