"""Issue 17 items 1-2: connection limits (head/body timeouts, head size, connection cap) and the
in-flight body budget, on a real uvicorn server configured exactly as `loglens serve` does it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import httpx
import uvicorn

from loglens.api.server import bind_listener, uvicorn_config
from loglens.config import Settings


@dataclass
class Served:
    url: str
    port: int
    server: uvicorn.Server


@contextmanager
def serve(settings: Settings) -> Iterator[Served]:
    """`settings` served with loglens's uvicorn config on a port the OS picks."""
    sock = bind_listener("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(settings))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", port, server)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    return s


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (60 s at most)."""
    out = b""
    s.settimeout(60)
    while chunk := s.recv(65536):
        out += chunk
    return out


def test_a_request_head_that_never_completes_is_closed_with_408(settings_factory: Callable[..., Settings]) -> None:
    with serve(settings_factory(server={"header_timeout_seconds": 0.5})) as srv:
        silent, partial = connect(srv.port), connect(srv.port)
        partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert read_until_closed(silent) == b""  # never sent a byte: just closed
        assert read_until_closed(partial).startswith(b"HTTP/1.1 408 ")
        # a kept-alive connection that starts its next request and stalls is timed out too
        # (sent in one write with the first request, so the stalled head is there before the
        # idle timer could close the connection, however slowly this test thread is scheduled)
        with connect(srv.port) as keep:
            keep.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTT")
            answer = read_until_closed(keep)
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert b"HTTP/1.1 408 " in answer
        assert httpx.get(srv.url + "/healthz", timeout=30).status_code == 200


def test_an_oversized_request_head_is_431(settings_factory: Callable[..., Settings]) -> None:
    with serve(settings_factory(server={"max_header_bytes": 4096})) as srv, connect(srv.port) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: " + b"a" * 10_000)
        assert read_until_closed(s).startswith(b"HTTP/1.1 431 ")


def test_a_stalled_upload_is_closed(settings_factory: Callable[..., Settings]) -> None:
    with serve(settings_factory(server={"body_timeout_seconds": 0.5})) as srv, connect(srv.port) as s:
        s.sendall(
            b"POST /api/v1/logs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n[{"
        )
        assert read_until_closed(s).startswith(b"HTTP/1.1 408 ")


def test_idle_connections_cannot_exhaust_the_server(settings_factory: Callable[..., Settings]) -> None:
    with serve(settings_factory(server={"max_connections": 20, "header_timeout_seconds": 600})) as srv:
        idle = [connect(srv.port) for _ in range(60)]
        try:
            # every new request is still served: the longest-idle connections make room
            for _ in range(5):
                assert httpx.get(srv.url + "/healthz", timeout=30).status_code == 200
            assert len(srv.server.server_state.connections) <= 20
            closed = 0
            for s in idle:
                s.settimeout(0.01)
                with suppress(TimeoutError):
                    closed += s.recv(1) == b""
            assert closed >= 40
        finally:
            for s in idle:
                s.close()


def _hold_upload(port: int, length: int, sent: int) -> socket.socket:
    """A connection that declared `length` body bytes and sent `sent` of them."""
    s = connect(port)
    s.sendall(
        b"POST /api/v1/logs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n"
        + f"Content-Length: {length}\r\n\r\n".encode()
        + b" " * sent
    )
    return s


def test_bodies_in_flight_share_one_budget(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(ingest={"max_body_bytes": 1_000_000}, server={"max_inflight_body_bytes": 1_500_000})
    line = b'{"timestamp":"2026-11-23T14:00:00Z","level":"INFO","service":"s","message":"m"}\n'
    with serve(settings) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        slow = _hold_upload(srv.port, 1_000_000, 1000)
        try:
            deadline = time.monotonic() + 30
            while True:  # the first upload has reserved its declared size
                r = c.post("/api/v1/logs", content=line * 9000, headers={"content-type": "application/x-ndjson"})
                if r.status_code == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
            assert "budget" in r.json()["detail"]

            def chunks() -> Iterator[bytes]:
                for _ in range(9):
                    yield line * 1000

            # a chunked upload is refused as soon as its bytes no longer fit
            r = c.post("/api/v1/logs", content=chunks(), headers={"content-type": "application/x-ndjson"})
            assert r.status_code == 503 and r.headers["retry-after"]
            # small requests still fit beside the held upload
            assert (
                c.post("/api/v1/logs", content=line, headers={"content-type": "application/x-ndjson"}).json()[
                    "accepted"
                ]
                == 1
            )
        finally:
            slow.close()
        deadline = time.monotonic() + 30
        while True:  # once the slow client is gone its reservation is released
            r = c.post("/api/v1/logs", content=line * 9000, headers={"content-type": "application/x-ndjson"})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert r.status_code == 200 and r.json()["accepted"] == 9000


def test_budget_must_hold_one_full_body() -> None:
    import pytest

    from loglens.config import parse_settings
    from loglens.errors import ConfigError

    with pytest.raises(ConfigError, match="max_inflight_body_bytes"):
        parse_settings("server: {max_inflight_body_bytes: 1000}\ningest: {max_body_bytes: 2000}\n")
