"""Helpers for operability tests: a real `loglens serve` process, a load generator, config files."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from serve_process import ServeProcess
from tests_support import REPO


def now_iso(offset_s: float = 0.0) -> str:
    """An RFC 3339 UTC timestamp `offset_s` from now."""
    return datetime.fromtimestamp(time.time() + offset_s, UTC).isoformat().replace("+00:00", "Z")


def write_config(tmp_path: Path, body: str = "", *, port: int | None = None, schema: Path | None = None) -> Path:
    """A config.yaml in tmp_path with its own store, port and (optionally) schema; `body` is appended.

    Port 0 (the default) lets an in-process test server bind an ephemeral port itself.
    """
    port = port or 0
    schema = schema or REPO / "schemas" / "log_schema.yaml"
    text = (
        f"server:\n  port: {port}\n  shutdown_timeout_seconds: 10\n"
        f"storage:\n  path: {tmp_path / 'store' / 'loglens.duckdb'}\n"
        f"schemas:\n  log: {schema}\n  anomaly: {REPO / 'schemas' / 'anomaly_schema.yaml'}\n"
        "notifiers: []\n"
    ) + body
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# The process harness is shared with the reliability tests and the benchmarks.
ServerProcess = ServeProcess


def start_process(config: Path) -> ServerProcess:
    """Start the server process (its config may say `port: 0`) and wait until /healthz answers.

    Each start gets a fresh log file, so `log_lines()` shows this run only.
    """
    log_path = config.with_suffix(".stderr.log")
    log_path.unlink(missing_ok=True)
    sp = ServeProcess(config, log_path=log_path)
    sp.start()
    return sp


@dataclass
class Load:
    """Clients posting batches continuously; remembers which logs were acknowledged (2xx)."""

    url: str
    clients: int = 3
    batch: int = 50
    service: str = "load"
    acked: set[str] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)
    retry_after: set[str] = field(default_factory=set)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for n in range(self.clients):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _run(self, n: int) -> None:
        seq = 0
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self._stop.is_set():
                ids = [f"c{n}-{seq}-{i}" for i in range(self.batch)]
                seq += 1
                body = [{"timestamp": now_iso(), "level": "INFO", "service": self.service, "message": m} for m in ids]
                try:
                    r = c.post("/api/v1/logs", json=body)
                except httpx.HTTPError:
                    with self._lock:
                        self.errors += 1
                    time.sleep(0.05)
                    continue
                with self._lock:
                    self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                    if 200 <= r.status_code < 300:
                        assert r.json()["accepted"] == len(ids)
                        self.acked.update(ids)
                    elif "retry-after" in r.headers:
                        self.retry_after.add(r.headers["retry-after"])

    def wait_acked(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < n:
            assert time.monotonic() < deadline, f"only {len(self.acked)} logs acknowledged"
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def stored_messages(store_path: Path, service: str = "load") -> set[str]:
    """Messages in the (closed) store file."""
    import duckdb

    with duckdb.connect(str(store_path), read_only=True) as db:
        return {r[0] for r in db.execute("SELECT message FROM logs WHERE service = ?", [service]).fetchall()}
