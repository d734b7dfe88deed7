"""Every input appears in `loglens status` and `/metrics` with its per-input accepted/rejected counts."""

from __future__ import annotations

import socket
import time

import cramjam
import msgpack
from protocol_helpers import logs
from typer.testing import CliRunner

from loglens.cli import app
from loglens.ingest import inputs, loki_proto
from loglens.ops.status import render, store_status


def _loki_body() -> bytes:
    req = loki_proto.PushRequest()
    s = req.streams.add()  # type: ignore[attr-defined]
    s.labels = '{service="web"}'
    e = s.entries.add()
    e.timestamp.seconds, e.line = int(time.time()), "via loki"
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def test_status_and_metrics_list_each_input(settings_factory, live_server_factory):
    srv = live_server_factory(settings_factory("protocols:\n  fluent: {enabled: true, port: 0}\n"))
    port = srv.state.fluent.port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(msgpack.packb(["web", int(time.time()), {"message": "via fluent"}, {"chunk": "a"}]))
        sock.sendall(msgpack.packb(["web", "bad time", {"message": "x"}, {"chunk": "b"}]))
        unpacker = msgpack.Unpacker()
        acks = []
        while len(acks) < 2:
            unpacker.feed(sock.recv(4096))
            acks.extend(unpacker)
    with srv.client() as c:
        assert (
            c.post(
                "/loki/api/v1/push", content=_loki_body(), headers={"Content-Type": "application/x-protobuf"}
            ).status_code
            == 204
        )
        logs(srv.state, "loki")
        doc = c.get("/api/v1/status").json()
        metrics = c.get("/metrics").text
    by_source = {i["source"]: i for i in doc["inputs"]}
    assert by_source["fluent"] == {
        "source": "fluent",
        "protocol": "Fluent forward",
        "listen": f"tcp 127.0.0.1:{port}",
        "enabled": True,
        "accepted": 1,
        "rejected": 1,
    }
    assert (
        by_source["loki"]["accepted"] == 1 and by_source["loki"]["listen"] == "POST /loki/api/v1/push, /api/prom/push"
    )
    assert by_source["syslog"]["enabled"] is False and by_source["tail"]["enabled"] is False
    assert 'loglens_logs_accepted_total{source="fluent"} 1.0' in metrics
    assert 'loglens_logs_rejected_total{reason="protocol",source="fluent"} 1.0' in metrics
    assert 'loglens_logs_accepted_total{source="es_bulk"} 0.0' in metrics  # present from the start
    assert f'loglens_input_enabled{{listen="tcp 127.0.0.1:{port}",source="fluent"}} 1.0' in metrics
    assert "loglens_fluent_acks_total 2.0" in metrics and "loglens_fluent_connections" in metrics
    text = render(doc)
    assert "[on ] fluent   Fluent forward" in text and f"tcp 127.0.0.1:{port}  accepted 1, rejected 1" in text
    assert "[off] syslog" in text
    result = CliRunner().invoke(app, ["status", "--url", srv.url])
    assert result.exit_code == 0 and "fluent" in result.output


def test_stopped_store_status_lists_configured_inputs(settings_factory):
    settings = settings_factory("protocols:\n  fluent: {enabled: true, port: 24299, shared_key: k}\n")
    doc = store_status(settings)
    fluent = next(i for i in doc["inputs"] if i["source"] == "fluent")
    assert fluent["listen"] == "tcp 127.0.0.1:24299" and fluent["protocol"] == "Fluent forward (shared key)"
    assert fluent["accepted"] is None
    assert "[on ] fluent" in render(doc) and "accepted" not in "\n".join(inputs.render_lines(doc["inputs"]))
