"""OTLP/HTTP logs: the real OpenTelemetry SDK exporter, JSON, partial success, garbage, backpressure."""

from __future__ import annotations

import gzip
import logging
import os
import time
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from protocol_helpers import dead, logs

from loglens.config import FieldMapping
from loglens.errors import Backpressure, StorageError
from loglens.ingest import otlp


def test_sdk_logging_handler_lands_with_service_level_message_time(live_server):
    provider = LoggerProvider(resource=Resource.create({"service.name": "checkout", "deployment.env": "test"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{live_server.url}/v1/logs")))
    logger = logging.getLogger(f"otlp-test-{os.getpid()}-{time.monotonic_ns()}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=provider))
    tracer = TracerProvider().get_tracer("t")
    before = datetime.now(UTC).replace(tzinfo=None)
    with tracer.start_as_current_span("req") as span:
        logger.error("payment declined", extra={"user.id": "u-7", "http.response_time_ms": 41.5, "order": 9})
        trace_hex = format(span.get_span_context().trace_id, "032x")
    logger.warning("slow")
    logger.debug("detail")
    provider.force_flush()
    provider.shutdown()
    after = datetime.now(UTC).replace(tzinfo=None)

    rows = logs(live_server.state, "otlp", 3)
    assert [(r["service"], r["level"], r["message"]) for r in rows] == [
        ("checkout", "ERROR", "payment declined"),
        ("checkout", "WARN", "slow"),
        ("checkout", "DEBUG", "detail"),
    ]
    first = rows[0]
    assert before - timedelta(seconds=1) <= first["ts"] <= after
    assert first["user_id"] == "u-7"
    assert first["response_time_ms"] == 41.5
    assert first["trace_id"] == trace_hex
    meta = orjson.loads(first["metadata"])
    assert meta["order"] == 9
    assert meta["resource"]["deployment.env"] == "test"
    assert "user.id" not in meta


def _json_request(records: list[dict], service: str | None = "billing") -> bytes:
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]} if service else {}
    return orjson.dumps(
        {"resourceLogs": [{"resource": resource, "scopeLogs": [{"scope": {"name": "s"}, "logRecords": records}]}]}
    )


def test_json_partial_success_and_protobuf_gzip(live_server):
    ns = time.time_ns()
    body = _json_request(
        [
            {
                "timeUnixNano": str(ns),
                "severityNumber": 17,
                "body": {"stringValue": "db down"},
                "traceId": "5b8efff798038103d269b633813fc60c",
                "spanId": "eee19b7ec3c1b174",
                "attributes": [
                    {"key": "enduser.id", "value": {"stringValue": "u-1"}},
                    {"key": "duration_ms", "value": {"doubleValue": 3.5}},
                    {"key": "tags", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"boolValue": True}]}}},
                    {
                        "key": "kv",
                        "value": {"kvlistValue": {"values": [{"key": "a", "value": {"bytesValue": "AQI="}}]}},
                    },
                ],
            },
            {"observedTimeUnixNano": str(ns), "severityText": "bogus", "body": {"stringValue": "x"}},
            {"severityNumber": 9, "body": {"kvlistValue": {"values": [{"key": "k", "value": {"intValue": "5"}}]}}},
        ]
    )
    with live_server.client() as client:
        resp = client.post("/v1/logs", content=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/json")
        partial = resp.json()["partialSuccess"]
        assert partial["rejectedLogRecords"] == "1"
        assert "record 1: level" in partial["errorMessage"]

        # protobuf + gzip; full success answers an empty ExportLogsServiceResponse
        req = ExportLogsServiceRequest()
        rl = req.resource_logs.add()
        kv = rl.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", "search"
        rec = rl.scope_logs.add().log_records.add()
        rec.time_unix_nano, rec.severity_number = ns, 13
        rec.body.string_value = "cache miss"
        resp = client.post(
            "/v1/logs",
            content=gzip.compress(req.SerializeToString()),
            headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
        )
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/x-protobuf"
        parsed = ExportLogsServiceResponse.FromString(resp.content)
        assert not parsed.HasField("partial_success")

    rows = logs(live_server.state, "otlp", 3)
    db, kvbody, cache = rows
    assert (db["service"], db["level"], db["message"]) == ("billing", "ERROR", "db down")
    assert db["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert (db["user_id"], db["response_time_ms"]) == ("u-1", 3.5)
    meta = orjson.loads(db["metadata"])
    assert meta["span_id"] == "eee19b7ec3c1b174"
    assert meta["tags"] == [1, True]
    assert meta["kv"] == {"a": "0102"}
    assert (kvbody["level"], orjson.loads(kvbody["message"])) == ("INFO", {"k": 5})
    # no time at all: the arrival time is used
    assert abs((kvbody["ts"] - datetime.now(UTC).replace(tzinfo=None)).total_seconds()) < 30
    assert (cache["service"], cache["level"], cache["message"]) == ("search", "WARN", "cache miss")
    reasons = dead(live_server.state, "otlp")
    assert reasons[0][0].startswith("level:")
    assert "bogus" in reasons[0][1]


def test_garbage_is_rejected_dead_lettered_and_server_keeps_serving(live_server):
    good = ExportLogsServiceRequest()
    rl = good.resource_logs.add()
    kv = rl.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "api"
    rec = rl.scope_logs.add().log_records.add()
    rec.time_unix_nano, rec.severity_number = time.time_ns(), 9
    rec.body.string_value = "x" * 200
    wire = good.SerializeToString()
    proto = {"Content-Type": "application/x-protobuf"}
    with live_server.client() as client:
        r = client.post("/v1/logs", content=os.urandom(512) + b"\xff\xff\xff", headers=proto)
        assert r.status_code == 400
        assert r.headers["content-type"] == "application/x-protobuf"
        assert b"undecodable" in r.content
        r = client.post("/v1/logs", content=wire[: len(wire) // 2], headers=proto)
        assert r.status_code == 400
        r = client.post("/v1/logs", content=b"[1, 2]", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["code"] == 3
        r = client.post("/v1/logs", content=b'{"resourceLogs": "nope"}', headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        r = client.post("/v1/logs", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        r = client.post(
            "/v1/logs", content=_json_request([{"traceId": "zz"}]), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400 and "hex" in r.json()["message"]
        r = client.post("/v1/logs", content=b"x" * (10 * 1024 * 1024 + 1), headers=proto)
        assert r.status_code == 413
        r = client.post("/v1/logs", content=b"x", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        r = client.post("/v1/logs", content=b"x", headers={**proto, "Content-Encoding": "gzip"})
        assert r.status_code == 400
        r = client.post("/v1/logs", content=b"x", headers={**proto, "Content-Encoding": "br"})
        assert r.status_code == 400
        r = client.post("/v1/logs", content=wire, headers=proto)
        assert r.status_code == 200
    reasons = [reason for reason, _ in dead(live_server.state, "otlp", 9)]
    assert len(reasons) == 9
    assert reasons[0].startswith("undecodable OTLP protobuf body")
    assert any("exceeds" in r for r in reasons)
    raws = [raw for _, raw in dead(live_server.state, "otlp", 9)]
    assert raws[0].startswith("base64:")
    assert logs(live_server.state, "otlp")[0]["service"] == "api"


def test_backpressure_and_storage_errors_answer_429_503_with_retry_after(live_server, monkeypatch):
    store = live_server.state.store
    req = ExportLogsServiceRequest()
    rec = req.resource_logs.add().scope_logs.add().log_records.add()
    rec.body.string_value = "x"
    wire = req.SerializeToString()

    def full(*args, **kwargs):
        raise Backpressure("ingest queue full", 7)

    monkeypatch.setattr(store, "submit_async", full)
    r = httpx.post(f"{live_server.url}/v1/logs", content=wire, headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 429 and r.headers["retry-after"] == "7"

    def broken(*args, **kwargs):
        raise StorageError("disk full", 3)

    monkeypatch.setattr(store, "submit_async", broken)
    r = httpx.post(f"{live_server.url}/v1/logs", content=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    assert r.json()["code"] == 14


def test_mapping_units():
    mapping = FieldMapping(default_level=None, default_service="fallback")
    assert otlp.severity_level(0, "", None) is None
    assert otlp.severity_level(1, "", None) == "DEBUG"
    assert otlp.severity_level(24, "", None) == "FATAL"
    assert otlp.severity_level(0, "Warning", "INFO") == "Warning"
    req = ExportLogsServiceRequest()
    rec = req.resource_logs.add().scope_logs.add().log_records.add()
    rec.time_unix_nano = 2**64 - 1  # the largest OTLP time: year 2554
    rec2 = req.resource_logs[0].scope_logs[0].log_records.add()
    a = rec2.attributes.add()
    a.key, a.value.string_value = "service", "from-attr"
    parsed = otlp.to_parsed(req, mapping, time.time_ns())
    assert parsed.values[0]["timestamp"].startswith("2554-07-21T23:34:33.709551")
    assert parsed.values[1]["service"] == "from-attr"
    assert "level" not in parsed.values[1]
    assert '"timeUnixNano"' in parsed.raw(0)
    req3 = ExportLogsServiceRequest()
    req3.resource_logs.add().scope_logs.add().log_records.add()
    assert otlp.to_parsed(req3, mapping, 0).values[0]["service"] == "fallback"
    assert otlp.content_kind("application/x-protobuf; charset=x") == otlp.PROTOBUF
    assert otlp.content_kind(None) == otlp.JSON
    assert otlp.encode_status(3, "é" * 100, otlp.PROTOBUF)[:3] == b"\x08\x03\x12"
    assert otlp.dead_letter_text(b"plain") == "plain"
    assert otlp.decode_request(b"  ", otlp.JSON).ByteSize() == 0
