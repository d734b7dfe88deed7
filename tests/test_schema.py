"""The YAML schema decides validity; normalisation, timestamps, skew and lateness."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from loglens.errors import ConfigError
from loglens.ingest.decode import decode_body, decode_json, decode_ndjson, gunzip
from loglens.schema import LogSchema, load_schema_document, parse_values

REPO = Path(__file__).resolve().parents[1]
NOW_US = int(datetime(2026, 11, 23, 10, 40, tzinfo=UTC).timestamp()) * 1_000_000


@pytest.fixture(scope="module")
def schema() -> LogSchema:
    return LogSchema.from_file(REPO / "schemas" / "log_schema.yaml")


def log(**overrides: Any) -> dict[str, Any]:
    base = {"timestamp": "2026-11-23T10:39:00Z", "level": "INFO", "service": "api", "message": "ok"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def reasons(schema: LogSchema, *records: Any) -> list[str | None]:
    batch = schema.validate(parse_values(list(records)), "test", NOW_US)
    by_index = {r.index: r.reason for r in batch.rejections}
    return [by_index.get(i) for i in range(len(records))]


def test_schema_examples_are_valid(schema: LogSchema) -> None:
    doc = load_schema_document(REPO / "schemas" / "log_schema.yaml")
    for example in doc["examples"]:
        assert schema.check(dict(example)) is None


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [("warning", "WARN"), ("Err", "ERROR"), ("CRITICAL", "FATAL"), ("trace", "DEBUG"), ("info", "INFO")],
)
def test_level_aliases_normalise(schema: LogSchema, alias: str, canonical: str) -> None:
    batch = schema.validate(parse_values([log(level=alias)]), "t", NOW_US)
    assert batch.table.column("level").to_pylist() == [canonical]


@pytest.mark.parametrize(
    ("record", "reason_part"),
    [
        (log(level="loud"), "level: must be one of"),
        (log(service=...), "missing required field: service"),
        (log(message=5), "message: must be string"),
        (log(response_time_ms=-1), "response_time_ms: must be bigger than or equal to 0"),
        (log(response_time_ms="fast"), "response_time_ms: must be"),
        (log(ip_address="999.1.1.1"), "ip_address: invalid value '999.1.1.1'"),
        (log(metadata=[1, 2]), "metadata: must be"),
        (log(timestamp="yesterday"), "timestamp:"),
        (log(timestamp=True), "timestamp:"),
        (log(timestamp="2026-11-23T10:39:00"), "timestamp: no timezone"),  # RFC 3339 needs an offset
        (log(service=""), "service: must be longer than or equal to 1"),
        ([1, 2], "log: must be a JSON object, got array"),
        ("text", "log: must be a JSON object, got str"),
        (None, "log: must be a JSON object, got null"),
    ],
)
def test_invalid_records_get_a_reason(schema: LogSchema, record: Any, reason_part: str) -> None:
    (reason,) = reasons(schema, record)
    assert reason is not None and reason_part in reason


def test_valid_optional_fields_and_ipv6(schema: LogSchema) -> None:
    rec = log(user_id="u1", ip_address="2001:db8::1", response_time_ms=0, trace_id="abc", metadata={"a": {"b": 1}})
    assert reasons(schema, rec) == [None]


@pytest.mark.parametrize(
    ("ts", "expected_us"),
    [
        ("2026-11-23T10:39:00Z", NOW_US - 60_000_000),
        ("2026-11-23T11:39:00+01:00", NOW_US - 60_000_000),
        ("2026-11-23T10:39:00.250Z", NOW_US - 59_750_000),
        (NOW_US // 1_000_000 - 60, NOW_US - 60_000_000),  # epoch seconds
        ((NOW_US // 1_000_000 - 60) * 1000, NOW_US - 60_000_000),  # epoch milliseconds
        (NOW_US / 1e6 - 59.5, NOW_US - 59_500_000),
    ],
)
def test_timestamp_forms(schema: LogSchema, ts: Any, expected_us: int) -> None:
    batch = schema.validate(parse_values([log(timestamp=ts)]), "t", NOW_US)
    assert batch.rejections == []
    assert batch.table.column("ts").cast("int64").to_pylist() == [expected_us]


def test_future_beyond_skew_is_rejected_and_within_is_accepted(schema: LogSchema) -> None:
    near = NOW_US / 1e6 + 299
    far = NOW_US / 1e6 + 301
    r = reasons(schema, log(timestamp=near), log(timestamp=far))
    assert r[0] is None
    assert r[1] is not None and "in the future" in r[1]


def test_late_logs_are_flagged_not_rejected(schema: LogSchema) -> None:
    batch = schema.validate(
        parse_values([log(timestamp=NOW_US / 1e6 - 119), log(timestamp=NOW_US / 1e6 - 121)]), "t", NOW_US
    )
    assert batch.rejections == []
    assert batch.table.column("late").to_pylist() == [False, True]


def test_unknown_fields_are_kept_in_metadata(schema: LogSchema) -> None:
    batch = schema.validate(parse_values([log(http_status=502, metadata={"region": "eu"})]), "t", NOW_US)
    assert batch.table.column("metadata").to_pylist() == ['{"region":"eu","http_status":502}']


def test_raw_is_truncated_in_dead_letter() -> None:
    small = LogSchema.from_file(REPO / "schemas" / "log_schema.yaml", raw_limit=10)
    batch = small.validate(decode_ndjson(b'{"level": "x", "padding": "' + b"y" * 100 + b'"}'), "t", NOW_US)
    assert batch.rejections[0].raw.startswith('{"level": ')
    assert "truncated" in batch.rejections[0].raw and len(batch.rejections[0].raw) < 60


def test_schema_file_errors() -> None:
    with pytest.raises(ConfigError, match="schema file not found"):
        LogSchema.from_file(REPO / "nope.yaml")
    with pytest.raises(ConfigError, match="invalid JSON Schema"):
        LogSchema({"type": 5})


def test_schema_decides_validity(tmp_path: Path) -> None:
    # A stricter schema file, not code, makes user_id required.
    doc = load_schema_document(REPO / "schemas" / "log_schema.yaml")
    doc["required"] = [*doc["required"], "user_id"]
    strict = LogSchema(doc)
    (reason,) = reasons(strict, log())
    assert reason == "missing required field: user_id"


# ---- decoding ----------------------------------------------------------------------------


def test_ndjson_bad_line_rejects_only_that_line(schema: LogSchema) -> None:
    body = b'{"timestamp": "2026-11-23T10:39:00Z", "level": "info", "service": "a", "message": "m"}\r\n{oops\n\n'
    parsed = decode_ndjson(b"\xef\xbb\xbf" + body)
    batch = schema.validate(parsed, "t", NOW_US)
    assert batch.table.num_rows == 1
    assert batch.rejections[0].index == 1 and batch.rejections[0].raw == "{oops"


def test_json_body_forms() -> None:
    assert len(decode_json(b'{"a": 1}')) == 1
    assert len(decode_json(b'[{"a": 1}, {"b": 2}]')) == 2
    assert len(decode_json(b'{"a": 1}\n{"b": 2}\n')) == 2  # NDJSON sent as application/json
    bad = decode_json(b"[1, 2")
    assert bad.failures[0].startswith("malformed JSON") and bad.raw(0) == "[1, 2"


def test_gzip_limits() -> None:
    import gzip

    from loglens.errors import ParseError, PayloadTooLarge

    assert gunzip(gzip.compress(b"x" * 100), 100) == b"x" * 100
    with pytest.raises(PayloadTooLarge):
        gunzip(gzip.compress(b"x" * 1000), 100)
    with pytest.raises(ParseError, match="truncated"):
        gunzip(gzip.compress(b"x" * 1000)[:-8], 10_000)
    with pytest.raises(ParseError, match="Content-Encoding"):
        decode_body(b"", "application/json", "br", 100)
