"""Graceful shutdown: SIGTERM under load with a real server process, and the drain logic in-process."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import uvicorn
from ops_support import Load, ServerProcess, now_iso, stored_messages, write_config

from loglens.api.app import create_app, runtime_of
from loglens.config import Settings
from loglens.ops.shutdown import DrainingServer, drained


def test_sigterm_under_load_stores_every_acknowledged_log(
    tmp_path: Path, server_process: Callable[[Path], ServerProcess]
) -> None:
    config = write_config(tmp_path)
    sp = server_process(config)
    load = Load(sp.url, clients=4, batch=100).start()
    load.wait_acked(1000)
    sp.signal(signal.SIGTERM)
    code = sp.proc.wait(timeout=30)
    load.stop()
    assert code == 0
    stored = stored_messages(tmp_path / "store" / "loglens.duckdb")
    assert load.acked, "no log was acknowledged"
    missing = load.acked - stored
    assert not missing, f"{len(missing)} acknowledged logs lost"
    # refused requests were told when to come back
    if load.statuses.get(503):
        assert load.retry_after
    # loglens's own logs are JSON lines in the log schema
    events = [json.loads(line) for line in sp.log_lines() if line.startswith("{")]
    messages = [e["message"] for e in events]
    assert "loglens listening" in messages and "loglens stopped" in messages
    assert any(m.startswith("drain") for m in messages)
    assert all(e["service"] == "loglens" and e["level"] in ("DEBUG", "INFO", "WARN", "ERROR", "FATAL") for e in events)


def _run_in_thread(settings: Settings, timeout_s: float) -> tuple[DrainingServer, threading.Thread, str]:
    """A draining server on a socket bound here (ephemeral port); returns it, its thread and URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(settings)
    config = uvicorn.Config(app, log_level="warning", loop="asyncio")
    server = DrainingServer(config, timeout_s, lambda: runtime_of(app))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_draining_refuses_ingest_with_503_and_retry_after(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    server, thread, url = _run_in_thread(settings, timeout_s=5)
    state = runtime_of(server.config.app)
    assert state is not None
    try:
        log = {"timestamp": now_iso(), "level": "INFO", "service": "s", "message": "m"}
        assert httpx.post(url + "/api/v1/logs", json=log).status_code == 200
        assert drained(state)
        # hold the drain open with a request "in flight" so the 503 window is observable
        state.pipeline.in_flight += 1
        server.handle_exit(signal.SIGTERM, None)
        deadline = time.monotonic() + 60
        while not state.pipeline.draining:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = httpx.post(url + "/api/v1/logs", json=log)
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        r = httpx.post(url + "/api/v1/logs", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 503
        metrics = httpx.get(url + "/metrics").text
        assert "loglens_draining 1.0" in metrics
        assert not drained(state)
        assert thread.is_alive()
        state.pipeline.in_flight -= 1
        thread.join(timeout=60)
        assert not thread.is_alive()
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def test_second_signal_skips_the_drain_and_timeout_bounds_it(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    server, thread, _ = _run_in_thread(settings, timeout_s=0.3)
    state = runtime_of(server.config.app)
    assert state is not None
    try:
        state.pipeline.in_flight += 1  # never drains: the timeout must end it
        started = time.monotonic()
        server.handle_exit(signal.SIGTERM, None)
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert time.monotonic() - started < 30  # the 0.3 s drain timeout ended it, not the 60 s join
    finally:
        server.should_exit = True
        thread.join(timeout=60)
    server2, thread2, _ = _run_in_thread(settings_factory(), timeout_s=60)
    state2 = runtime_of(server2.config.app)
    assert state2 is not None
    state2.pipeline.in_flight += 1
    server2.handle_exit(signal.SIGTERM, None)
    server2.handle_exit(signal.SIGTERM, None)  # second: stop now
    assert server2.should_exit
    server2.handle_exit(signal.SIGTERM, None)  # third: force
    assert server2.force_exit
    thread2.join(timeout=60)
    assert not thread2.is_alive()
