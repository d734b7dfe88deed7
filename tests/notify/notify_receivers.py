"""Helpers for notifier tests: a scripted loopback HTTP receiver and test alerts (imported by tests)."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from loglens.models import Alert


@dataclass
class Reply:
    """One scripted answer of the receiver."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


@dataclass
class Received:
    """One request the receiver got."""

    at: float
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is expected in these tests


class Receiver:
    """A threaded HTTP server on 127.0.0.1 answering POSTs from a script, then with `default`."""

    def __init__(self, port: int = 0, script: list[Reply] | None = None, default: Reply | None = None) -> None:
        self.script = list(script or [])
        self.default = default or Reply()
        self.requests: list[Received] = []
        self._cond = threading.Condition()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver._cond:
                    reply = receiver.script.pop(0) if receiver.script else receiver.default
                if reply.delay:
                    time.sleep(reply.delay)
                with receiver._cond:
                    receiver.requests.append(
                        Received(time.monotonic(), self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    receiver._cond.notify_all()
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        self._server = _QuietServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/hook/secret-path-token"

    def wait_for(self, n: int, timeout: float = 60) -> list[Received]:
        """Block until at least `n` requests were received (or fail)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver got {len(self.requests)} request(s), expected {n}")
                self._cond.wait(left)
            return list(self.requests)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_alert(
    rule: str = "error_rate",
    service: str = "checkout",
    severity: str = "critical",
    state: str = "firing",
    summary: str = "error rate 25% > 10% over 60s",
    alert_id: str = "a-1",
    **kwargs: Any,
) -> Alert:
    """An Alert as the alerting engine would produce it."""
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return Alert(
        id=alert_id,
        rule=rule,
        service=service,
        severity=severity,
        state=state,
        value=kwargs.pop("value", 0.25),
        threshold=kwargs.pop("threshold", 0.10),
        summary=summary,
        started_at=start,
        fired_at=kwargs.pop("fired_at", start),
        resolved_at=kwargs.pop("resolved_at", None),
        labels=kwargs.pop("labels", {"env": "test"}),
    )
