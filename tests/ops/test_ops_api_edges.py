"""Issue 17 item 7 (API layer): concurrent replays are 409, Idempotency-Key is bounded, an aborted
upload is one INFO line without a traceback."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from ops_support import now_iso, write_config

from loglens.config import load_settings
from tests_support import LiveServer, count_rows


def test_concurrent_replays_get_409_not_500(tmp_path: Path, live_server_factory: Callable[..., LiveServer]) -> None:
    config = write_config(tmp_path, "")
    srv = live_server_factory(load_settings(config))
    # records still invalid on replay: every replay claims, re-validates and releases all of them
    bad = [{"timestamp": now_iso(), "level": "INFO", "service": "s"} for _ in range(5000)]  # no message
    with srv.client() as c:
        for _ in range(4):
            assert c.post("/api/v1/logs", json=bad).json()["rejected"] == 5000
    statuses: list[int] = []
    barrier = threading.Barrier(4)

    def replay() -> None:
        barrier.wait()
        r = httpx.post(srv.url + "/api/v1/dead-letter/replay", timeout=120)
        statuses.append(r.status_code)

    threads = [threading.Thread(target=replay) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(set(statuses)) <= [200, 409] and 200 in statuses, statuses
    assert count_rows(srv, "logs") == 0  # still invalid: nothing was ingested, nothing was lost
    assert count_rows(srv, "dead_letter") == 20000


def test_idempotency_key_is_bounded(live_server: LiveServer) -> None:
    log = {"timestamp": now_iso(), "level": "INFO", "service": "s", "message": "m"}
    with live_server.client() as c:
        r = c.post("/api/v1/logs", json=log, headers={"Idempotency-Key": "k" * 60_000})
        assert r.status_code == 422 and isinstance(r.json()["detail"], list)
        assert c.post("/api/v1/logs", json=log, headers={"Idempotency-Key": "k" * 200}).status_code == 200
        again = c.post("/api/v1/logs", json=log, headers={"Idempotency-Key": "k" * 200}).json()
        assert again["duplicate"] is True


def test_an_aborted_upload_is_logged_quietly(live_server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    # loglens's and uvicorn's loggers may not propagate (configure_logging, run by other tests in
    # this process): listen on them directly
    levels = {name: logging.getLogger(name).level for name in ("loglens", "uvicorn")}
    for name in levels:
        logging.getLogger(name).addHandler(caplog.handler)
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        _abort_upload(live_server, caplog)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).removeHandler(caplog.handler)
            logging.getLogger(name).setLevel(level)


def _abort_upload(live_server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    with socket.create_connection(("127.0.0.1", live_server.settings.server.port), timeout=30) as s:
        s.sendall(
            b"POST /api/v1/logs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"{" * 1000
        )
    deadline = time.monotonic() + 30
    while not any("client disconnected" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.05)
    gone = next(r for r in caplog.records if "client disconnected" in r.getMessage())
    assert gone.levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
