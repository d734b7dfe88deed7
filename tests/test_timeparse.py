"""Issue 17 item 6: one timestamp parser with one range, for records, query parameters and options."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from loglens import timeparse
from loglens.ops.commands import parse_since
from tests_support import LiveServer

EDGES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-01:00"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-23T14:00:00Z", datetime(2026, 11, 23, 14, tzinfo=UTC)),
        ("2026-11-23t15:00:00.5+01:00", datetime(2026, 11, 23, 14, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-23T15:00:00+0100", datetime(2026, 11, 23, 14, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, tzinfo=UTC)),  # a leap second
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59.999999Z", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        (1795442400, datetime(2026, 11, 23, 14, tzinfo=UTC)),
        (1795442400123, datetime(2026, 11, 23, 14, 0, 0, 123000, tzinfo=UTC)),
    ],
)
def test_valid_timestamps(value: object, expected: datetime) -> None:
    assert timeparse.to_datetime(timeparse.parse_timestamp(value)) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0001-01-01T00:00:00+14:00", "out of range"),
        ("9999-12-31T23:59:59-01:00", "out of range"),
        ("2026-11-23T14:00:00", "no timezone"),
        ("2026-02-30T00:00:00Z", "no such date"),
        ("2026-11-23 14:00:00Z", "not an RFC 3339"),
        (-1, ">= 0"),
        (1e20, "out of range"),
        (float("nan"), "finite"),
        (True, "RFC 3339 string or an epoch"),
    ],
)
def test_invalid_timestamps_say_why(value: object, reason: str) -> None:
    with pytest.raises(timeparse.TimestampError, match=reason):
        timeparse.parse_timestamp(value)


def test_query_instants_read_no_offset_as_utc_and_check_the_range() -> None:
    assert timeparse.parse_instant("2026-11-23T14:00:00") == datetime(2026, 11, 23, 14, tzinfo=UTC)
    assert timeparse.parse_instant("2026-11-23") == datetime(2026, 11, 23, tzinfo=UTC)
    assert timeparse.parse_instant("0") == datetime(1970, 1, 1, tzinfo=UTC)
    for edge in EDGES:
        with pytest.raises(timeparse.TimestampError, match="out of range"):
            timeparse.parse_instant(edge)


def test_cli_since_uses_the_same_parser() -> None:
    import typer

    assert parse_since("2026-11-23T14:00:00Z") == datetime(2026, 11, 23, 14, tzinfo=UTC)
    for bad in [*EDGES, "99999999d"]:
        with pytest.raises(typer.BadParameter):
            parse_since(bad)


def test_edge_query_parameters_are_422_with_a_reason_everywhere(live_server: LiveServer) -> None:
    with live_server.client() as c:
        for edge in EDGES:
            for r in (
                c.get("/api/v1/logs", params={"since": edge}),
                c.get("/api/v1/logs", params={"service": "s", "until": edge}),
                c.get("/api/v1/dead-letter", params={"since": edge}),
                c.post("/api/v1/dead-letter/replay", json={"since": edge}),
                c.post("/api/v1/silences", json={"matchers": {"service": "s"}, "expires_at": edge}),
                c.post(
                    "/api/v1/silences",
                    json={"matchers": {"service": "s"}, "duration_seconds": 60, "starts_at": edge},
                ),
            ):
                assert r.status_code == 422, (r.request.url, r.text)
                detail = r.json()["detail"]
                assert isinstance(detail, list) and "out of range" in str(detail), detail


def test_an_edge_timestamp_is_never_stored(live_server: LiveServer) -> None:
    logs = [{"timestamp": edge, "level": "INFO", "service": "edge", "message": "m"} for edge in EDGES]
    ok = {"timestamp": "2026-11-23T14:00:00Z", "level": "INFO", "service": "edge", "message": "ok"}
    with live_server.client() as c:
        # a single record (exact path) and a large batch (the Arrow fast path) alike
        for body in (logs, [*logs, ok] * 20):
            r = c.post("/api/v1/logs", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["rejected"] == len(body) - body.count(ok)
            assert all("out of range" in e["reason"] for e in r.json()["errors"])
        r = c.get("/api/v1/logs", params={"service": "edge"})
        assert r.status_code == 200 and {x["message"] for x in r.json()["logs"]} == {"ok"}
