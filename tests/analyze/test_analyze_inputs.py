"""Input discovery, partitioning (byte ranges, row groups, store id ranges) and every input kind."""

from __future__ import annotations

import gzip
import shutil
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from analyze_data import logs, write_ndjson

from loglens.analyze import AnalyzeOptions, run_analysis
from loglens.analyze.inputs import InputError, Partition, discover, plan, read_blocks, read_text
from loglens.config import Settings
from loglens.ingest.decode import starts_like_json_array
from loglens.schema import LogSchema, parse_values
from loglens.store import Store


def analyse(settings: Settings, paths: list[Any], **kw: Any) -> dict[str, Any]:
    return run_analysis(settings, AnalyzeOptions(paths=paths, progress=False, **kw))


def decoded(parts: list[Partition]) -> list[Any]:
    return [v for p in parts for b in read_blocks(p) for v in b.parsed.values]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 50])
def test_byte_ranges_read_every_line_exactly_once(tmp_path: Path, n: int) -> None:
    lines = [b'{"i": %d, "pad": "%s"}' % (i, b"x" * (i % 13)) for i in range(200)]
    body = b"\n".join(lines[:100]) + b"\r\n\n  \n" + b"\n".join(lines[100:])  # CRLF, blank lines, no final \n
    f = tmp_path / "a.ndjson"
    f.write_bytes(body)
    parts = plan([f], n)
    assert len(parts) == n and parts[-1].end == len(body)
    assert [v["i"] for v in decoded(parts)] == list(range(200))


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
@pytest.mark.parametrize("final_newline", [True, False])
def test_text_chunks_are_whole_lines_at_their_offsets(tmp_path: Path, bom: bytes, final_newline: bool) -> None:
    # Every block size (1 byte up to past the file) and partitioning: the chunks of each partition
    # are whole lines, found at their offsets in the file, and together they are the file once.
    lines = [b'{"i": %d, "pad": "%s"}' % (i, "é".encode() * (i % 5)) for i in range(12)]
    body = bom + b"\n".join(lines[:6]) + b"\r\n\n  \n" + b"\n".join(lines[6:]) + (b"\n" if final_newline else b"")
    f = tmp_path / "a.ndjson"
    f.write_bytes(body)
    for n in (1, 2, 5):
        parts = plan([f], n)
        for block in (1, 2, 3, 7, 40, len(body) - 1, len(body), len(body) + 5):
            joined = b""
            for part in parts:
                for chunk in read_text(part, block):
                    assert body[chunk.base : chunk.base + len(chunk.body)] == chunk.body
                    assert chunk.body.endswith(b"\n") or chunk.base + len(chunk.body) == len(body)
                    assert chunk.base == len(bom) + len(joined)
                    joined += chunk.body
            assert bom + joined == body, (n, block)


def test_discover_globs_directories_and_missing(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.ndjson", "d/sub/b.jsonl.gz", "d/notes.md", "c.json", "d/sub/e.parquet"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in discover([tmp_path / "d"])] == ["a.ndjson", "b.jsonl.gz", "e.parquet"]
    assert [p.name for p in discover([tmp_path / "d" / "notes.md"])] == ["notes.md"]  # named files: any suffix
    got = discover([str(tmp_path / "**" / "*.ndjson"), str(tmp_path / "c.json"), str(tmp_path / "c.json")])
    assert sorted(p.name for p in got) == ["a.ndjson", "c.json"]
    with pytest.raises(InputError, match="nope"):
        discover([tmp_path / "nope.ndjson", tmp_path / "d"])
    with pytest.raises(InputError, match=r"\*\.xyz"):
        discover([str(tmp_path / "*.xyz")])


def test_every_input_kind_gives_the_same_metrics(tmp_path: Path, settings: Settings) -> None:
    records = logs(3_000, seed=21)
    nd = write_ndjson(tmp_path / "plain.ndjson", records)
    expected = analyse(settings, [nd])
    half = len(records) // 2

    gz_dir = tmp_path / "gz"
    gz_dir.mkdir()
    with gzip.open(gz_dir / "a.ndjson.gz", "wb") as f:
        f.write(b"\n".join(orjson.dumps(r) for r in records[:half]) + b"\n")
    with gzip.open(gz_dir / "b.json.gz", "wb") as f:  # a gzipped JSON array
        f.write(orjson.dumps(records[half:]))
    arr = tmp_path / "array.json"
    arr.write_bytes(b"  \n" + orjson.dumps(records))

    table = pa.Table.from_pylist(
        [{**r, "timestamp": r["timestamp"], "metadata": orjson.dumps(r["metadata"]).decode()} for r in records]
    )
    pq.write_table(table, tmp_path / "logs.parquet", row_group_size=500)

    for paths in ([gz_dir], [arr], [tmp_path / "logs.parquet"]):
        got = analyse(settings, paths, partitions=3)
        assert got["minutes"] == expected["minutes"], paths
        assert got["requests_per_user"] == expected["requests_per_user"]
        assert got["summary"]["accepted"] == 3_000
    assert analyse(settings, [tmp_path / "logs.parquet"], partitions=3)["summary"]["partitions"] == 3


def test_parquet_with_native_timestamps(tmp_path: Path, settings: Settings) -> None:
    records = logs(500, seed=2)
    expected = analyse(settings, [write_ndjson(tmp_path / "a.ndjson", records)])
    from datetime import datetime

    rows = [{**r, "timestamp": datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00"))} for r in records]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ts.parquet")
    got = analyse(settings, [tmp_path / "ts.parquet"])
    assert got["minutes"] == expected["minutes"]
    naive = [{**r, "timestamp": r["timestamp"].replace(tzinfo=None), "metadata": "{not json"} for r in rows[:20]]
    pq.write_table(pa.Table.from_pylist(naive), tmp_path / "bad.parquet")
    bad = analyse(settings, [tmp_path / "bad.parquet"])
    assert bad["bad_lines"]["total"] == 20  # metadata must be an object: the schema says so
    assert bad["bad_lines"]["by_reason"][0]["samples"][0]["location"].endswith("#row0")


def test_server_store_file_is_analysed_with_its_dead_letters(tmp_path: Path, settings: Settings) -> None:
    records = logs(2_000, seed=8)
    schema = LogSchema.from_file(settings.schemas.log, allowed_lateness_s=1e12)
    values: list[Any] = [*records, {"level": "INFO"}, "not an object"]
    batch = schema.validate(parse_values(values), "http", 1_800_000_000_000_000)
    db = tmp_path / "store" / "loglens.duckdb"
    with Store(db, retention_days=1e5, metrics_retention_days=1e5) as store:  # data from 2023 stays
        store.submit(batch.table, batch.rejections, 1_800_000_000_000_000).result(timeout=30)
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    expected = analyse(settings, [write_ndjson(tmp_path / "same.ndjson", records)])
    got = analyse(settings, [copy], partitions=3)
    assert got["summary"]["partitions"] == 3
    assert got["minutes"] == expected["minutes"]
    s = got["summary"]
    assert s["records"] == s["accepted"] + s["rejected"] == 2_002  # dead letters are records too
    assert {b["reason"]: b["count"] for b in got["bad_lines"]["by_reason"]} == {
        "missing required fields: timestamp, service, message": 1,
        "log: must be a JSON object, got str": 1,
    }
    assert got["bad_lines"]["by_reason"][0]["samples"][0]["location"].startswith(f"{copy}#dead_letter")


def test_empty_store_and_empty_file(tmp_path: Path, settings: Settings) -> None:
    with Store(tmp_path / "empty.duckdb"):
        pass
    (tmp_path / "empty.ndjson").write_bytes(b"")
    got = analyse(settings, [tmp_path / "empty.duckdb", tmp_path / "empty.ndjson"])
    assert got["summary"]["records"] == 0 and got["minutes"] == [] and got["services"] == []


def test_store_partition_has_no_records_to_decode(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no records"):
        list(read_blocks(Partition(0, "store", str(tmp_path / "x.duckdb"))))
    assert Partition(0, "parquet", "/a/b.parquet", row_groups=(1, 2)).describe() == "b.parquet[1, 2]"
    assert Partition(0, "ndjson", "/a/b.ndjson", 0, 10).describe() == "b.ndjson[0:10]"
    assert Partition(0, "gzip", "/a/b.gz").describe() == "b.gz"


def test_every_kind_in_process_with_filters(tmp_path: Path, settings: Settings) -> None:
    """The worker itself (run here, not in a pool) on every partition kind, with all filters."""
    from datetime import date

    from loglens.analyze.driver import to_us
    from loglens.analyze.inputs import _plain
    from loglens.analyze.worker import Filters, PartitionTask, reason_key, run_partition
    from loglens.schema import load_schema_document

    records = logs(1_200, seed=9)
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    write_ndjson(d / "a.ndjson", records[:300])
    with gzip.open(d / "sub" / "b.ndjson.gz", "wb") as f:
        f.write(b"\n".join(orjson.dumps(r) for r in records[300:600]) + b"\nnot json")  # no final newline
    with gzip.open(d / "c.json.gz", "wb") as f:
        f.write(orjson.dumps(records[600:900]))
    pq.write_table(pa.Table.from_pylist(records[900:]), d / "d.parquet", row_group_size=100)
    since, until = to_us(datetime(2023, 11, 14, 22, 13, 30, tzinfo=UTC)), to_us(datetime(2023, 11, 14, 22, 14))
    filters = Filters(since, until, "auth")
    doc = load_schema_document(settings.schemas.log)
    parts = plan(discover([str(tmp_path / "*")]), 4)
    assert {p.kind for p in parts} == {"ndjson", "gzip", "parquet"}
    results = [run_partition(PartitionTask(p, doc, 300, 4096, 1_800_000_000_000_000, filters)) for p in parts]
    assert sum(r.records for r in results) == 1_201
    assert sum(r.accepted + r.filtered_out for r in results) == 1_200
    wanted = [
        r for r in records if r["service"] == "auth" and "2023-11-14T22:13:30" <= r["timestamp"] < "2023-11-14T22:14"
    ]
    assert sum(r.accepted for r in results) == len(wanted) > 0
    assert sum(int(x.seconds["count"].to_numpy().sum()) for x in results) == len(wanted)
    assert [k for r in results for k in r.rejected] == ["malformed JSON"]
    assert _plain(date(2026, 1, 2)) == "2026-01-02T00:00:00Z"
    assert reason_key("timestamp: 700 s in the future, beyond the allowed clock skew of 300 s") == (
        "timestamp: N s in the future, beyond the allowed clock skew of N s"
    )
    assert to_us(datetime(1970, 1, 1, 0, 0, 1)) == 1_000_000  # naive = UTC


def _reasons(report: dict[str, Any]) -> dict[str, int]:
    return {b["reason"]: b["count"] for b in report["bad_lines"]["by_reason"]}


def test_a_truncated_gzip_is_analysed_up_to_the_damage(tmp_path: Path, settings: Settings) -> None:
    """The lines before the cut count; the cut line is judged like any line; the truncation is one
    rejected record with its reason — no abort, and records = accepted + rejected."""
    body = b"".join(orjson.dumps(r) + b"\n" for r in logs(3000))
    whole = gzip.compress(body)
    f = tmp_path / "cut.ndjson.gz"
    f.write_bytes(whole[: len(whole) * 2 // 3])
    readable = zlib.decompressobj(wbits=31).decompress(f.read_bytes())
    complete = readable.count(b"\n")
    report = analyse(settings, [f])
    s = report["summary"]
    assert 0 < complete < 3000
    assert s["records"] == s["accepted"] + s["rejected"]
    assert s["accepted"] == complete  # every whole line before the damage
    reasons = _reasons(report)
    assert reasons["gzip stream ends early (truncated file)"] == 1
    assert sum(reasons.values()) == s["rejected"] <= 2  # the truncation, and the cut line if any


def test_corrupt_multi_member_and_array_gzip(tmp_path: Path, settings: Settings) -> None:
    body = b"".join(orjson.dumps(r) + b"\n" for r in logs(2000))
    members = tmp_path / "members.ndjson.gz"  # two members and zero padding, as `cat a.gz b.gz` and tape tools make
    members.write_bytes(gzip.compress(body[:50_000]) + gzip.compress(body[50_000:]) + b"\0" * 16)
    assert analyse(settings, [members])["summary"]["accepted"] == 2000
    corrupt = bytearray(gzip.compress(body))
    corrupt[len(corrupt) // 2] ^= 0xFF
    bad = tmp_path / "bad.ndjson.gz"
    bad.write_bytes(bytes(corrupt))
    report = analyse(settings, [bad])
    assert any(r.startswith("corrupt gzip stream") for r in _reasons(report))
    assert report["summary"]["records"] == report["summary"]["accepted"] + report["summary"]["rejected"]
    array = gzip.compress(orjson.dumps(logs(100)))
    cut_array = tmp_path / "cut.json.gz"
    cut_array.write_bytes(array[:-20])
    assert _reasons(analyse(settings, [cut_array])) == {"gzip stream ends early (truncated file)": 1}


APACHE_LINES = [
    b"[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok /etc/httpd/conf/workers2.properties",
    b"[Sun Dec 04 04:47:44 2005] [error] mod_jk child workerEnv in error state 6",
    b"[Sun Dec 04 04:51:08 2005] [notice] jk2_init() Found child 6725 in scoreboard slot 10",
]


@pytest.mark.parametrize("gzipped", [False, True])
def test_text_lines_that_start_with_a_bracket_are_lines_not_a_json_array(
    tmp_path: Path, settings: Settings, gzipped: bool
) -> None:
    """A plain-text log such as Apache's error log starts with `[`: every line is its own
    (rejected) record, not one broken JSON array, so records still count the lines."""
    body = b"\n".join(APACHE_LINES * 40) + b"\n"
    f = tmp_path / ("error.log.gz" if gzipped else "error.log")
    f.write_bytes(gzip.compress(body) if gzipped else body)
    s = analyse(settings, [f])["summary"]
    assert (s["records"], s["accepted"], s["rejected"]) == (120, 0, 120)
    # a JSON array of logs, however it is spaced, is still read as one
    records = logs(5, seed=3)
    arr = tmp_path / "array.json"
    arr.write_bytes(b"\xef\xbb\xbf[\n\n   " + orjson.dumps(records)[1:])
    assert analyse(settings, [arr])["summary"]["accepted"] == 5


@pytest.mark.parametrize(
    ("head", "array"),
    [
        (b"[]", True),
        (b'  [ {"a": 1}]', True),
        (b"\xef\xbb\xbf[\r\n\t{", True),
        (b"[", True),  # nothing after the bracket yet: an array as far as we can tell
        (b"[Sun Dec 04 04:47:44 2005] [error] x", False),
        (b"[1, 2]", False),
        (b'{"a": 1}', False),
        (b"", False),
    ],
)
def test_what_starts_like_a_json_array(head: bytes, array: bool) -> None:
    assert starts_like_json_array(head) is array
