"""The vectorised fast path accepts exactly what the per-record validator accepts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loglens.schema import LogSchema, load_schema_document, parse_values
from loglens.schema.fast import FastPlan

REPO = Path(__file__).resolve().parents[1]
SCHEMA = LogSchema.from_file(REPO / "schemas" / "log_schema.yaml")
NOW_US = int(datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp()) * 1_000_000

timestamps = st.one_of(
    st.sampled_from(
        [
            "2026-11-23T11:59:00Z",
            "2026-11-23T12:59:00.123456+01:00",
            "2026-11-23T11:00:00.5Z",
            "2026-02-30T10:00:00Z",
            "2026-11-23T11:59:00",
            "2026-11-23 11:59:00Z",
            "2026-11-23T11:59:00.1234567Z",
            "2026-11-23t11:59:00z",
            "",
            "2099-01-01T00:00:00Z",
        ]
    ),
    st.integers(-5, 2_000_000_000_000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
levels = st.sampled_from(["INFO", "info", "Warning", "err", "FATAL", "loud", "", "DEBUG", "crit"]) | st.integers()
strings = st.text(max_size=8) | st.none() | st.integers(0, 3)
services = st.sampled_from(["api", "db-1", "-bad", "", "a" * 129, "svc.x/y:z"]) | st.none() | st.integers()
ips = st.sampled_from(["10.0.0.1", "256.1.1.1", "::1", "2001:db8::2", "x", "01.2.3.4"]) | st.none()
rts = (
    st.floats(allow_nan=False, allow_infinity=False) | st.integers(-3, 10**9) | st.none() | st.booleans() | st.just("5")
)
metas = st.none() | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2) | st.just([1]) | st.just("m")


@st.composite
def records(draw: Any) -> Any:
    if draw(st.integers(0, 30)) == 0:
        return draw(st.sampled_from([[1], "x", None, 5]))
    rec: dict[str, Any] = {}
    for name, strat in (
        ("timestamp", timestamps),
        ("level", levels),
        ("service", services),
        ("message", strings),
        ("user_id", strings),
        ("ip_address", ips),
        ("response_time_ms", rts),
        ("trace_id", strings),
        ("metadata", metas),
    ):
        if draw(st.integers(0, 9)) > (0 if name in ("timestamp", "level", "service", "message") else 4):
            rec[name] = draw(strat)
    if draw(st.integers(0, 10)) == 0:
        rec["extra_field"] = draw(st.integers())
    return rec


def rows(batch: Any) -> list[dict[str, Any]]:
    return sorted((r for r in batch.table.to_pylist()), key=repr)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), min_size=16, max_size=60))
def test_fast_and_exact_paths_agree(recs: list[Any]) -> None:
    import copy

    fast = SCHEMA.validate(parse_values(copy.deepcopy(recs)), "t", NOW_US)
    exact = SCHEMA._validate_rows(parse_values(copy.deepcopy(recs)), range(len(recs)), "t", NOW_US)
    assert rows(fast) == rows(exact)
    assert sorted((r.index, r.reason) for r in fast.rejections) == sorted((r.index, r.reason) for r in exact.rejections)


def test_fast_path_is_used_for_the_shipped_schema() -> None:
    assert SCHEMA.has_fast_path


def test_unsupported_keywords_disable_the_fast_path() -> None:
    doc = load_schema_document(REPO / "schemas" / "log_schema.yaml")
    assert FastPlan.from_schema({**doc, "allOf": [{"required": ["user_id"]}]}) is None
    props = {**doc["properties"], "user_id": {"type": "string", "const": "x"}}
    assert FastPlan.from_schema({**doc, "properties": props}) is None
    assert FastPlan.from_schema({**doc, "additionalProperties": False}) is None
    # and validation still works (exact path) with such a schema
    strict = LogSchema({**doc, "additionalProperties": False})
    batch = strict.validate(
        parse_values(
            [{"timestamp": "2026-11-23T11:59:00Z", "level": "INFO", "service": "a", "message": "m", "x": 1}] * 20
        ),
        "t",
        NOW_US,
    )
    assert len(batch.rejections) == 20


valid_ts = st.sampled_from(
    [
        "2026-11-23T11:59:00Z",
        "2026-11-23T12:59:00.123456+01:00",
        "2026-02-30T10:00:00Z",
        "2026-11-23T11:59:00",
        "2099-01-01T00:00:00Z",
        "2026-11-23T11:00:00.1234567Z",
    ]
)
near_valid = st.fixed_dictionaries(
    {
        "timestamp": valid_ts | st.integers(0, 2_000_000_000_000),
        "level": st.sampled_from(["INFO", "warning", "ERR", "loud", "Fatal"]),
        "service": st.sampled_from(["api", "db-1", "-bad", "", "x" * 129]),
        "message": st.text(max_size=5),
    },
    optional={
        "user_id": st.text(max_size=3) | st.none(),
        "ip_address": st.sampled_from(["10.0.0.1", "256.0.0.1", "::1"]),
        "response_time_ms": st.floats(-1, 1e9, allow_nan=False) | st.none(),
        "metadata": st.none() | st.just({"a": 1}),
        "trace_id": st.just("t" * 129) | st.just("abc"),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(near_valid, min_size=16, max_size=60))
def test_fast_path_agrees_on_homogeneous_batches(recs: list[dict[str, Any]]) -> None:
    import copy

    plan = SCHEMA._plan
    assert plan is not None
    if all(type(r["timestamp"]) is str for r in recs) or all(type(r["timestamp"]) is int for r in recs):
        assert plan.run(copy.deepcopy(recs), NOW_US, SCHEMA.skew_us, SCHEMA.lateness_us) is not None
    fast = SCHEMA.validate(parse_values(copy.deepcopy(recs)), "t", NOW_US)
    exact = SCHEMA._validate_rows(parse_values(copy.deepcopy(recs)), range(len(recs)), "t", NOW_US)
    assert rows(fast) == rows(exact)
    assert sorted((r.index, r.reason) for r in fast.rejections) == sorted((r.index, r.reason) for r in exact.rejections)


def _ndjson(recs: list[Any]) -> bytes:
    import json

    return b"\n".join(json.dumps(r).encode() for r in recs)


def _normalised(batch: Any) -> list[Any]:
    import json

    out = []
    for r in batch.table.to_pylist():
        r["metadata"] = json.loads(r["metadata"]) if r["metadata"] else None
        out.append(repr(sorted(r.items())))
    return sorted(out)


nd_records = st.fixed_dictionaries(
    {
        "timestamp": valid_ts,
        "level": st.sampled_from(["INFO", "warning", "loud"]),
        "service": st.sampled_from(["api", "-bad", "db"]),
        "message": st.text(max_size=5),
    },
    optional={
        "user_id": st.text(max_size=3) | st.none(),
        "ip_address": st.sampled_from(["10.0.0.1", "::1", "1.2.3"]),
        "response_time_ms": st.floats(-1, 1e6, allow_nan=False) | st.none() | st.integers(-1, 10),
        "metadata": st.none()
        | st.fixed_dictionaries({"a": st.integers(0, 3), "b": st.text(max_size=2)})
        | st.just({})
        | st.just({"a": {"x": 1}}),
    },
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(nd_records | records(), min_size=1, max_size=40))
def test_arrow_ndjson_path_agrees_with_exact_path(recs: list[Any]) -> None:
    from loglens.ingest.decode import _decode_lines, decode_ndjson

    body = _ndjson(recs)
    fast = SCHEMA.validate(decode_ndjson(body), "t", NOW_US)
    eager = _decode_lines(body)  # the same bytes, decoded line by line with orjson
    exact = SCHEMA._validate_rows(eager, range(len(eager)), "t", NOW_US)
    assert _normalised(fast) == _normalised(exact)
    assert sorted((r.index, r.reason) for r in fast.rejections) == sorted((r.index, r.reason) for r in exact.rejections)


def test_arrow_path_is_taken_for_a_clean_body() -> None:
    from loglens.demo import generate_logs
    from loglens.ingest.decode import decode_ndjson

    logs = list(generate_logs(200, start=NOW_US / 1e6 - 30))
    parsed = decode_ndjson(_ndjson(logs))
    assert parsed.is_lazy
    batch = SCHEMA._validate_ndjson_arrow(parsed, parsed.ndjson or b"", "t", NOW_US)
    assert batch is not None and batch.table.num_rows == 200
    assert parsed.is_lazy  # no Python objects were built for a fully valid body
    bad = decode_ndjson(_ndjson([*logs[:5], {**logs[0], "level": "loud"}]))
    checked = SCHEMA.validate(bad, "t", NOW_US)
    assert [r.index for r in checked.rejections] == [5] and checked.table.num_rows == 5
    assert bad.is_lazy  # only the failing line was decoded to find its reason


def _metadata_body(first: str, other: str) -> bytes:
    now = "2026-11-23T11:59:00Z"
    head = f'{{"timestamp":"{now}","level":"INFO","service":"a","message":"m","metadata":{first}}}'
    rest = f'{{"timestamp":"{now}","level":"INFO","service":"a","message":"m","user_id":"u","metadata":{other}}}'
    return "\n".join([head] * 3 + [rest] * 17).encode()


@pytest.mark.parametrize(
    "meta",
    [
        '{"region":"eu-west-1","code":502,"ok":true,"ms":12.5}',
        '{"at":"2026-01-01T00:00:00","z":"a\\"b","nl":"x\\ny","u":"\\u00e9"}',  # inferred timestamp, escapes
        '{"k":{"x":[],"y":[1,2],"z":{"q":"r"}},"e":{}}',
        '{"a":null}',
        '{"a":[null,1]}',  # pyarrow.json misreads nulls in lists
        '{"a":[[1],[2,3]],"b":[{"c":"d"}]}',
        '{"big":9007199254740993,"huge":18446744073709551616,"tiny":1.5e-7,"mid":1e15}',
        '{"n":2.0,"m":-0.0,"k":1e300}',  # integral doubles: `2.0` stays `2.0`, and `2` (below) stays `2`
        '{"a\\u0000b":1,"\\"q":2}',
        "{}",
        "null",
    ],
)
@pytest.mark.parametrize("other", ['{"q":1}', '{"a":2}', '{"n":2,"m":0.5}', "null", "same"])
def test_arrow_path_writes_metadata_as_the_exact_path_does(meta: str, other: str) -> None:
    import json

    from loglens.ingest.decode import _decode_lines, decode_ndjson

    body = _metadata_body(meta, meta if other == "same" else other)
    parsed = decode_ndjson(body)
    fast = SCHEMA.validate(parsed, "t", NOW_US)
    assert parsed.is_lazy or other in ('{"a":2}', '{"n":2,"m":0.5}')  # a type conflict: the Python path
    eager = _decode_lines(body)
    exact = SCHEMA._validate_rows(eager, range(len(eager)), "t", NOW_US)
    assert fast.table.num_rows == exact.table.num_rows == 20
    fast_text, exact_text = fast.table["metadata"].to_pylist(), exact.table["metadata"].to_pylist()
    # the same text (it could differ only in the order of keys listed differently by other rows)
    assert fast_text == exact_text
    assert [json.loads(t) if t else t for t in fast_text] == [json.loads(t) if t else t for t in exact_text]


@pytest.mark.parametrize("meta", ['{"a":NaN}', '{"a":Infinity}', '{"a":-Infinity}'])
def test_arrow_path_rejects_what_orjson_rejects(meta: str) -> None:
    from loglens.ingest.decode import decode_ndjson

    batch = SCHEMA.validate(decode_ndjson(_metadata_body(meta, '{"q":1}')), "t", NOW_US)
    assert [r.index for r in batch.rejections] == [0, 1, 2]
    assert all(r.reason.startswith("malformed JSON") for r in batch.rejections)
    rt = _metadata_body("null", "null").replace(b'"message":"m"', b'"message":"m","response_time_ms":NaN', 1)
    batch = SCHEMA.validate(decode_ndjson(rt), "t", NOW_US)
    assert [r.index for r in batch.rejections] == [0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(nd_records, min_size=8, max_size=20), st.randoms(use_true_random=False))
def test_large_ndjson_batches_agree_with_exact_path(recs: list[Any], rnd: Any) -> None:
    """Batches big enough for the per-distinct-value checks (levels, services) of the Arrow path."""
    from loglens.ingest.decode import _decode_lines, decode_ndjson

    many = [rnd.choice(recs) for _ in range(400)]
    body = _ndjson(many)
    fast = SCHEMA.validate(decode_ndjson(body), "t", NOW_US)
    eager = _decode_lines(body)
    exact = SCHEMA._validate_rows(eager, range(len(eager)), "t", NOW_US)
    assert _normalised(fast) == _normalised(exact)
    assert sorted((r.index, r.reason) for r in fast.rejections) == sorted((r.index, r.reason) for r in exact.rejections)


_MODEL = "2026-11-23T11:59:00.123+01:00"
# one character of the model replaced: digits by digits stay in layout; anything else leaves it
_REPLACEMENTS = st.sampled_from(["0", "9", "5", "-", "+", ":", ".", "T", "t", "Z", " ", "a", "/", "\x00", "٣"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_MODEL) - 1), _REPLACEMENTS), max_size=4), st.integers(0, 3))
def test_timestamp_layout_check_agrees_with_the_regex(edits: list[tuple[int, str]], skip: int) -> None:
    """`_same_layout` (one numpy pass) accepts a batch only where the date-time regex accepts every row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from loglens.schema.fast import _FAST_FORMATS, _same_layout

    rows = [_MODEL] * 6
    for k, (pos, ch) in enumerate(edits):
        row = rows[1 + k]
        rows[1 + k] = row[:pos] + ch + row[pos + 1 :]
    arr = pa.array(["x"] * skip + rows, pa.string()).slice(skip)  # an offset into the buffers too
    regex = pc.match_substring_regex(arr, _FAST_FORMATS["date-time"]).to_pylist()
    layout = _same_layout(arr)
    if layout is not None:
        assert layout.tolist() == regex == [True] * len(rows)
    same_layout = all(
        all((c in "0123456789") if m.isdigit() else c == m for c, m in zip(r, _MODEL, strict=True)) for r in rows
    )
    assert (layout is not None) == same_layout  # and every such batch is told in one pass


def test_timestamp_layout_check_leaves_other_batches_to_the_regex() -> None:
    import pyarrow as pa

    from loglens.schema.fast import _same_layout

    assert _same_layout(pa.array(["2026-11-23T11:59:00Z", "2026-11-23T11:59:00.5Z"])) is None  # lengths differ
    assert _same_layout(pa.array(["2026-11-23 11:59:00Z", "2026-11-23 11:59:01Z"])) is None  # the first fails the regex
    assert _same_layout(pa.array(["2026-11-23T11:59:00Z", None])) is None
    assert _same_layout(pa.array(["2026-11-23T11:59:00Z", "2026-11-23T11:59:0xZ"])) is None
    assert _same_layout(pa.array(["2026-11-23T11:59:00Z", "2026-11-23T11:59:01Z"])).tolist() == [True, True]  # type: ignore[union-attr]
