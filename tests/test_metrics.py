"""Per-minute aggregates: bucket boundaries, late logs, sketches, merging."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from loglens import metrics
from loglens.schema import LogSchema, parse_values

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
NOW_US = int(T0.timestamp() * 1e6) + 3600 * 1_000_000


def batch(records: list[dict]) -> pa.Table:
    schema = LogSchema.from_file(REPO / "schemas" / "log_schema.yaml")
    vb = schema.validate(parse_values(records), "t", NOW_US)
    assert vb.rejections == []
    return vb.table


def rec(
    second: float, level: str = "INFO", service: str = "a", rt: float | None = None, user: str | None = None
) -> dict:
    r = {"timestamp": T0.timestamp() + second, "level": level, "service": service, "message": "m"}
    if rt is not None:
        r["response_time_ms"] = rt
    if user is not None:
        r["user_id"] = user
    return r


def rows(p: metrics.Partials) -> dict[tuple[str, int], dict]:
    out = {}
    for r in p.minute.to_pylist():
        out[(r["service"], r["minute"].minute)] = r
    return out


def test_minute_boundaries_by_event_time() -> None:
    p = metrics.aggregate(batch([rec(59.999), rec(60.0), rec(60.001, "ERROR"), rec(119.999, "FATAL")]))
    r = rows(p)
    assert r[("a", 0)]["count"] == 1
    assert r[("a", 1)]["count"] == 3
    assert (r[("a", 1)]["error"], r[("a", 1)]["fatal"]) == (1, 1)


def test_levels_latency_users_and_late() -> None:
    p = metrics.aggregate(
        batch([rec(1, rt=10, user="u1"), rec(2, "WARN", rt=30, user="u1"), rec(3, "DEBUG", user="u2"), rec(4, "ERROR")])
    )
    r = rows(p)[("a", 0)]
    assert (r["count"], r["debug"], r["info"], r["warn"], r["error"]) == (4, 1, 1, 1, 1)
    assert (r["rt_count"], r["rt_sum"], r["rt_min"], r["rt_max"]) == (2, 40.0, 10.0, 30.0)
    assert r["late"] == 4  # an hour old: beyond the 120 s lateness, still counted in its bucket
    users = {(u["user_id"], u["count"]) for u in p.users.to_pylist()}
    assert users == {("u1", 2), ("u2", 1)}


def test_sketch_quantiles_within_one_percent() -> None:
    rng = np.random.default_rng(3)
    values = rng.lognormal(4, 1, 20_000)
    buckets = metrics.sketch_buckets(pa.array(values)).to_numpy()
    uniq, counts = np.unique(buckets, return_counts=True)
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(values, q, method="inverted_cdf"))
        est = metrics.quantile(uniq.tolist(), counts.tolist(), q)
        assert est is not None and abs(est - exact) / exact <= metrics.SKETCH_ALPHA + 1e-9


def test_quantile_edge_cases() -> None:
    assert metrics.quantile([], [], 0.5) is None
    assert metrics.quantile([metrics.ZERO_BUCKET], [3], 0.99) == 0.0
    assert metrics.quantile([5], [0], 0.5) is None


def test_merge_of_partitions_equals_aggregate_of_all() -> None:
    rnd = random.Random(5)
    recs = [
        rec(
            rnd.uniform(0, 600),
            rnd.choice(["INFO", "ERROR", "WARN"]),
            rnd.choice("abc"),
            rt=rnd.uniform(1, 500) if rnd.random() < 0.8 else None,
            user=rnd.choice(["u1", "u2", None]),
        )
        for _ in range(2000)
    ]
    whole = metrics.aggregate(batch(recs))
    parts = metrics.merge(metrics.aggregate(batch(recs[i : i + 300])) for i in range(0, 2000, 300))

    def norm(t: pa.Table, keys: list[str]) -> list[dict]:
        return sorted(t.to_pylist(), key=lambda r: tuple(str(r[k]) for k in keys))

    keys = ["service", "minute"]
    a, b = norm(whole.minute, keys), norm(parts.minute, keys)
    assert [{k: v for k, v in r.items() if k != "rt_sum"} for r in a] == [
        {k: v for k, v in r.items() if k != "rt_sum"} for r in b
    ]
    assert all(r1["rt_sum"] == pytest.approx(r2["rt_sum"]) for r1, r2 in zip(a, b, strict=True))
    assert norm(whole.sketch, [*keys, "bucket"]) == norm(parts.sketch, [*keys, "bucket"])
    assert norm(whole.users, [*keys, "user_id"]) == norm(parts.users, [*keys, "user_id"])


def test_empty_inputs() -> None:
    assert metrics.aggregate(batch([])).minute.num_rows == 0
    assert metrics.merge([]).sketch.num_rows == 0


@pytest.mark.parametrize("n", [1, 7, 64, metrics.SMALL_BATCH])
def test_the_row_path_for_small_batches_equals_the_columnar_path(n: int) -> None:
    rnd = random.Random(n)
    recs = [
        rec(
            rnd.uniform(-30, 300),
            rnd.choice(["debug", "INFO", "warning", "ERROR", "FATAL", "critical"]),
            rnd.choice(["a", "b", "c.d"]),
            rt=rnd.choice([0.0, 0.0004, 0.001, rnd.uniform(0, 2000), round(rnd.lognormvariate(4, 1), 2)])
            if rnd.random() < 0.8
            else None,
            user=rnd.choice(["u1", "u2", "u3", None]),
        )
        for _ in range(n)
    ]
    table = batch(recs)
    rows_path, columnar = metrics._aggregate_rows(table), metrics._aggregate_columnar(table)

    def ordered(t: pa.Table) -> pa.Table:  # Acero's group order is its own; the rows are what counts
        return t.sort_by([(c, "ascending") for c in t.column_names[:3]])

    # identical tables: same rows, same types, float sums to the last bit
    assert ordered(rows_path.minute).equals(ordered(columnar.minute))
    assert ordered(rows_path.sketch).equals(ordered(columnar.sketch))
    assert ordered(rows_path.users).equals(ordered(columnar.users))
    assert metrics.aggregate(table).minute.equals(rows_path.minute)
