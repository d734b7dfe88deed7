"""The work pushed into DuckDB agrees with the server's code: SQL checks vs `LogSchema`, SQL
aggregation vs `metrics.aggregate`."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pytest
from analyze_data import logs

from loglens import metrics
from loglens.analyze import worker
from loglens.analyze.aggregate import AGG_COLUMNS, Window, aggregate
from loglens.analyze.inputs import discover, plan
from loglens.analyze.predicates import compile_checks
from loglens.analyze.worker import PartitionTask, reason_key, run_partition, split_lines
from loglens.config import Settings
from loglens.ingest.decode import decode_ndjson
from loglens.schema import LogSchema, load_schema_document, parse_values

NOW = 1_800_000_000_000_000
GOOD = {
    "timestamp": "2023-11-14T22:13:20.123Z",
    "level": "INFO",
    "service": "checkout",
    "message": "ok",
    "user_id": "u-1",
    "ip_address": "10.0.0.1",
    "response_time_ms": 12.5,
}


def line(**kw: object) -> bytes:
    rec = {**GOOD, **kw}
    return orjson.dumps({k: v for k, v in rec.items() if v is not ...})


# Lines where DuckDB's reader, casts or regexes could disagree with orjson + fastjsonschema.
EDGE_LINES = [
    line(),
    line(level="warning"),
    line(level="Warn"),
    line(level="LOUD"),
    line(timestamp="2023-11-14T22:13:20+01:00"),
    line(timestamp="2023-11-14T24:00:00Z"),
    line(timestamp="2023-11-14T22:13:60Z"),
    line(timestamp="0000-01-01T00:00:00Z"),
    line(timestamp="2023-02-30T00:00:00Z"),
    line(timestamp="2023-11-14 22:13:20Z"),
    line(timestamp=1_700_000_000),
    line(timestamp=1_700_000_000_123),
    line(timestamp=True),
    line(timestamp="2099-01-01T00:00:00Z"),
    line(service="checkout\u00e9"),
    b'{"timestamp":"2023-11-14T22:13:20Z","level":"INFO","service":"check\\u006fut","message":"a\\"b"}',
    line(service="bad service"),
    line(service=""),
    line(service=5),
    line(message="é" * 65536),
    line(message="é" * 65537),
    line(user_id=7),
    line(user_id=None),
    line(user_id=...),
    line(ip_address="2001:db8::1"),
    line(ip_address="300.1.1.1"),
    line(response_time_ms=-1),
    line(response_time_ms="12"),
    line(response_time_ms=True),
    line(response_time_ms=86_400_001),
    line(response_time_ms=0),
    line(response_time_ms=0.0001),
    line(metadata={"a": [1, {"b": None}]}),
    line(metadata=[1]),
    line(metadata="x"),
    line(extra_field=1),
    line(message=...),
    b'{"timestamp":"2023-11-14T22:13:20Z","level":"INFO","service":"s","message":"m","metadata":{"x":NaN}}',
    b'{"timestamp":"2023-11-14T22:13:20Z","level":"INFO","service":"s","message":"m",}',
    b'{"timestamp":"2023-11-14T22:13:20Z","level":"INFO","service":"s","message":"m","metadata":{"a":1 , }}',
    b'{"timestamp":"2023-11-14T22:13:20Z","level":"INFO","service":"s","message":"NaN, ]"}',
    # a key twice: the server (orjson) keeps the last value, escaped or not
    b'{"timestamp":"2023-11-14T22:13:20Z","level":"INFO","service":"s","message":"m","level":"LOUD"}',
    b'{"timestamp":"2023-11-14T22:13:20Z","level":"LOUD","service":"s","message":"m","level":"INFO"}',
    b'{"timestamp":"2023-11-14T22:13:20Z","level":"INFO","service":"s","message":"m","lev\\u0065l":5}',
    b'{"timestamp":"2023-11-14T22:13:20Z","level":"INFO","service":"s","message":"m","x":1,"service":7}',
    b'{"timestamp":"2023-11-14T22:13:20Z","level":"INFO","service":"s","message":"m","x":1,"x":2}',
    b'{"timestamp":"2023-11-14T22:13:20Z","level":"INFO","service":"s","message":"level \\"level\\""}',
    b"[1, 2]",
    b'"just a string"',
    b"{not json",
    b'{"timestamp":"2023-11-14T22:13:20Z","level":"INFO","service":"s","message":"\xff"}',
    b"   ",
    b"",
]


def reference(body: bytes, settings: Settings) -> tuple[int, Counter[str]]:
    """What the server's decoder and exact validator make of the same body."""
    schema = LogSchema.from_file(settings.schemas.log, allowed_lateness_s=1e12)
    batch = schema.validate(decode_ndjson(body), "analyze", NOW)
    return batch.table.num_rows, Counter(reason_key(r.reason) for r in batch.rejections)


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize(
    ("crlf", "utf8", "block", "whole"),
    [
        (False, False, None, False),
        (True, False, None, False),
        (False, True, None, False),
        (False, False, 700, False),
        (False, False, None, True),
        (True, False, None, True),
        (False, False, 700, True),
    ],
)
def test_sql_checks_agree_with_the_exact_validator(
    tmp_path: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    crlf: bool,
    utf8: bool,
    block: int | None,
    whole: bool,
) -> None:
    """`utf8`: without the non-UTF-8 line, which sends its whole chunk to the exact validator.
    `block`: chunks of about that many bytes (many per partition, each read while the one
    before is checked; for the scan, its line count read in such blocks and the lines it does not
    accept judged 7 at a time). `whole`: one partition of the whole file, which DuckDB's own reader
    checks in one pass; otherwise three byte ranges (and a byte-order mark), read in chunks."""
    if block is not None:  # and, for the scan, the lines it hands to the exact validator 7 at a time
        monkeypatch.setattr(worker, "BLOCK_BYTES", block)
        monkeypatch.setattr(worker, "EXACT_BATCH", 7)
    sep = b"\r\n" if crlf else b"\n"
    edge = [raw for raw in EDGE_LINES if _utf8(raw)] if utf8 else EDGE_LINES
    body = (b"" if whole else b"\xef\xbb\xbf") + sep.join(edge * 3) + sep
    f = tmp_path / "edge.ndjson"
    f.write_bytes(body)
    doc = load_schema_document(settings.schemas.log)
    results = [run_partition(PartitionTask(p, doc, 300, 4096, NOW)) for p in plan([f], 1 if whole else 3)]
    # which reader ran: the one-pass scan has no read/split steps of its own
    assert all(("split" in r.steps) is not whole for r in results)
    accepted, rejected = reference(body, settings)
    assert sum(r.accepted for r in results) == accepted
    got: Counter[str] = Counter()
    for r in results:
        got.update(r.rejected)
    assert got == rejected
    assert sum(r.records for r in results) == accepted + sum(rejected.values())
    # every sample points at the line it quotes
    for r in results:
        for samples in r.samples.values():
            for _reason, raw, where in samples:
                offset = int(where.rsplit("@", 1)[1])
                full = body[offset:].split(b"\n", 1)[0].rstrip(b"\r").decode(errors="replace")
                assert full[: len(raw)] == raw


def test_a_row_of_the_one_pass_scan_must_be_the_line_at_its_place(tmp_path: Path) -> None:
    """The scan's rows are matched to file lines by position; a row whose text (or, where DuckDB
    could not parse it, whose not being a JSON object) does not fit the line found there makes the
    whole file go to the chunked reader instead of mislabelling a line."""
    body = b'{"a": 1}\n\n  \n{not json\r\n{"b": 2}\n[1]'
    f = tmp_path / "x.ndjson"
    f.write_bytes(body)
    starts = worker.line_starts(body)
    assert starts.tolist() == [0, 13, 24, 33]
    right = [(1, None), (2, '{"b": 2}'), (3, None)]
    assert worker._bad_lines(str(f), starts, right) == [b"{not json\r\n", b'{"b": 2}\n', b"[1]"]
    assert worker._bad_lines(str(f), starts, [(0, None)]) is None  # line 0 is a JSON object
    assert worker._bad_lines(str(f), starts, [(1, '{"b": 2}')]) is None  # not the text at line 1
    assert worker._bad_lines(str(f), starts, []) == []


@pytest.mark.parametrize("name", ["logs[1].ndjson", "with*star.ndjson", "it's.ndjson"])
def test_file_names_duckdb_would_expand_are_read_literally(tmp_path: Path, settings: Settings, name: str) -> None:
    """Glob characters in a path would make DuckDB read other files (or none): such a file is
    read in chunks by loglens itself; a quote in the name is escaped for the one-pass scan."""
    body = b"\n".join(EDGE_LINES) + b"\n"
    f = tmp_path / name
    f.write_bytes(body)
    (tmp_path / "logs1.ndjson").write_bytes(body)  # what `logs[1]` would match as a glob
    doc = load_schema_document(settings.schemas.log)
    (result,) = [run_partition(PartitionTask(p, doc, 300, 4096, NOW)) for p in plan([f], 1)]
    accepted, rejected = reference(body, settings)
    assert (result.accepted, Counter(result.rejected)) == (accepted, rejected)
    assert ("split" in result.steps) is ("'" not in name)


def test_clean_lines_are_all_accepted_in_sql(settings: Settings) -> None:
    """On clean data nothing falls back to Python: the SQL check accepts every line."""
    body = b"\n".join(orjson.dumps(r) for r in logs(2_000)) + b"\n\n  \n"
    lines, starts = split_lines(body)
    assert len(starts) == 2_000
    checks = compile_checks(load_schema_document(settings.schemas.log))
    assert checks is not None
    con = duckdb.connect()
    con.register("lines", pa.table({"i": pa.array(range(len(starts)), pa.int64()), "line": lines}))
    params = {"now_us": NOW, "skew_us": 300_000_000, "late_us": 10**15}
    ok = con.execute(f"SELECT count(*) FILTER (WHERE ok) FROM ({checks.sql})", params).fetchall()
    assert ok == [(2_000,)]


@pytest.mark.parametrize("crlf", [False, True])
def test_sql_accepted_values_equal_the_exact_validators(settings: Settings, crlf: bool) -> None:
    """Every line the SQL accepts has the values the exact validator gives it (non-ASCII, escaped
    and aliased strings included), not only the same verdict."""
    extra = [
        line(service="cafe.uber-1", user_id="\U0001f600 u-\u00e9", message="\u65e5\u672c"),
        line(user_id='a\\b"c\u00e9', level="crit", message="tab\there"),
        line(user_id="", trace_id="\u00e9" * 128),
        b'{"timestamp":"2023-11-14T22:13:20Z","level":"\\u0049NFO","service":"s\\u002e1","message":"m","user_id":"\\u00e9\\n"}',
    ]
    raws = [raw for raw in EDGE_LINES + extra if _utf8(raw) and raw.strip()]
    body = (b"\r\n" if crlf else b"\n").join(raws) + b"\n"
    lines, starts = split_lines(body)
    checks = compile_checks(load_schema_document(settings.schemas.log))
    assert checks is not None
    con = duckdb.connect()
    con.register("lines", pa.table({"i": pa.array(range(len(starts)), pa.int64()), "line": lines}))
    params = {"now_us": NOW, "skew_us": 300_000_000, "late_us": 10**15}
    cols = ["ts", "level", "service", "user_id", "response_time_ms"]
    got = con.sql(f"SELECT i, {', '.join(cols)} FROM ({checks.guarded_sql}) WHERE ok ORDER BY i", params=params)
    rows = got.fetchall()
    # the valid lines above are accepted in SQL, so their values are compared below
    assert set(range(len(raws) - len(extra), len(raws))) <= {r[0] for r in rows}
    schema = LogSchema.from_file(settings.schemas.log, allowed_lateness_s=1e12)
    for i, *values in rows:
        raw = body[int(starts[i]) :].split(b"\n", 1)[0]
        table = schema.validate(decode_ndjson(raw), "t", NOW).table
        assert table.num_rows == 1, raw
        expected = table.select(cols).to_pylist()[0]
        assert dict(zip(cols, values, strict=True)) == expected, raw


def test_a_schema_the_sql_cannot_express_falls_back(settings: Settings, tmp_path: Path) -> None:
    doc = load_schema_document(settings.schemas.log)
    strict = {**doc, "additionalProperties": False}
    assert compile_checks(strict) is None
    f = tmp_path / "a.ndjson"
    f.write_bytes(line() + b"\n" + line(extra_field=1) + b"\n")
    (res,) = [run_partition(PartitionTask(p, strict, 300, 4096, NOW)) for p in plan([f], 1)]
    assert res.accepted == 1 and sum(res.rejected.values()) == 1


def test_sql_aggregation_equals_metrics_aggregate(settings: Settings) -> None:
    schema = LogSchema.from_file(settings.schemas.log, allowed_lateness_s=1e12)
    records = logs(5_000, seed=3)
    for r in records[::7]:
        r["response_time_ms"] = None
    for r in records[::11]:
        r["user_id"] = None
    records[5]["response_time_ms"] = 0.0
    table = schema.validate(parse_values(records), "t", NOW).table
    expected = metrics.aggregate(table)
    con = duckdb.connect()
    con.register("t", table)
    got = aggregate(con, f"SELECT {', '.join(AGG_COLUMNS)} FROM t", [], Window())
    assert got.kept == 5_000 and got.filtered_out == 0

    def rows(t: pa.Table, keys: list[str]) -> list[dict[str, object]]:
        return t.sort_by([(k, "ascending") for k in keys]).to_pylist()

    exp_min, got_min = rows(expected.minute, ["service", "minute"]), rows(got.partials.minute, ["service", "minute"])
    for a, b in zip(exp_min, got_min, strict=True):
        assert a.pop("rt_sum") == pytest.approx(b.pop("rt_sum"), rel=1e-12)
        assert a == b
    assert rows(expected.sketch, ["service", "minute", "bucket"]) == rows(
        got.partials.sketch, ["service", "minute", "bucket"]
    )
    assert rows(expected.users, ["service", "minute", "user_id"]) == rows(
        got.partials.users, ["service", "minute", "user_id"]
    )
    assert int(pa.compute.sum(got.seconds["count"]).as_py()) == 5_000


def test_discover_skips_own_outputs_and_compressed_copies(tmp_path: Path) -> None:
    import gzip

    (tmp_path / "app.log").write_bytes(line() + b"\n")
    with gzip.open(tmp_path / "app.log.gz", "wb") as f:
        f.write(line() + b"\n")
    with gzip.open(tmp_path / "old.log.gz", "wb") as f:
        f.write(line() + b"\n")
    (tmp_path / "report.json").write_bytes(b"{}")
    (tmp_path / "report.html").write_bytes(b"<html>")
    assert [p.name for p in discover([tmp_path])] == ["app.log", "old.log.gz"]


def test_the_scan_counts_lines_as_the_chunked_reader_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-pass scan's line positions (the whole file, read in blocks) equal the chunked reader's for
    bodies of blank, whitespace-only and control-character lines, across block boundaries."""
    rng = random.Random(5)
    pieces = [b'{"a":1}', b"", b" ", b"\t", b"\r", b"\x0b", b"\x0c", b" x", b"{}", b"\x1c"]
    f = tmp_path / "lines.ndjson"
    for _ in range(200):
        body = b"\n".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) + rng.choice([b"", b"\n", b"\n\n"])
        if not body:
            continue
        f.write_bytes(body)
        for block in (3, 1 << 20):
            monkeypatch.setattr(worker, "BLOCK_BYTES", block)
            assert worker._file_line_starts(str(f)).tolist() == worker.line_starts(body).tolist(), body


def test_epoch_number_timestamps_are_read_in_sql_exactly_as_the_server_reads_them(settings: Settings) -> None:
    """Seconds and milliseconds (above 1e11), integers and fractions down to half a microsecond
    (Python rounds half to even), zero and the far future: every epoch number the SQL check
    accepts gets the exact validator's timestamp, to the microsecond."""
    rng = random.Random(11)
    values: list[float | int] = [0, -0.0, 1, 1e11, 1e11 + 0.5, 100_000_000_001, 1_700_000_000.0000005]
    values += [1_700_000_000.0000015, 1_700_000_000_123.4565, 2.5e11, 2.5e14, 253_402_300_799.999999]
    for _ in range(400):
        seconds = rng.uniform(0, 4e9)
        values += [
            round(seconds, rng.randint(0, 9)),
            int(seconds),
            round(seconds * 1000, rng.randint(0, 6)),
            int(seconds) + rng.choice([0.5, 1.5, 2.5]) / 1e6,
        ]
    raws = [line(timestamp=v) for v in values] + [line(timestamp=-1), line(timestamp=1e20)]
    body = b"\n".join(raws) + b"\n"
    lines, starts = split_lines(body)
    checks = compile_checks(load_schema_document(settings.schemas.log))
    assert checks is not None
    con = duckdb.connect()
    con.register("lines", pa.table({"i": pa.array(range(len(starts)), pa.int64()), "line": lines}))
    params = {"now_us": 10**19, "skew_us": 0, "late_us": 10**19}
    rows = con.execute(f"SELECT i, epoch_us(ts) FROM ({checks.sql}) WHERE ok ORDER BY i", params).fetchall()
    assert len(rows) >= len(values) - 2  # the SQL reads epoch numbers itself (not the exact path)
    assert {i for i, _ in rows}.isdisjoint({len(raws) - 2, len(raws) - 1})  # negative, out of range
    schema = LogSchema.from_file(settings.schemas.log, allowed_lateness_s=1e12, max_future_skew_s=1e12)
    exact = schema.validate(decode_ndjson(b"\n".join(raws[i] for i, _ in rows)), "t", NOW).table
    assert exact.num_rows == len(rows)
    assert exact["ts"].cast(pa.int64()).to_pylist() == [us for _, us in rows]
