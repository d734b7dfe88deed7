"""Loki push as JSON: the `python-logging-loki` handler, JSON shapes, gzip, 400 listings and garbage."""

from __future__ import annotations

import gzip
import logging
import os
import time
from datetime import UTC, datetime, timedelta

import httpx
import logging_loki
import orjson
import pytest
from protocol_helpers import dead, logs

from loglens.config import MappingsConfig
from loglens.errors import Backpressure, ParseError
from loglens.ingest import loki


def test_python_logging_loki_handler_lands_logs(live_server):
    handler = logging_loki.LokiHandler(
        url=f"{live_server.url}/loki/api/v1/push", tags={"service": "inventory", "env": "test"}, version="1"
    )
    logger = logging.getLogger(f"loki-test-{os.getpid()}-{time.monotonic_ns()}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    before = datetime.now(UTC).replace(tzinfo=None)
    logger.error("stock sync failed")
    logger.warning('{"message": "json line", "user_id": "u-3", "response_time_ms": 8}')
    handler.close()
    rows = logs(live_server.state, "loki", 2)
    assert [(r["service"], r["level"], r["message"]) for r in rows] == [
        ("inventory", "ERROR", "stock sync failed"),
        ("inventory", "WARN", "json line"),
    ]
    assert before - timedelta(seconds=1) <= rows[0]["ts"] <= datetime.now(UTC).replace(tzinfo=None)
    assert (rows[1]["user_id"], rows[1]["response_time_ms"]) == ("u-3", 8)
    assert orjson.loads(rows[0]["metadata"])["labels"]["env"] == "test"


def test_json_gzip_legacy_and_partial_rejection(live_server):
    ns = time.time_ns()
    push = {
        "streams": [
            {
                "stream": {"job": "api", "detected_level": "info"},
                "values": [
                    [str(ns), "plain line"],
                    [str(ns + 1), '{"level": "error", "message": "boom", "trace_id": "t1"}', {"pod": "p-1"}],
                    [str(ns + 2), "{broken json is just text"],
                ],
            },
        ]
    }
    with live_server.client() as client:
        r = client.post(
            "/loki/api/v1/push",
            content=gzip.compress(orjson.dumps(push)),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert r.status_code == 204
        legacy = {
            "streams": [
                {
                    "labels": '{app="legacy", level="warn"}',
                    "entries": [{"ts": datetime.now(UTC).isoformat(), "line": "old api"}],
                }
            ]
        }
        assert client.post("/loki/api/v1/push", json=legacy).status_code == 204
        bad = {
            "streams": [
                {
                    "stream": {"level": "info"},  # no service label at all
                    "values": [[str(ns), "orphan"], ["yesterday", "x"], [str(ns), 5], "nope"],
                },
                {"stream": {"service": "ok"}, "values": [[str(ns), "fine"]]},
            ]
        }
        r = client.post("/loki/api/v1/push", json=bad)
        assert r.status_code == 400
        text = r.text
        assert text.startswith("4 of 5 entries ignored:")
        assert "missing required field: service" in text
        assert "not nanoseconds" in text
        assert "string line" in text
    rows = logs(live_server.state, "loki", 5)
    got = [(r["service"], r["level"], r["message"]) for r in rows]
    assert got == [
        ("api", "INFO", "plain line"),
        ("api", "ERROR", "boom"),
        ("api", "INFO", "{broken json is just text"),
        ("legacy", "WARN", "old api"),
        ("ok", "INFO", "fine"),
    ]
    assert rows[1]["trace_id"] == "t1"
    assert orjson.loads(rows[1]["metadata"])["structured_metadata"] == {"pod": "p-1"}
    assert len(dead(live_server.state, "loki", 4)) == 4


def test_garbage_protobuf_and_limits(live_server, monkeypatch):
    with live_server.client() as client:
        for body in (
            os.urandom(300),
            b"[1,2]",
            b'{"streams": 5}',
            b'{"streams": [5]}',
            b'{"streams": [{"stream": [], "values": []}]}',
            b'{"streams": [{"stream": {}, "values": 3}]}',
            b'{"streams": [{"labels": "garbage", "entries": []}]}',
            b'{"streams": [{"labels": "{}", "entries": 1}]}',
        ):
            r = client.post("/loki/api/v1/push", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, body
        r = client.post("/loki/api/v1/push", content=b"\x00snappy", headers={"Content-Type": "application/x-protobuf"})
        assert r.status_code == 400 and "snappy" in r.text  # protobuf is decoded now (test_loki_protobuf.py)
        r = client.post("/loki/api/v1/push", content=b"{}", headers={"Content-Encoding": "zstd"})
        assert r.status_code == 400
        r = client.post("/loki/api/v1/push", content=b"x" * (10 * 1024 * 1024 + 1))
        assert r.status_code == 413
        ok = {"streams": [{"stream": {"service": "still-up"}, "values": [[str(time.time_ns()), "alive"]]}]}
        assert client.post("/loki/api/v1/push", json=ok).status_code == 204
    assert len(dead(live_server.state, "loki", 11)) == 11
    assert logs(live_server.state, "loki")[0]["service"] == "still-up"

    def full(*args, **kwargs):
        raise Backpressure("ingest queue full", 2)

    monkeypatch.setattr(live_server.state.store, "submit_async", full)
    r = httpx.post(f"{live_server.url}/loki/api/v1/push", json=ok)
    assert r.status_code == 429 and r.headers["retry-after"] == "2"


def test_label_parsing_and_listing_units():
    assert loki.parse_label_string('{a="1",b="x\\"y", c = "z"}') == {"a": "1", "b": 'x"y', "c": "z"}
    assert loki.parse_label_string("{}") == {}
    with pytest.raises(ValueError):
        loki.parse_label_string("{a=1}")
    with pytest.raises(ParseError):
        loki.decode_push(b'{"streams": {}}', MappingsConfig().loki)
    parsed, _ = loki.decode_push(b'{"streams": [{"labels": "{a=\\"1\\"}", "entries": ["x"]}]}', MappingsConfig().loki)
    assert parsed.failures == {0: "entry must be [timestamp, line] with a string line"}
