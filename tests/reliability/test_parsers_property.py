"""Property tests on every parser: whatever bytes arrive, no exception escapes except the
documented ParseError/PayloadTooLarge (→ 400/413), every record is accepted or rejected with a
reason, and every rejected record reaches the dead-letter store with that reason.
"""

from __future__ import annotations

import gzip
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loglens.config import MappingsConfig
from loglens.errors import ParseError, PayloadTooLarge
from loglens.ingest import es_bulk, loki, otlp, syslog
from loglens.ingest.decode import decode_body
from loglens.schema import LogSchema, Parsed, now_us, parse_values
from loglens.store import Store

REPO = Path(__file__).resolve().parents[2]
SCHEMA = LogSchema.from_file(REPO / "schemas" / "log_schema.yaml")
MAPPINGS = MappingsConfig()
LIMIT = 1 << 20
FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)

# values a field may take: well-formed ones and every kind of wrong one
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
_json = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_timestamp = st.one_of(
    st.floats(min_value=0, max_value=4e9),
    st.integers(min_value=-10, max_value=10**15),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.sampled_from(["0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-13-40T99:00:00Z", "yesterday", ""]),
    _json,
)
_record = st.fixed_dictionaries(
    {},
    optional={
        "timestamp": _timestamp,
        "level": st.sampled_from(["INFO", "error", "Warning", "crit", "BOGUS", ""]) | _json,
        "service": st.sampled_from(["api", "a/b:c", "", "-bad", "x" * 200]) | _json,
        "message": st.text(max_size=50) | _json,
        "user_id": st.none() | st.text(max_size=10) | _json,
        "ip_address": st.sampled_from(["10.0.0.1", "::1", "999.1.1.1", "fe80::1%eth0"]) | _json,
        "response_time_ms": st.floats(allow_nan=True, allow_infinity=True) | _json,
        "trace_id": st.none() | st.text(max_size=10) | _json,
        "metadata": st.none() | st.dictionaries(st.text(max_size=5), _json, max_size=3) | _json,
        "extra": _json,
    },
)
_value = st.one_of(_record, _json)


def _check_batch(parsed: Parsed) -> Any:
    """Validate; accepted + rejected = records; every rejection has a reason and raw text."""
    batch = SCHEMA.validate(parsed, "prop", now_us())
    assert batch.table.num_rows + len(batch.rejections) == len(parsed)
    indices = [r.index for r in batch.rejections]
    assert len(set(indices)) == len(indices) and all(0 <= i < len(parsed) for i in indices)
    for r in batch.rejections:
        assert r.reason and isinstance(r.reason, str)
        assert isinstance(r.raw, str) and len(r.raw) <= SCHEMA.raw_limit + 40
    rts = batch.table.column("response_time_ms").to_pylist()
    assert all(v is None or (math.isfinite(v) and v >= 0) for v in rts)  # no NaN/inf/negative stored
    return batch


@FAST
@given(values=st.lists(_value, max_size=40))
def test_schema_validate_never_raises_and_accounts_for_every_record(values: list[Any]) -> None:
    _check_batch(parse_values(values))


@FAST
@given(
    body=st.binary(max_size=600),
    ctype=st.sampled_from(["application/json", "application/x-ndjson", None]),
    gz=st.booleans(),
)
def test_decode_any_bytes(body: bytes, ctype: str | None, gz: bool) -> None:
    payload = gzip.compress(body) if gz else body
    try:
        parsed = decode_body(payload, ctype, "gzip" if gz else None, LIMIT)
    except (ParseError, PayloadTooLarge) as exc:  # documented: the whole body is one dead letter
        assert str(exc)
        return
    _check_batch(parsed)


@FAST
@given(
    values=st.lists(_value, min_size=1, max_size=30),
    ndjson=st.booleans(),
    crlf=st.booleans(),
    bom=st.booleans(),
    garbage=st.lists(st.binary(min_size=1, max_size=20), max_size=3),
)
def test_decode_json_and_ndjson_bodies(
    values: list[Any], ndjson: bool, crlf: bool, bom: bool, garbage: list[bytes]
) -> None:
    encoded = [orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS) if _encodable(v) else b"{bad" for v in values]
    if ndjson:
        sep = b"\r\n" if crlf else b"\n"
        body = sep.join(encoded + [g.replace(b"\n", b" ") for g in garbage])
    else:
        body = b"[" + b",".join(encoded) + b"]"
    if bom:
        body = b"\xef\xbb\xbf" + body
    parsed = decode_body(body, "application/x-ndjson" if ndjson else "application/json", None, LIMIT)
    _check_batch(parsed)
    if ndjson:
        assert len(parsed) >= len(values)  # every line is a record: none silently dropped


def _encodable(v: Any) -> bool:
    try:
        orjson.dumps(v)
    except TypeError:  # NaN is encoded as null by orjson; huge ints are not encodable
        return False
    return True


@FAST
@given(
    text=st.text(max_size=200)
    | st.builds(
        lambda pri, rest: f"<{pri}>1 2026-01-01T00:00:00Z host app - - - {rest}",
        st.integers(0, 300),
        st.text(max_size=80),
    )
)
def test_syslog_parse_message_raises_only_its_format_error(text: str) -> None:
    try:
        record = syslog.parse_message(text, MAPPINGS.syslog, datetime.now(UTC))
    except syslog.SyslogFormatError as exc:
        assert str(exc)
        return
    _check_batch(parse_values([record]))


@FAST
@given(body=st.binary(max_size=300), kind=st.sampled_from([otlp.PROTOBUF, "json"]))
def test_otlp_decode_any_bytes(body: bytes, kind: str) -> None:
    try:
        request = otlp.decode_request(body, kind)
    except ParseError:
        return
    _check_batch(otlp.to_parsed(request, MAPPINGS.otlp, now_us() * 1000))


@FAST
@given(doc=_json)
def test_otlp_json_documents(doc: Any) -> None:
    body = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [doc]}]}]}) if _encodable(doc) else b"{}"
    try:
        request = otlp.decode_request(body, "json")
    except ParseError:
        return
    _check_batch(otlp.to_parsed(request, MAPPINGS.otlp, now_us() * 1000))


@FAST
@given(body=st.binary(max_size=300) | _json.filter(_encodable).map(lambda d: orjson.dumps({"streams": [d]})))
def test_loki_push_any_body(body: bytes) -> None:
    try:
        parsed, _streams = loki.decode_push(body, MAPPINGS.loki)
    except ParseError:
        return
    _check_batch(parsed)


@FAST
@given(lines=st.lists(st.binary(max_size=40) | _json.filter(_encodable).map(orjson.dumps), max_size=6))
def test_es_bulk_any_body(lines: list[bytes]) -> None:
    body = b"\n".join(ln.replace(b"\n", b" ") for ln in lines)
    try:
        request = es_bulk.parse_bulk(body, "logs", MAPPINGS.es_bulk)
    except ParseError:
        return
    _check_batch(request.parsed)


def test_every_rejection_reaches_dead_letter_with_its_reason(tmp_path: Path) -> None:
    """Generated batches committed to a real store: each rejection is one dead-letter row, same reason."""
    with Store(tmp_path / "dl.duckdb") as store:
        expected: list[tuple[str, str]] = []

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(values=st.lists(_value, min_size=1, max_size=25))
        def run(values: list[Any]) -> None:
            batch = _check_batch(parse_values(values))
            store.submit(batch.table, batch.rejections, now_us()).result()
            expected.extend((r.reason, r.raw) for r in batch.rejections)

        run()
        rows = store.query("SELECT reason, raw FROM dead_letter ORDER BY id")
        assert [tuple(r) for r in rows] == expected
        assert expected  # the generator really produced rejections
        assert all(reason for reason, _ in rows)


@pytest.mark.parametrize("body", [b"", b"   ", b"\n\n", b"null", b"[]", b"{}", b"[[]]", b'"text"'])
def test_degenerate_bodies(body: bytes) -> None:
    parsed = decode_body(body, "application/json", None, LIMIT)
    _check_batch(parsed)


def _deep_dict(levels: int) -> dict[str, Any]:
    d: dict[str, Any] = {}
    cur = d
    for _ in range(levels):
        cur["a"] = {}
        cur = cur["a"]
    return d


def test_fast_path_hands_unserialisable_metadata_to_the_exact_path() -> None:
    """A batch big enough for the vectorised path, one row with metadata too deep to store."""
    now = now_us() / 1e6
    values = [{"timestamp": now, "level": "INFO", "service": "api", "message": f"m{i}"} for i in range(20)]
    values[7]["metadata"] = _deep_dict(300)
    values[9]["metadata"] = {"big": 2**70}  # beyond 64 bits: orjson cannot write it
    batch = _check_batch(parse_values(values))
    assert batch.table.num_rows == 18
    assert [r.index for r in batch.rejections] == [7, 9]
    assert all(r.reason.startswith("metadata: cannot be stored as JSON") for r in batch.rejections)


def test_raw_json_never_fails() -> None:
    from loglens.schema import raw_json

    deep: list[Any] = []
    cur = deep
    for _ in range(5000):  # deeper than Python's recursion limit
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    assert "nested too deeply" in raw_json(deep)
    assert raw_json({"n": 2**70}) == '{"n": 1180591620717411303424}'


# records the shipped schema accepts, with every optional field present or not
_valid_record = st.fixed_dictionaries(
    {
        "timestamp": st.floats(min_value=1e9, max_value=4e9)
        | st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)).map(
            lambda d: d.isoformat()
        ),
        "level": st.sampled_from(["INFO", "error", "Warning", "DEBUG", "FATAL"]),
        "service": st.sampled_from(["api", "a-b", "svc_1", "checkout.v2"]),
        "message": st.text(min_size=1, max_size=50),
    },
    optional={
        "user_id": st.none() | st.text(max_size=10),
        "ip_address": st.sampled_from(["10.0.0.1", "::1", "192.168.1.255"]),
        "response_time_ms": st.none() | st.floats(min_value=0, max_value=1e7),
        "trace_id": st.none() | st.text(min_size=1, max_size=10),
        "metadata": st.none() | st.dictionaries(st.text(max_size=5), _scalar.filter(_encodable), max_size=3),
    },
)


@FAST
@given(values=st.lists(_valid_record | _record, min_size=1, max_size=15))
def test_small_batches_become_the_arrow_table_a_column_per_call_gives(values: list[Any]) -> None:
    """Small groups are converted in one struct call; the table must equal the per-column one."""
    import pyarrow as pa

    from loglens.models import LOG_ARROW_SCHEMA, LogRows, rows_to_table

    batch = SCHEMA.validate(parse_values(values), "prop", now_us())
    if not isinstance(batch.logs, LogRows) or not batch.logs.num_rows:
        return
    parts = [batch.logs, batch.logs]  # a group of two requests
    reference = pa.Table.from_arrays(
        [pa.array([v for part in parts for v in part.columns[i]], f.type) for i, f in enumerate(LOG_ARROW_SCHEMA)],
        schema=LOG_ARROW_SCHEMA,
    )
    assert rows_to_table(parts).equals(reference)
