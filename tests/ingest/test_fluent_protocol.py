"""Fluent forward input: the real `fluent-logger` client, raw frames of every mode, acks after
commit, the shared-key handshake, and bad frames that are dead-lettered without harm."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import socket
import struct
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import orjson
import pytest
from fluent import asyncsender, handler, sender
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_helpers import dead, logs

from loglens.config import FluentConfig, MappingsConfig
from loglens.errors import Backpressure
from loglens.ingest import fluent


@pytest.fixture
def fluent_server(settings_factory, live_server_factory):
    srv = live_server_factory(settings_factory("protocols:\n  fluent: {enabled: true, port: 0}\n"))
    return srv, srv.state.fluent


def event_time(t: float) -> msgpack.ExtType:
    seconds = int(t)
    return msgpack.ExtType(0, struct.pack(">II", seconds, int((t - seconds) * 1e9)))


class Conn:
    """A raw forward-protocol connection."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.unpacker = msgpack.Unpacker(raw=False)

    def send(self, *messages: Any) -> None:
        self.sock.sendall(b"".join(msgpack.packb(m) for m in messages))

    def receive(self) -> Any:
        """The next value the server sends (acks, HELO, PONG); None when it closed the connection."""
        while True:
            for value in self.unpacker:
                return value
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:  # closed with our bytes unread
                return None
            if not data:
                return None
            self.unpacker.feed(data)

    def close(self) -> None:
        self.sock.close()


def _logger(h: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"fluent-test-{os.getpid()}-{time.monotonic_ns()}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(h)
    return logger


def test_fluent_logger_sender_handler_and_asyncsender(fluent_server):
    srv, server = fluent_server
    before = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)
    s = sender.FluentSender("shop", port=server.port, nanosecond_precision=True)
    assert s.emit("cart", {"message": "item added", "level": "info", "user_id": "u-1", "sku": "A-7"})
    past = int(time.time()) - 60 + 0.25
    assert s.emit_with_time("cart", past, {"log": "legacy line", "level": "warning"})
    s.close()
    h = handler.FluentHandler("billing", port=server.port)
    h.setFormatter(handler.FluentRecordFormatter({"level": "%(levelname)s", "message": "%(message)s"}))
    _logger(h).error("card declined")
    h.close()
    a = asyncsender.FluentSender("jobs", port=server.port)
    assert a.emit("nightly", {"msg": "export done", "service": "exporter", "response_time_ms": 41.5})
    a.close()
    rows = logs(srv.state, "fluent", 4)
    got = sorted((r["service"], r["level"], r["message"]) for r in rows)
    assert got == [
        ("billing", "ERROR", "card declined"),
        ("exporter", "INFO", "export done"),
        ("shop.cart", "INFO", "item added"),
        ("shop.cart", "WARN", "legacy line"),
    ]
    by_msg = {r["message"]: r for r in rows}
    added = by_msg["item added"]
    assert added["user_id"] == "u-1" and before <= added["ts"] <= datetime.now(UTC).replace(tzinfo=None)
    assert orjson.loads(added["metadata"]) == {"fluent_tag": "shop.cart", "sku": "A-7"}
    assert by_msg["legacy line"]["ts"] == datetime.fromtimestamp(past, UTC).replace(tzinfo=None)
    assert by_msg["export done"]["response_time_ms"] == 41.5
    # rows are visible a moment before the listener's own counters catch up
    deadline = time.monotonic() + 30
    while server.stats.committed < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.stats.committed == 4 and server.stats.bad_frames == 0


def test_every_mode_acks_only_after_commit(fluent_server):
    srv, server = fluent_server
    now = time.time()
    c = Conn(server.port)
    packed = b"".join(msgpack.packb([event_time(now), {"message": f"packed {i}", "level": "debug"}]) for i in range(3))
    members = gzip.compress(packed[: len(packed) // 2]) + gzip.compress(packed[len(packed) // 2 :])
    frames = [
        ("message", ["app.msg", int(now), {"message": "message mode"}, {"chunk": "c-1"}]),
        (
            "forward",
            ["app.fwd", [[event_time(now), {"log": "forward 1"}], [now, {"log": "forward 2"}]], {"chunk": "c-2"}],
        ),
        ("packed", ["app.packed", packed, {"chunk": "c-3", "size": 3}]),
        ("compressed", ["app.gz", members, {"chunk": "c-4", "size": 3, "compressed": "gzip"}]),
    ]
    expected = 0
    for name, frame in frames:
        c.send(frame)
        ack = c.receive()
        assert ack == {"ack": frame[-1]["chunk"]}, name
        # Read the store at once, with no polling: an ack means the records are already committed.
        expected += {"message": 1, "forward": 2, "packed": 3, "compressed": 3}[name]
        assert srv.state.store.query("SELECT count(*) FROM logs WHERE source = 'fluent'")[0][0] == expected, name
    c.send(["app.noack", int(now), {"message": "no chunk, no ack"}])
    c.close()
    rows = logs(srv.state, "fluent", 10)
    assert [(r["service"], r["message"]) for r in rows][-4:] == [
        ("app.gz", "packed 0"),
        ("app.gz", "packed 1"),
        ("app.gz", "packed 2"),
        ("app.noack", "no chunk, no ack"),
    ]
    assert {r["level"] for r in rows if r["service"] == "app.packed"} == {"DEBUG"}
    assert server.stats.acks == 4


def test_bad_frames_are_dead_lettered_and_the_listener_survives(fluent_server, monkeypatch):
    srv, server = fluent_server
    now = int(time.time())
    c = Conn(server.port)
    c.send(
        "just a string",
        [5, now, {"message": "tag is a number"}],
        ["bad.time", {"t": 1}, {"message": "x"}, {"chunk": "b-1"}],
        ["bad.mode", "yesterday", {"message": "x"}, {}],
        ["bad.record", now, ["not", "a", "map"]],
        ["bad.entry", [[now, {"message": "good one"}], "not an entry"]],
        ["bad.gzip", b"not gzip", {"compressed": "gzip", "chunk": "b-2"}],
        ["bad.codec", b"", {"compressed": "zstd"}],
        ["bad.packed", b"\xc1\xc1", {}],
        ["metrics", [[now, {"m": 1}]], {"fluent_signal": 1}],
        ["bad.option", now, {"message": "x"}, "not a map"],
        ["bad.time", msgpack.ExtType(5, b"12345678"), {"message": "x"}],
        ["bad.schema", now, {"message": "no level is fine, no service is not", "service": ""}],
    )
    assert c.receive() == {"ack": "b-1"}  # handled (dead-lettered) counts as done: no endless resend
    assert c.receive() == {"ack": "b-2"}
    c.send(["after.garbage", now, {"message": "still in sync"}, {"chunk": "b-3"}])
    assert c.receive() == {"ack": "b-3"}
    c.sock.sendall(b"\xc1 this is not msgpack")
    assert c.receive() is None  # the stream cannot be resynchronised: the connection is closed
    c.close()
    c2 = Conn(server.port)  # ... and the listener is still there
    c2.send(["alive", now, {"message": "new connection"}, {"chunk": "z"}])
    assert c2.receive() == {"ack": "z"}
    c2.close()
    reasons = [reason for reason, _ in dead(srv.state, "fluent", 14)]
    for expected in (
        "fluent: a message must be an array",
        "fluent: tag: must be a string",
        "fluent: time: must be an integer",
        "fluent: record: must be a map",
        "fluent: an entry must be [time, record]",
        "fluent: compressed entries are not valid gzip",
        "fluent: compressed: 'zstd' is not supported",
        "fluent: packed entries are not MessagePack",
        "fluent: fluent_signal 1: only logs are accepted",
        "fluent: option: must be a map",
        "fluent: Forward mode is [tag, entries, option?]",
        "fluent: time: unknown extension type 5",
        "service: ",
        "fluent: not MessagePack",
    ):
        assert sum(r.startswith(expected) for r in reasons) == 1, (expected, reasons)
    assert [r["message"] for r in logs(srv.state, "fluent", 3)] == ["good one", "still in sync", "new connection"]
    raw = dict(srv.state.store.query("SELECT reason, raw FROM dead_letter WHERE source = 'fluent'"))
    assert orjson.loads(raw["fluent: tag: must be a string"]) == [5, now, {"message": "tag is a number"}]

    # A message above max_chunk_bytes is refused (and dead-lettered) without buffering it all.
    big = Conn(server.port)
    with contextlib.suppress(OSError):  # the server may close while we are still sending
        big.sock.sendall(msgpack.packb(["big", now, {"message": "x" * (17 * 1024 * 1024)}]))
    assert big.receive() is None
    big.close()
    assert any("larger than max_chunk_bytes" in r for r, _ in dead(srv.state, "fluent", 15))

    # Backpressure: the ack waits until the retried commit succeeded.
    real = srv.state.store.submit_async
    calls = {"n": 0}

    def full_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise Backpressure("ingest queue full", 1)
        return real(*args, **kwargs)

    monkeypatch.setattr(srv.state.store, "submit_async", full_once)
    c3 = Conn(server.port)
    c3.send(["retry", now, {"message": "after backpressure"}, {"chunk": "r"}])
    assert c3.receive() == {"ack": "r"}
    c3.close()
    assert calls["n"] == 2
    assert logs(srv.state, "fluent", 4)[-1]["message"] == "after backpressure"


def test_shared_key_handshake(settings_factory, live_server_factory):
    srv = live_server_factory(
        settings_factory("protocols:\n  fluent: {enabled: true, port: 0, shared_key: s3cret, self_hostname: lens-1}\n")
    )
    server = srv.state.fluent

    def ping(conn: Conn, key: str) -> tuple[list[Any], bytes, str]:
        helo = conn.receive()
        assert helo[0] == "HELO" and helo[1]["auth"] == "" and helo[1]["keepalive"] is True
        nonce = helo[1]["nonce"]
        salt = "salt-1"
        digest = hashlib.sha512(salt.encode() + b"client-host" + nonce + key.encode()).hexdigest()
        conn.send(["PING", "client-host", salt, digest, "", ""])
        return conn.receive(), nonce, salt

    good = Conn(server.port)
    pong, nonce, salt = ping(good, "s3cret")
    assert pong[:4] == ["PONG", True, "", "lens-1"]
    assert pong[4] == hashlib.sha512(salt.encode() + b"lens-1" + nonce + b"s3cret").hexdigest()
    good.send(["secure", int(time.time()), {"message": "authenticated"}, {"chunk": "k"}])
    assert good.receive() == {"ack": "k"}
    good.close()

    bad = Conn(server.port)
    pong, _, _ = ping(bad, "wrong")
    assert pong == ["PONG", False, "shared_key mismatch", "", ""]
    assert bad.receive() is None
    bad.close()
    rude = Conn(server.port)  # skips the handshake and sends data at once
    assert rude.receive()[0] == "HELO"
    rude.send(["sneaky", int(time.time()), {"message": "unauthenticated"}])
    assert rude.receive()[:3] == ["PONG", False, "PING expected: ['PING', hostname, salt, digest, username, password]"]
    rude.close()
    # A plain client without the key gets nothing stored.
    s = sender.FluentSender("nokey", port=server.port)
    s.emit("x", {"message": "should not land"})
    s.close()
    assert [r["message"] for r in logs(srv.state, "fluent", 1)] == ["authenticated"]
    deadline = time.monotonic() + 30
    while server.stats.auth_failures < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.stats.auth_failures >= 3
    assert srv.state.store.query("SELECT count(*) FROM dead_letter")[0][0] == 0


def test_decoder_units():
    batch = fluent.Batch(MappingsConfig().fluent, 1024)
    batch.message(["t", [[[event_time(10.5), {"k": "v"}], {"log": "with metadata", "raw": b"\xffbin"}]]])
    rec = batch.values[0]
    assert rec["message"] == "with metadata" and rec["service"] == "t"
    assert rec["timestamp"] == "1970-01-01T00:00:10.500000+00:00"
    assert rec["metadata"] == {"fluent_tag": "t", "fluent_metadata": {"k": "v"}}
    assert rec["raw"] == "\ufffdbin"
    k8s = {"log": "pod line", "kubernetes": {"container_name": "api", "labels": {"app": "shop"}, "pod_name": "p"}}
    batch.message(["kube.var.log.containers.x" * 10, 5, k8s])
    assert (batch.values[1]["service"], batch.values[1]["kubernetes"]) == (
        "shop",
        {"container_name": "api", "pod_name": "p"},
    )
    assert fluent.event_time(msgpack.Timestamp(3, 7)) == (3, 7)
    assert fluent.event_time(1.5) == (1, 500_000_000)
    with pytest.raises(fluent.ForwardError):
        fluent.event_time(True)
    with pytest.raises(fluent.ForwardError, match="exceed max_chunk_bytes"):
        fluent.gunzip_members(gzip.compress(b"x" * 5000), 1024)
    with pytest.raises(fluent.ForwardError, match="truncated"):
        fluent.gunzip_members(gzip.compress(b"x" * 100)[:-8], 1024)
    assert fluent.render([b"\x00", msgpack.ExtType(1, b"a")]).startswith('["base64:AA=="')
    assert FluentConfig().port == 24224 and FluentConfig().enabled is False


def test_no_ack_while_draining_and_stop_closes_open_connections(fluent_server):
    srv, server = fluent_server
    c = Conn(server.port)
    srv.state.pipeline.draining = True  # as on SIGTERM: nothing new is committed, so nothing is acked
    c.send(["drain", int(time.time()), {"message": "not now"}, {"chunk": "d"}])
    assert c.receive() is None  # closed without an ack: the client keeps the chunk and resends
    c.close()
    srv.state.pipeline.draining = False
    assert srv.state.store.query("SELECT count(*) FROM logs WHERE source = 'fluent'")[0][0] == 0
    idle = Conn(server.port)
    idle.send(["first", int(time.time()), {"message": "before stop"}, {"chunk": "s"}])
    assert idle.receive() == {"ack": "s"}
    srv.stop()  # the app lifespan stops the listener with this connection still open
    assert idle.receive() is None
    idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=9)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


def test_a_map_keyed_by_an_array_breaks_the_stream_with_a_reason() -> None:
    """Valid MessagePack that no Python dict can hold ({[1]: 2}) is a broken stream, not a crash."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=4096)
    unpacker.feed(msgpack.packb(["tag", 1, {"message": "ok"}]) + b"\x81\x91\x01\x02")
    server = fluent.FluentServer(None, MappingsConfig().fluent, FluentConfig(max_chunk_bytes=4096))  # decode only
    got, broken = server._decode(unpacker)
    assert broken is not None and broken.startswith("not MessagePack (TypeError")
    assert len(got.values) == 1  # the message before it still counts


@settings(max_examples=300, deadline=None)
@given(st.one_of(_values, st.lists(_values, min_size=1, max_size=5), st.binary(max_size=64)))
def test_any_value_or_bytes_decode_without_raising(value):
    """Whatever arrives, decoding yields records or reasons (never an exception), one per slot."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=4096)
    unpacker.feed(value if isinstance(value, bytes) else msgpack.packb(value))
    server = fluent.FluentServer(None, MappingsConfig().fluent, FluentConfig(max_chunk_bytes=4096))  # decode only
    got, broken = server._decode(unpacker)
    assert broken is None or broken.startswith("not MessagePack")
    for i, v in enumerate(got.values):
        assert (v is None) == (i in got.failures)
        assert isinstance(got.parsed().raw(i), str)
