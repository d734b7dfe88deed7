"""The local engine against a hand-written DuckDB query, bad lines, filters and partitioning."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from loglens import metrics
from loglens.analyze import AnalyzeOptions, LocalEngine, run_analysis
from loglens.analyze.driver import to_us
from loglens.config import Settings


def analyse(settings: Settings, paths: list[Any], **kw: Any) -> dict[str, Any]:
    kw.setdefault("progress", False)
    return run_analysis(settings, AnalyzeOptions(paths=paths, **kw))


def numbers(report: dict[str, Any]) -> dict[str, Any]:
    """Everything computed from the data (not timings, engine names or worker ids)."""
    out = {k: v for k, v in report.items() if k != "summary"}
    s = report["summary"]
    out["totals"] = {
        k: s[k]
        for k in (
            "records",
            "accepted",
            "rejected",
            "filtered_out",
            "errors",
            "avg_ms",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "start",
            "end",
            "services",
        )
    }
    return out


SQL = """
SELECT service, date_trunc('minute', timestamp::TIMESTAMPTZ AT TIME ZONE 'UTC') AS minute,
       count(*) AS n, count(*) FILTER (WHERE level IN ('ERROR', 'FATAL')) AS errors,
       avg(response_time_ms) AS avg_ms,
       quantile_disc(response_time_ms, 0.5) AS p50, quantile_disc(response_time_ms, 0.95) AS p95,
       quantile_disc(response_time_ms, 0.99) AS p99
FROM read_json(?, format='newline_delimited',
               columns={timestamp: 'VARCHAR', level: 'VARCHAR', service: 'VARCHAR', response_time_ms: 'DOUBLE'})
GROUP BY ALL ORDER BY service, minute
"""


def test_local_matches_hand_written_duckdb_sql(settings: Settings, clean_file: Path) -> None:
    report = analyse(settings, [clean_file], partitions=3)
    expected = duckdb.execute(SQL, [str(clean_file)]).fetchall()
    got = report["minutes"]
    assert len(got) == len(expected) > 10
    for row, (svc, minute, n, errors, avg_ms, p50, p95, p99) in zip(got, expected, strict=True):
        assert (row["service"], row["minute"]) == (svc, minute.isoformat(timespec="milliseconds") + "Z")
        assert (row["count"], row["errors"]) == (n, errors)
        assert row["avg_ms"] == pytest.approx(avg_ms, abs=1e-3)
        for mine, exact in ((row["p50_ms"], p50), (row["p95_ms"], p95), (row["p99_ms"], p99)):
            assert abs(mine - exact) <= metrics.SKETCH_ALPHA * exact + 1e-3, (row, mine, exact)
    s = report["summary"]
    assert s["records"] == s["accepted"] == 20_000 and s["rejected"] == 0
    per_service = {r["service"]: r["count"] for r in report["services"]}
    assert per_service == dict(
        duckdb.execute("SELECT service, count(*) FROM read_json(?) GROUP BY service", [str(clean_file)]).fetchall()
    )
    users = duckdb.execute(
        "SELECT user_id, count(*) AS n FROM read_json(?) GROUP BY user_id ORDER BY n DESC, user_id LIMIT 5",
        [str(clean_file)],
    ).fetchall()
    assert [(u["user_id"], u["count"]) for u in report["requests_per_user"][:5]] == users
    assert report["most_active_services"][0]["count"] == max(per_service.values())


def test_quantiles_equal_metrics_quantile(settings: Settings, clean_file: Path) -> None:
    """The report's quantiles are exactly `metrics.quantile` over the merged sketch."""
    from loglens.analyze.driver import merge_results
    from loglens.analyze.inputs import discover, plan
    from loglens.analyze.report import sketch_quantiles
    from loglens.analyze.worker import PartitionTask, run_partition
    from loglens.schema import load_schema_document

    doc = load_schema_document(settings.schemas.log)
    tasks = [PartitionTask(p, doc, 300, 4096, to_us(datetime.now(UTC)) or 0) for p in plan(discover([clean_file]), 2)]
    merged = merge_results([run_partition(t) for t in tasks], 5).partials
    table = merged.sketch.to_pylist()
    qs = sketch_quantiles(merged.sketch, ["service", "minute"])
    for (svc, minute), values in list(qs.items())[:20]:
        rows = [r for r in table if r["service"] == svc and r["minute"] == minute]
        for q, v in zip((0.5, 0.95, 0.99), values, strict=True):
            assert v == metrics.quantile([r["bucket"] for r in rows], [r["count"] for r in rows], q)


def test_sketch_quantiles_per_group_rule() -> None:
    """Every group (null keys included) gets `metrics.quantile` of its merged sketch, the nearest
    rank the live queries use, whatever the row order, duplicate buckets and counts."""
    import random

    from loglens.analyze.report import sketch_quantiles

    # one sample in each of 10 buckets: p95 is the 10th value (nearest rank), not the 9th
    ten = pa.Table.from_pylist(
        [{"service": "s", "minute": None, "bucket": b, "count": 1} for b in range(10)], schema=metrics.SKETCH_SCHEMA
    )
    assert sketch_quantiles(ten, ["service"], (0.5, 0.95)) == {
        ("s",): [metrics.bucket_value(4), metrics.bucket_value(9)]
    }
    rng = random.Random(7)
    qs = (0.0, 0.5, 0.95, 0.99, 1.0)
    for _ in range(200):
        n = rng.randint(1, 40)
        rows = [
            {
                "service": rng.choice(["a", "b", None]),
                "minute": rng.choice([datetime(2024, 1, 1, 0, m) for m in range(3)] + [None]),
                "bucket": rng.randint(-3, 6),
                "count": rng.choice([1, 2, 7, 2**40]),
            }
            for _ in range(n)
        ]
        table = pa.Table.from_pylist(rows, schema=metrics.SKETCH_SCHEMA)
        for by in (["service", "minute"], ["minute"]):
            expected: dict[tuple[object, ...], list[float | None]] = {}
            for key in {tuple(r[k] for k in by) for r in rows}:
                group = [r for r in rows if tuple(r[k] for k in by) == key]
                buckets, counts = [r["bucket"] for r in group], [r["count"] for r in group]
                expected[key] = [metrics.quantile(buckets, counts, q) for q in qs]
            assert sketch_quantiles(table, by, qs) == expected


def test_partition_count_does_not_change_results(settings: Settings, clean_file: Path) -> None:
    one = analyse(settings, [clean_file], partitions=1)
    seven = analyse(settings, [clean_file], partitions=7)
    assert one["summary"]["partitions"] == 1 and seven["summary"]["partitions"] == 7
    a, b = numbers(one), numbers(seven)
    # float sums may differ in the last bits with a different cut; counts and quantiles are exact
    for ra, rb in zip(a.pop("minutes"), b.pop("minutes"), strict=True):
        assert ra.pop("avg_ms") == pytest.approx(rb.pop("avg_ms"), abs=1.1e-3)
        assert ra == rb
    for sa, sb in zip(a.pop("services"), b.pop("services"), strict=True):
        assert sa.pop("avg_ms") == pytest.approx(sb.pop("avg_ms"), abs=1.1e-3)
        assert sa == sb
    assert a["totals"].pop("avg_ms") == pytest.approx(b["totals"].pop("avg_ms"), abs=1.1e-3)
    assert a == b


def test_five_percent_broken_lines_are_reported_by_reason(
    settings: Settings, broken_file: tuple[Path, dict[str, int]]
) -> None:
    path, expected = broken_file
    report = analyse(settings, [path], partitions=3)
    bad = report["bad_lines"]
    assert bad["total"] == 200 == report["summary"]["rejected"]
    assert report["summary"]["accepted"] == 3_800
    assert {b["reason"]: b["count"] for b in bad["by_reason"]} == expected
    raw_lines = path.read_bytes()
    for b in bad["by_reason"]:
        assert 1 <= len(b["samples"]) <= 5
        for sample in b["samples"]:
            where = sample["location"]
            assert where.startswith(f"{path}@")
            offset = int(where.rsplit("@", 1)[1])
            assert raw_lines[offset:].split(b"\n", 1)[0].decode() == sample["raw"]


def test_filters_by_time_and_service(settings: Settings, clean_file: Path) -> None:
    full = analyse(settings, [clean_file])
    minutes = [m for m in full["minutes"] if m["service"] == "search"]
    since = datetime.fromisoformat(minutes[2]["minute"].replace("Z", "+00:00"))
    until = datetime.fromisoformat(minutes[5]["minute"].replace("Z", "+00:00"))
    part = analyse(settings, [clean_file], since=since, until=until, service="search")
    assert [m["minute"] for m in part["minutes"]] == [m["minute"] for m in minutes[2:5]]
    assert [m["count"] for m in part["minutes"]] == [m["count"] for m in minutes[2:5]]
    assert part["summary"]["filtered_out"] == 20_000 - sum(m["count"] for m in minutes[2:5])
    assert part["summary"]["filters"]["service"] == "search"


def test_future_logs_use_one_clock(settings: Settings, clean_file: Path) -> None:
    """With `now` before the data, every log is beyond the skew limit: all rejected, one reason."""
    report = analyse(settings, [clean_file], now=datetime(2020, 1, 1, tzinfo=UTC), partitions=2)
    assert report["summary"]["accepted"] == 0
    (only,) = report["bad_lines"]["by_reason"]
    assert only["reason"] == "timestamp: N s in the future, beyond the allowed clock skew of N s"
    assert only["count"] == 20_000
    assert report["minutes"] == [] and report["summary"]["p95_ms"] is None


def test_local_engine_runs_partitions_in_several_processes(clean_file: Path, settings: Settings) -> None:
    with LocalEngine(workers=2) as engine:
        report = run_analysis(settings, AnalyzeOptions(paths=[clean_file], partitions=4, progress=False), engine)
    assert len(report["summary"]["workers"]) == 2
    assert sum(report["summary"]["workers"].values()) == 4
