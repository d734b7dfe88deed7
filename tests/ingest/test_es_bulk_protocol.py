"""Elasticsearch `_bulk`: the official `elasticsearch` client and its `helpers.bulk`, plus garbage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from elasticsearch import Elasticsearch, helpers
from protocol_helpers import dead, logs

from loglens.config import FieldMapping, MappingsConfig
from loglens.errors import Backpressure, ParseError
from loglens.ingest import es_bulk


def test_official_client_helpers_bulk_lands_logs(live_server):
    es = Elasticsearch(live_server.url, request_timeout=30)
    assert es.ping()  # HEAD /
    info = es.info()  # GET / is content-negotiated: ES clients get the version document
    assert info["version"]["number"] and info["tagline"] == "You Know, for Search"
    now = datetime.now(UTC).replace(microsecond=0)
    docs = [
        {
            "_index": "logs-app",
            "_source": {
                "@timestamp": (now - timedelta(seconds=i)).isoformat(),
                "log": {"level": "error" if i % 2 else "info"},
                "service": {"name": "payments"},
                "message": f"event {i}",
                "user": {"id": f"u-{i}"},
                "client": {"ip": "203.0.113.9"},
                "trace": {"id": "abc123"},
                "http": {"status": 502},
            },
        }
        for i in range(50)
    ]
    ok, errors = helpers.bulk(es, docs, chunk_size=20)
    assert (ok, errors) == (50, [])
    rows = logs(live_server.state, "es_bulk", 50)
    assert len(rows) == 50
    first = rows[0]
    assert (first["service"], first["level"], first["message"]) == ("payments", "INFO", "event 0")
    assert first["ts"] == now.replace(tzinfo=None)
    assert (first["user_id"], first["ip_address"], first["trace_id"]) == ("u-0", "203.0.113.9", "abc123")
    assert orjson.loads(first["metadata"]) == {"http": {"status": 502}}
    assert rows[1]["level"] == "ERROR"

    # A bad document fails its own item only: helpers.bulk reports it, the others are stored.
    bad = [
        {"_index": "svc-a", "_source": {"@timestamp": now.isoformat(), "message": "ok"}},
        {"_index": "svc-a", "_source": {"@timestamp": "yesterday-ish", "message": "bad time"}},
    ]
    ok, errors = helpers.bulk(es, bad, raise_on_error=False)
    assert ok == 1
    assert errors[0]["index"]["status"] == 400
    assert errors[0]["index"]["error"]["type"] == "document_parsing_exception"
    stored = logs(live_server.state, "es_bulk", 51)[-1]
    assert (stored["service"], stored["level"]) == ("svc-a", "INFO")  # index → service, default level
    assert "timestamp" in dead(live_server.state, "es_bulk")[0][0]


def test_raw_bulk_actions_statuses_headers_and_garbage(live_server):
    now = datetime.now(UTC).isoformat()
    body = (
        b"\n".join(
            [
                orjson.dumps({"create": {"_id": "given-id"}}),
                orjson.dumps({"@timestamp": now, "level": "warn", "service": "cart", "message": "low stock"}),
                orjson.dumps({"update": {"_id": "1"}}),
                orjson.dumps({"doc": {"x": 1}}),
                orjson.dumps({"delete": {"_id": "1"}}),
                orjson.dumps({"index": {}}),
                b"{not json",
                orjson.dumps({"index": {}}),
                b"[1]",
            ]
        )
        + b"\n"
    )
    with live_server.client() as client:
        r = client.post("/inventory/_bulk", content=body, headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 200
        assert r.headers["x-elastic-product"] == "Elasticsearch"
        out = r.json()
        assert out["errors"] is True
        statuses = [(next(iter(i)), next(iter(i.values()))["status"]) for i in out["items"]]
        assert statuses == [("create", 201), ("update", 400), ("delete", 400), ("index", 400), ("index", 400)]
        assert out["items"][0]["create"]["_id"] == "given-id"
        assert out["items"][0]["create"]["_index"] == "inventory"
        assert "append-only" in out["items"][1]["update"]["error"]["reason"]
        assert "malformed JSON" in out["items"][3]["index"]["error"]["reason"]

        # no index anywhere
        r = client.put("/_bulk", content=orjson.dumps({"index": {}}) + b"\n{}\n")
        assert r.json()["items"][0]["index"]["error"]["reason"].startswith("no _index")

        # garbage: the whole request is refused, dead-lettered, and the server keeps serving
        for garbage in (b"\x00\xff" * 100, b'{"index": {}}\n', b'["index"]\n{}\n'):
            r = client.post("/_bulk", content=garbage)
            assert r.status_code == 400
            assert r.json()["error"]["type"] == "illegal_argument_exception"
            assert r.headers["x-elastic-product"] == "Elasticsearch"
        r = client.post("/_bulk", content=b"x" * (10 * 1024 * 1024 + 1))
        assert r.status_code == 413 and r.json()["status"] == 413
        r = client.get("/_es")
        assert r.json()["tagline"] == "You Know, for Search"
        r = client.head("/")
        assert r.status_code == 200 and r.headers["x-elastic-product"] == "Elasticsearch"
    assert logs(live_server.state, "es_bulk")[0]["service"] == "cart"
    reasons = [reason for reason, _ in dead(live_server.state, "es_bulk", 9)]
    assert sum("append-only" in r for r in reasons) == 2
    assert any("exceeds" in r for r in reasons)


def test_backpressure_is_an_es_429(live_server, monkeypatch):
    def full(*args, **kwargs):
        raise Backpressure("ingest queue full", 4)

    monkeypatch.setattr(live_server.state.store, "submit_async", full)
    r = httpx.post(f"{live_server.url}/_bulk", content=b'{"index":{"_index":"a"}}\n{"message":"x"}\n')
    assert r.status_code == 429
    assert r.headers["retry-after"] == "4"
    assert r.json()["error"]["type"] == "es_rejected_execution_exception"


def test_parse_bulk_units():
    mapping = MappingsConfig().es_bulk
    with pytest.raises(ParseError, match="no document line"):
        es_bulk.parse_bulk(b'{"index":{"_index":"a"}}\n', None, mapping)
    req = es_bulk.parse_bulk(b'{"index":{"_index":"a"}}\n{"message":"m","fields":{"service":"s"}}\n', None, mapping)
    assert req.parsed.values[0]["service"] == "s"
    assert req.parsed.raw(0).startswith('{"message"')
    assert es_bulk.es_root_document()["version"]["build_flavor"] == "default"
    assert isinstance(FieldMapping().timestamp, list)
