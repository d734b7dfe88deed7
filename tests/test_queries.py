"""Read side against a real DuckDB file: time series, summary, services, search, dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loglens.schema import LogSchema, parse_values
from loglens.store import Store, deadletters, queries

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 23, 12, 30, 30, tzinfo=UTC)
NOW_US = int(NOW.timestamp() * 1e6)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "q.duckdb") as s:
        yield s


def put(store: Store, records: list[Any]) -> None:
    schema = LogSchema.from_file(REPO / "schemas" / "log_schema.yaml")
    vb = schema.validate(parse_values(records), "test", NOW_US)
    store.submit(vb.table, vb.rejections, NOW_US).result(10)


def at(minutes_ago: int, second: int = 0) -> str:
    t = NOW.replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago) + timedelta(seconds=second)
    return t.isoformat().replace("+00:00", "Z")


def log(
    ts: str,
    level: str = "INFO",
    service: str = "web",
    rt: float | None = None,
    user: str | None = None,
    message: str = "ok",
) -> dict[str, Any]:
    r: dict[str, Any] = {"timestamp": ts, "level": level, "service": service, "message": message}
    if rt is not None:
        r["response_time_ms"] = rt
    if user:
        r["user_id"] = user
    return r


@pytest.fixture
def loaded(store: Store) -> Store:
    put(
        store,
        [
            log(at(0, 5), rt=100, user="alice"),
            log(at(0, 10), "ERROR", rt=300, user="alice"),
            log(at(0, 20), rt=200, user="bob"),
            log(at(0, 25), "FATAL", user="bob"),
            log(at(2), "INFO", "db", rt=10, user="alice"),
            log(at(2, 1), "ERROR", "db", rt=30),
            log(at(70), "INFO", "web"),  # outside the last hour
        ],
    )
    return store


def test_volume_series_has_one_point_per_minute_with_zeros(loaded: Store) -> None:
    ts = queries.timeseries(loaded, "volume", None, 5, NOW)
    assert ts["start"] == at(4).replace("Z", ".000Z") and ts["end"] == at(0).replace("Z", ".000Z")
    by = {s["service"]: [p["v"] for p in s["points"]] for s in ts["series"]}
    assert by == {"db": [0, 0, 2, 0, 0], "web": [0, 0, 0, 0, 4]}


def test_error_rate_and_latency_series(loaded: Store) -> None:
    er = {s["service"]: s["points"][-1]["v"] for s in queries.timeseries(loaded, "error_rate", None, 3, NOW)["series"]}
    assert er == {"web": 0.5, "db": 0.0}
    avg = queries.timeseries(loaded, "avg_response_time", "web", 3, NOW)["series"]
    assert [p["v"] for p in avg[0]["points"]] == [None, None, 200.0]
    p95 = queries.timeseries(loaded, "p95_response_time", "db", 3, NOW)["series"][0]["points"]
    assert p95[0]["v"] == pytest.approx(30, rel=0.01) and p95[2]["v"] is None
    allp95 = queries.timeseries(loaded, "p95_response_time", None, 3, NOW)["series"]
    assert {s["service"] for s in allp95} == {"db", "web"}


def test_unknown_service_gets_an_empty_series(loaded: Store) -> None:
    ts = queries.timeseries(loaded, "volume", "nope", 2, NOW)
    assert ts["series"] == [{"service": "nope", "points": [{"t": p["t"], "v": 0.0} for p in ts["series"][0]["points"]]}]


def test_summary_matches_hand_computed_values(loaded: Store) -> None:
    s = queries.summary(loaded, 60, 10, NOW)
    avg = {r["service"]: r["avg_ms"] for r in s["avg_response_time_ms"]}
    assert avg == {"web": pytest.approx(200.0), "db": pytest.approx(20.0)}
    assert s["requests_per_user"] == [{"user_id": "alice", "count": 3}, {"user_id": "bob", "count": 2}]
    assert s["distinct_users"] == 2
    assert [(r["service"], r["count"], r["errors"]) for r in s["most_active_services"]] == [("web", 4, 2), ("db", 2, 1)]
    trend = s["error_rate_trend"]
    assert len(trend) == 5
    assert (trend[2]["total"], trend[2]["errors"], trend[2]["error_rate"]) == (2, 1, 0.5)
    assert (trend[4]["total"], trend[4]["errors"]) == (4, 2)
    assert trend[0]["error_rate"] == 0.0


def test_services_registry(loaded: Store) -> None:
    svcs = {s["service"]: s for s in queries.services(loaded, NOW)}
    assert set(svcs) == {"web", "db"}
    assert svcs["web"]["total"] == 5 and svcs["web"]["errors"] == 2
    assert svcs["db"]["volume_per_min"] == pytest.approx(2 / 5)
    assert svcs["db"]["p95_response_time_ms"] == pytest.approx(30, rel=0.01)


def test_search_filters_and_paging(loaded: Store) -> None:
    first = queries.search_logs(loaded, service="web", limit=2)
    assert [r["timestamp"] for r in first["logs"]] == [at(0, 25).replace("Z", ".000Z"), at(0, 20).replace("Z", ".000Z")]
    second = queries.search_logs(loaded, service="web", limit=2, cursor=first["next_cursor"])
    third = queries.search_logs(loaded, service="web", limit=2, cursor=second["next_cursor"])
    ids = [r["id"] for page in (first, second, third) for r in page["logs"]]
    assert len(ids) == 5 == len(set(ids)) and third["next_cursor"] is None
    errors = queries.search_logs(loaded, levels=["ERROR", "FATAL"])
    assert {r["level"] for r in errors["logs"]} == {"ERROR", "FATAL"} and len(errors["logs"]) == 3
    since = queries.search_logs(loaded, since=NOW - timedelta(minutes=1))
    assert len(since["logs"]) == 4
    until = queries.search_logs(loaded, until=NOW - timedelta(minutes=60))
    assert len(until["logs"]) == 1


def test_text_search_is_literal_and_case_insensitive(store: Store) -> None:
    put(store, [log(at(0), message="Payment 100% DECLINED"), log(at(0), message="fine"), log(at(0), message="a_b")])
    assert len(queries.search_logs(store, q="declined")["logs"]) == 1
    assert len(queries.search_logs(store, q="100%")["logs"]) == 1
    assert len(queries.search_logs(store, q="_")["logs"]) == 1  # no LIKE wildcards


def test_bad_cursor(loaded: Store) -> None:
    with pytest.raises(ValueError):
        queries.search_logs(loaded, cursor="!!!")
    with pytest.raises(ValueError):
        deadletters.dead_letters(loaded, cursor=queries.encode_cursor(1, 2))


def test_dead_letters_paging_and_filters(store: Store) -> None:
    put(store, [{"x": i} for i in range(5)] + [log(at(0), level="nope")])
    page = deadletters.dead_letters(store, limit=4)
    assert page["total"] == 6 and len(page["dead_letters"]) == 4
    rest = deadletters.dead_letters(store, limit=4, cursor=page["next_cursor"])
    assert len(rest["dead_letters"]) == 2 and rest["next_cursor"] is None
    assert deadletters.dead_letters(store, reason="MUST BE ONE OF")["total"] == 1
    assert deadletters.dead_letters(store, source="other")["total"] == 0
    assert deadletters.dead_letters(store, since=NOW + timedelta(days=1))["total"] == 0
