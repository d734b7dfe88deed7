"""Loki push as snappy-compressed protobuf: the real npm client winston-loki, hand-built pushes, garbage."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cramjam
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_helpers import dead, logs

from loglens.config import MappingsConfig
from loglens.errors import ParseError, PayloadTooLarge
from loglens.ingest import loki, loki_proto

# Pinned like every other dependency; `snappy` is winston-loki's optional codec (without it the
# client silently falls back to JSON, which the test below rules out).
NPM_PACKAGES = ("winston@3.19.0", "winston-loki@6.1.7", "snappy@7.4.3")
PROTOBUF = {"Content-Type": "application/x-protobuf"}

NODE_SCRIPT = r"""
const winston = require('winston');
const LokiTransport = require('winston-loki');
const [url, tenant] = process.argv.slice(2);
let failed = null;
const plain = new LokiTransport({
  host: url, labels: {service: 'checkout', env: 'test'}, interval: 0.2,
  headers: {'X-Scope-OrgID': tenant}, gracefulShutdown: false,
  onConnectionError: (err) => { failed = String(err); },
});
const structured = new LokiTransport({
  host: url, labels: {app: 'billing'}, interval: 0.2, format: winston.format.json(), gracefulShutdown: false,
  onConnectionError: (err) => { failed = String(err); },
});
const a = winston.createLogger({level: 'debug', transports: [plain]});
const b = winston.createLogger({level: 'debug', transports: [structured]});
a.error('card declined');
a.warn('stock low');
b.info('invoice sent', {user_id: 'u-7', response_time_ms: 12.5});
(async () => {
  await new Promise((r) => setTimeout(r, 100));
  await plain.flush();
  await structured.flush();
  console.log(JSON.stringify({contentType: plain.batcher.contentType, failed}));
  process.exit(failed ? 1 : 0);
})();
"""


@pytest.fixture(scope="session")
def winston_loki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """winston + winston-loki + snappy installed once per test session from the npm registry."""
    npm = shutil.which("npm")
    assert npm, "npm is missing: run environment/setup.sh (apt-get install nodejs npm)"
    root = tmp_path_factory.mktemp("npm")
    (root / "package.json").write_text('{"name": "loglens-loki-test", "private": true}')
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *NPM_PACKAGES],
        cwd=root,
        check=True,
        timeout=600,
    )
    (root / "push.js").write_text(NODE_SCRIPT)
    return root


def _push(*streams: tuple[str, list[tuple[int, int, str, dict[str, str]]]]) -> bytes:
    req = loki_proto.PushRequest()
    for labels, entries in streams:
        s = req.streams.add()  # type: ignore[attr-defined]
        s.labels = labels
        for seconds, nanos, line, sm in entries:
            e = s.entries.add()
            e.timestamp.seconds, e.timestamp.nanos, e.line = seconds, nanos, line
            for k, v in sm.items():
                p = e.structuredMetadata.add()
                p.name, p.value = k, v
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def test_winston_loki_default_protobuf_mode(live_server, winston_loki):
    node = shutil.which("node")
    assert node, "node is missing: run environment/setup.sh (apt-get install nodejs)"
    before = datetime.now(UTC).replace(tzinfo=None)
    out = subprocess.run(
        [node, "push.js", live_server.url, "team-a"],
        cwd=winston_loki,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"contentType": "application/x-protobuf", "failed": None}  # not the JSON fallback
    rows = logs(live_server.state, "loki", 3)
    # winston-loki's default line is `${message} ${JSON of the other fields}`, stored as sent
    got = sorted((r["service"], r["level"], r["message"]) for r in rows)
    assert got == [
        ("billing", "INFO", "invoice sent"),
        ("checkout", "ERROR", 'card declined {"level":"error"}'),
        ("checkout", "WARN", 'stock low {"level":"warn"}'),
    ]
    by_msg = {r["message"].split(" {")[0]: r for r in rows}
    meta = orjson.loads(by_msg["card declined"]["metadata"])
    assert meta == {"labels": {"env": "test"}, "tenant": "team-a"}
    invoice = by_msg["invoice sent"]
    assert (invoice["user_id"], invoice["response_time_ms"]) == ("u-7", 12.5)  # a JSON line is mapped by field
    assert all(before - timedelta(seconds=1) <= r["ts"] <= datetime.now(UTC).replace(tzinfo=None) for r in rows)


def test_protobuf_push_maps_like_json_and_legacy_path(live_server):
    now = int(time.time())
    body = _push(
        (
            '{job="api", level="warn", pod="p-1"}',
            [
                (now, 123_456_789, "plain line", {"trace": "t-1"}),
                (now, 5, '{"level": "error", "message": "boom", "trace_id": "t9", "user_id": "u-1"}', {}),
            ],
        ),
        ('{service_name="edge"}', [(now, 0, "no level label", {})]),
    )
    with live_server.client() as client:
        r = client.post("/loki/api/v1/push", content=body, headers={**PROTOBUF, "X-Scope-OrgID": "tenant-1"})
        assert r.status_code == 204, r.text
        legacy = _push(('{app="old"}', [(now, 0, "legacy path", {})]))
        assert client.post("/api/prom/push", content=legacy, headers=PROTOBUF).status_code == 204
        # The same push as JSON lands as the same records (one mapping for both encodings).
        as_json = {
            "streams": [
                {
                    "stream": {"job": "api", "level": "warn", "pod": "p-1"},
                    "values": [[str(now * 10**9 + 123_456_789), "plain line", {"trace": "t-1"}]],
                }
            ]
        }
        r = client.post("/loki/api/v1/push", json=as_json, headers={"X-Scope-OrgID": "tenant-1"})
        assert r.status_code == 204
    rows = logs(live_server.state, "loki", 5)
    got = [(r["service"], r["level"], r["message"]) for r in rows]
    assert got == [
        ("api", "WARN", "plain line"),
        ("api", "ERROR", "boom"),
        ("edge", "INFO", "no level label"),
        ("old", "INFO", "legacy path"),
        ("api", "WARN", "plain line"),
    ]
    assert rows[0]["ts"] == rows[4]["ts"] and rows[0]["ts"].microsecond == 123_456
    assert (
        orjson.loads(rows[0]["metadata"])
        == orjson.loads(rows[4]["metadata"])
        == {
            "labels": {"pod": "p-1"},
            "tenant": "tenant-1",
            "structured_metadata": {"trace": "t-1"},
        }
    )
    assert (rows[1]["trace_id"], rows[1]["user_id"]) == ("t9", "u-1")
    assert "tenant" not in orjson.loads(rows[3]["metadata"] or "{}")


def test_protobuf_partial_rejection_and_garbage(live_server):
    now = int(time.time())
    body = _push(
        ('{level="info"}', [(now, 0, "no service", {})]),  # rejected by the schema
        ('{service="ok"}', [(now, 0, "fine", {}), (253402300800 * 10, 0, "year 10000", {})]),
    )
    with live_server.client() as client:
        r = client.post("/loki/api/v1/push", content=body, headers=PROTOBUF)
        assert r.status_code == 400
        assert r.text.startswith("2 of 3 entries ignored:")
        assert 'stream {level="info"} entry 0: missing required field: service' in r.text
        assert "timestamp" in r.text
        for bad in (
            b"\x00snappy",  # announces 0 bytes, then garbage
            b"\xff\xff\xff\xff\xff\xff",  # no end to the length varint
            bytes(cramjam.snappy.compress_raw(b"\x0a\x05\x0a\x03abc\xff")),  # truncated protobuf
            bytes(cramjam.snappy.compress_raw(b"\x0a\x07\x0a\x05{a=1}")),  # labels that do not parse
            b"\xc0\x84=" + b"\x00" * 20,  # announces 1 MB and is 23 bytes long
        ):
            r = client.post("/loki/api/v1/push", content=bad, headers=PROTOBUF)
            assert r.status_code == 400, (bad, r.text)
        bomb = b"\x80\x80\x80\x80\x01"  # a header announcing 256 MiB: refused before decompressing
        r = client.post("/loki/api/v1/push", content=bomb, headers=PROTOBUF)
        assert r.status_code == 413
        r = client.post("/loki/api/v1/push", content=body, headers={**PROTOBUF, "Content-Encoding": "br"})
        assert r.status_code == 400 and "Content-Encoding" in r.text
        ok = _push(('{service="still-up"}', [(now, 0, "alive", {})]))
        assert client.post("/loki/api/v1/push", content=ok, headers=PROTOBUF).status_code == 204
        # Content-Encoding: snappy (what some clients add) and a gzip-wrapped protobuf both decode
        r = client.post("/loki/api/v1/push", content=ok, headers={**PROTOBUF, "Content-Encoding": "snappy"})
        assert r.status_code == 204
        r = client.post(
            "/loki/api/v1/push", content=gzip.compress(ok), headers={**PROTOBUF, "Content-Encoding": "gzip"}
        )
        assert r.status_code == 204
    reasons = [reason for reason, _raw in dead(live_server.state, "loki", 9)]
    assert len(reasons) == 9
    assert sum(r.startswith("loki: body is not") for r in reasons) == 4
    assert sum(r.startswith("invalid label set") for r in reasons) == 1
    assert sum("exceeds" in r for r in reasons) == 1
    assert sum("Content-Encoding" in r for r in reasons) == 1
    stored = [r["service"] for r in logs(live_server.state, "loki", 4)]
    assert stored == ["ok", "still-up", "still-up", "still-up"]


def test_decoder_units():
    mapping = MappingsConfig().loki
    assert loki_proto.snappy_uncompressed_length(b"\x05") == 5
    assert loki_proto.snappy_uncompressed_length(b"\xac\x02") == 300
    with pytest.raises(ParseError):
        loki_proto.snappy_uncompressed_length(b"")
    with pytest.raises(PayloadTooLarge):
        loki_proto.unsnappy(b"\xac\x02", 100)
    parsed, streams = loki.decode_protobuf(_push(('{job="x"}', [(1, 0, "a", {"k": "v"})])), mapping, 1000, "t")
    assert len(parsed) == 1 and streams == ['{job="x"}']
    assert parsed.values[0]["metadata"] == {"tenant": "t", "structured_metadata": {"k": "v"}}
    assert orjson.loads(parsed.raw(0)) == ["1000000000", "a"]


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(max_size=300),
    snappy=st.booleans(),
    entries=st.lists(st.tuples(st.text(max_size=30), st.integers(-(2**40), 2**40), st.integers(0, 2**31)), max_size=4),
)
def test_any_protobuf_body_decodes_or_raises_parse_error(payload, snappy, entries):
    """Random bytes (raw or snappy-wrapped) and random entries never raise anything but ParseError."""
    mapping = MappingsConfig().loki
    body = bytes(cramjam.snappy.compress_raw(payload)) if snappy else payload
    bodies = [body, _push(('{job="x"}', [(s, n % 1_000_000_000, line, {}) for line, s, n in entries]))]
    for b in bodies:
        try:
            parsed, streams = loki.decode_protobuf(b, mapping, 4096)
        except (ParseError, PayloadTooLarge):
            continue
        assert len(streams) == len(parsed)
        for i, value in enumerate(parsed.values):
            assert (value is None) == (i in parsed.failures)
            assert isinstance(parsed.raw(i), str)
