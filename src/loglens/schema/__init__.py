"""Compile `log_schema.yaml` into a batched validator + normalizer producing Arrow batches.

The YAML schema is the single authority on validity: it is compiled with fastjsonschema at
start-up (no copy of its rules lives in code). Its `x-loglens-aliases` extension on `level`
drives normalisation, applied before validation. Pure module: no store, no API, so the same
code validates archives on Dask/Ray workers.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastjsonschema
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pa_json
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from loglens import timeparse
from loglens.errors import ConfigError, ConfigIssue
from loglens.models import LOG_ARROW_SCHEMA, SCHEMA_FIELDS, LogRows, Rejection, rows_to_table
from loglens.models import Parsed as Parsed  # re-exported: the type lives in models (crosses stages)
from loglens.models import malformed_json as malformed_json  # re-exported for the decoders
from loglens.schema.fast import FastPlan
from loglens.schema.json_text import NdjsonLines

_CORE_FIELDS = (*SCHEMA_FIELDS, "metadata")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAST_MIN_ROWS = 16  # below this the per-record path is as fast and simpler
_FAST_COLUMNS = (*SCHEMA_FIELDS[1:], "metadata")  # every field but the timestamp, parsed apart


@dataclass(slots=True)
class ValidatedBatch:
    """Accepted logs (an Arrow table, or column lists for small requests) and every rejection."""

    logs: pa.Table | LogRows
    rejections: list[Rejection]

    @property
    def table(self) -> pa.Table:
        """The accepted logs as an Arrow table (LOG_ARROW_SCHEMA)."""
        return self.logs if isinstance(self.logs, pa.Table) else rows_to_table([self.logs])


def load_schema_document(path: str | Path) -> dict[str, Any]:
    """Read a JSON Schema written in YAML; ConfigError (with file and line) when unreadable."""
    path = Path(path)
    try:
        doc = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            [
                ConfigIssue(
                    str(path),
                    None,
                    "",
                    "schema file not found (schemas.log/schemas.anomaly are relative to the config file; "
                    "pass --config PATH or set an absolute path)",
                )
            ]
        ) from None
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            [ConfigIssue(str(path), mark.line + 1 if mark else None, "", f"invalid YAML: {problem}")]
        ) from None
    if not isinstance(doc, dict):
        raise ConfigError([ConfigIssue(str(path), 1, "", "a schema must be a mapping")])
    return doc


def _reason_from(exc: fastjsonschema.JsonSchemaValueException, schema_props: dict[str, Any]) -> str:
    """A short reason naming the field, e.g. 'response_time_ms: must be bigger than or equal to 0'."""
    name = exc.name or "data"
    field = name[5:] if name.startswith("data.") else ("log" if name == "data" else name)
    message = exc.message
    if message.startswith(name + " "):
        message = message[len(name) + 1 :]
    top = field.split(".", 1)[0].split("[", 1)[0]
    if top == "timestamp" and field == "timestamp" and exc.rule in ("anyOf", "format", "oneOf", "type"):
        try:  # say what is wrong with it (no timezone, no such date, ...), not just "invalid"
            timeparse.parse_timestamp(exc.value)
        except timeparse.TimestampError as bad:
            return f"timestamp: {bad}"
    if "cannot be validated by any definition" in message and top in schema_props:
        desc = str(schema_props[top].get("description", "")).split(".")[0]
        message = f"invalid value {_short(exc.value)}" + (f"; expected {desc[0].lower()}{desc[1:]}" if desc else "")
    elif exc.rule == "required":
        missing = [
            f for f in exc.definition.get("required", []) if not isinstance(exc.value, dict) or f not in exc.value
        ]
        return "missing required field" + ("s: " if len(missing) > 1 else ": ") + ", ".join(missing)
    elif exc.rule in ("type", "enum", "minimum", "maximum", "pattern", "minLength", "maxLength"):
        message = f"{message} (got {_short(exc.value)})"
    return f"{field}: {message}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LogSchema:
    """A compiled log schema: `validate()` turns decoded records into an Arrow batch + rejections."""

    def __init__(
        self,
        document: dict[str, Any],
        *,
        allowed_lateness_s: float = 120.0,
        max_future_skew_s: float = 300.0,
        raw_limit: int = 4096,
    ) -> None:
        self.document = document
        self._props: dict[str, Any] = document.get("properties", {})
        level = self._props.get("level", {})
        self.aliases: dict[str, str] = {
            str(k).lower(): str(v) for k, v in (level.get("x-loglens-aliases") or {}).items()
        }
        # fastjsonschema implements draft-07 semantics, which cover every keyword the log schema uses.
        compiled = {k: v for k, v in document.items() if k != "$schema"}
        try:
            self._check = fastjsonschema.compile(compiled, use_default=False)
        except fastjsonschema.JsonSchemaDefinitionException as exc:
            raise ConfigError([ConfigIssue("log schema", None, "", f"invalid JSON Schema: {exc}")]) from None
        self.lateness_us = int(allowed_lateness_s * 1_000_000)
        self.skew_us = int(max_future_skew_s * 1_000_000)
        self.raw_limit = raw_limit
        self._plan = FastPlan.from_schema(document)
        self._arrow_schema = self._plan.arrow_schema() if self._plan is not None else None

    @property
    def has_fast_path(self) -> bool:
        """True when the schema's keywords allow vectorised validation."""
        return self._plan is not None

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> LogSchema:
        """Load and compile the schema at `path` (the file named in config.yaml)."""
        try:
            return cls(load_schema_document(path), **kwargs)
        except ConfigError as exc:  # name the file, not "log schema", in what the operator reads
            raise ConfigError(
                [ConfigIssue(str(path), i.line, i.key, i.message) if i.file == "log schema" else i for i in exc.issues]
            ) from None

    def normalize(self, record: dict[str, Any]) -> None:
        """Apply the schema's normalisations in place (level aliases, case-insensitive)."""
        level = record.get("level")
        if type(level) is str:
            canon = self.aliases.get(level.lower())
            if canon is not None:
                record["level"] = canon

    def check(self, record: Any) -> str | None:
        """Reason the record is invalid, or None. Normalises `record` in place first."""
        if type(record) is not dict:
            kind = "array" if isinstance(record, list) else type(record).__name__
            return f"log: must be a JSON object, got {'null' if record is None else kind}"
        self.normalize(record)
        try:
            self._check(record)
        except fastjsonschema.JsonSchemaValueException as exc:
            return _reason_from(exc, self._props)
        return None

    def truncate_raw(self, raw: str) -> str:
        """Raw text as kept in the dead-letter store (bounded)."""
        if len(raw) <= self.raw_limit:
            return raw
        return raw[: self.raw_limit] + f"…[truncated, {len(raw)} chars]"

    def validate(self, parsed: Parsed, source: str, now_us: int) -> ValidatedBatch:
        """Validate and normalise a decoded request into columns; every failure keeps its reason.

        Batches go through the vectorised fast path first (when the schema allows it); rows it
        does not accept are re-checked one by one for the exact reason.
        """
        n = len(parsed)
        if parsed.is_lazy and parsed.ndjson is not None and self._plan is not None:
            batch = self._validate_ndjson_arrow(parsed, parsed.ndjson, source, now_us)
            if batch is not None:
                return batch
        if self._plan is not None and n >= _FAST_MIN_ROWS:
            result = self._plan.run(parsed.values, now_us, self.skew_us, self.lateness_us)
            if result is not None:
                return self._combine(parsed, *result, source, now_us)
        return self._validate_rows(parsed, range(n), source, now_us)

    def _validate_ndjson_arrow(self, parsed: Parsed, body: bytes, source: str, now_us: int) -> ValidatedBatch | None:
        """Parse NDJSON with pyarrow.json (C++, GIL released) and check the columns; None when the
        body needs the Python path (a line pyarrow can't type, extra fields, odd metadata)."""
        assert self._plan is not None
        try:
            if not body.isascii():  # pyarrow does not reject invalid UTF-8 inside strings; orjson does
                body.decode("utf-8")
            table = pa_json.read_json(
                io.BytesIO(body),
                read_options=pa_json.ReadOptions(use_threads=False, block_size=len(body) + 1),
                parse_options=pa_json.ParseOptions(
                    explicit_schema=self._arrow_schema, unexpected_field_behavior="infer"
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
            return None
        if table.num_rows != len(parsed):
            return None
        result = self._plan.run_arrow(table, now_us, self.skew_us, self.lateness_us, NdjsonLines(body))
        if result is None:
            return None
        return self._combine(parsed, *result, source, now_us)

    def _combine(
        self, parsed: Parsed, cols: dict[str, pa.Array], ok: np.ndarray, source: str, now_us: int
    ) -> ValidatedBatch:
        """Rows the fast path accepted, plus the exact path's verdict on the others."""
        n = len(ok)
        k = int(ok.sum())
        mask = None if k == n else pa.array(ok)

        def accepted(col: pa.Array) -> pa.Array:
            return col if mask is None else col.filter(mask)

        fast = pa.Table.from_arrays(
            [
                accepted(cols["timestamp"]),
                pa.array(np.full(k, now_us, dtype=np.int64)).cast(pa.timestamp("us")),
                *(accepted(cols[c]) for c in _FAST_COLUMNS),
                accepted(cols["late"]),
                _repeated(source, k),
            ],
            schema=LOG_ARROW_SCHEMA,
        )
        if k == n:
            return ValidatedBatch(fast, [])
        slow = self._validate_rows(parsed, np.nonzero(~ok)[0].tolist(), source, now_us)
        return ValidatedBatch(pa.concat_tables([fast, slow.table]), slow.rejections)

    def _validate_rows(self, parsed: Parsed, indices: Iterable[int], source: str, now_us: int) -> ValidatedBatch:
        """The exact per-record path: fastjsonschema on each record, reasons for every failure."""
        ts_col: list[int] = []
        level_col: list[str] = []
        service_col: list[str] = []
        message_col: list[str] = []
        user_col: list[Any] = []
        ip_col: list[Any] = []
        rt_col: list[Any] = []
        trace_col: list[Any] = []
        meta_col: list[Any] = []
        rejections: list[Rejection] = []
        check = self.check
        late_before = now_us - self.lateness_us
        future_after = now_us + self.skew_us
        late_col: list[bool] = []

        value_at = parsed.value_at
        for i in indices:
            rec, reason = value_at(i)
            if reason is None:
                reason = check(rec)
            if reason is None:
                try:
                    ts = timeparse.parse_timestamp(rec["timestamp"])
                except timeparse.TimestampError as exc:
                    reason = f"timestamp: {exc}"
                else:
                    if ts > future_after:
                        reason = (
                            f"timestamp: {(ts - now_us) / 1e6:.0f} s in the future, beyond the allowed clock "
                            f"skew of {self.skew_us / 1e6:.0f} s"
                        )
            if reason is not None:
                rejections.append(Rejection(i, reason, self.truncate_raw(parsed.raw(i)), source))
                continue
            meta = rec.get("metadata")
            if len(rec) > 4:
                unknown = {k: v for k, v in rec.items() if k not in _CORE_FIELDS}
                if unknown:  # unknown top-level fields are kept, not dropped: they join metadata
                    meta = {**(meta or {}), **unknown}
            try:
                meta_text = orjson.dumps(meta).decode() if meta else None
            except TypeError as exc:  # orjson: nesting deeper than 254 levels, or an int beyond 64 bits
                reason = f"metadata: cannot be stored as JSON ({exc}; at most 254 nesting levels and 64-bit integers)"
                rejections.append(Rejection(i, reason, self.truncate_raw(parsed.raw(i)), source))
                continue
            ts_col.append(ts)
            late_col.append(ts < late_before)
            level_col.append(rec["level"])
            service_col.append(rec["service"])
            message_col.append(rec["message"])
            user_col.append(rec.get("user_id"))
            ip_col.append(rec.get("ip_address"))
            rt_col.append(rec.get("response_time_ms"))
            trace_col.append(rec.get("trace_id"))
            meta_col.append(meta_text)

        n = len(ts_col)
        # Column lists, not Arrow: the WAL writer builds one table per group commit (see LogRows).
        rows = LogRows(
            (
                ts_col,
                [now_us] * n,
                level_col,
                service_col,
                message_col,
                user_col,
                ip_col,
                rt_col,
                trace_col,
                meta_col,
                late_col,
                [source] * n,
            )
        )
        return ValidatedBatch(rows, rejections)


def _repeated(text: str, n: int) -> pa.Array:
    """A string column holding `text` n times, built from two buffers (no Python list of n)."""
    data = text.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(data)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data * n)])


def now_us() -> int:
    """Current UTC time in epoch microseconds."""
    delta = datetime.now(UTC) - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def raw_json(value: Any) -> str:
    """JSON text of a decoded value for the dead-letter store; never fails (huge ints, odd types)."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        pass
    try:
        return json.dumps(value, default=str)
    except (ValueError, RecursionError):  # nested beyond Python's recursion limit
        return f"<{type(value).__name__} nested too deeply to keep as text>"


def parse_values(values: Sequence[Any]) -> Parsed:
    """Wrap already-decoded values (e.g. from a protocol adapter) for `LogSchema.validate`."""
    vals = list(values)
    return Parsed(vals, {}, lambda i: raw_json(vals[i]))
