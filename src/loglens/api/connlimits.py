"""Connection-level limits for `loglens serve`: what uvicorn itself does not bound.

uvicorn bounds idle kept-alive connections (`timeout_keep_alive`) and answers 503 past
`limit_concurrency`, but a connection that never finishes its request head, or an upload that
stalls, is kept forever, and the number of open sockets has no cap: ~20,000 idle connections
exhaust file descriptors before authentication can even run. Like nginx's
`client_header_timeout` / `large_client_header_buffers` / `client_body_timeout` and Go's
`ReadHeaderTimeout`, this protocol (uvicorn's httptools protocol plus timers) enforces:

* a complete request head within `header_timeout_seconds` of connecting (or of the first byte
  of the next request on a kept-alive connection), else 408 and close;
* a request head of at most `max_header_bytes`, else 431 and close;
* no pause longer than `body_timeout_seconds` while a body is being received, else 408/close;
* at most `max_connections` open connections: a new one closes the longest-idle connection
  (no request in progress), or is itself refused with 503 when every connection is busy.

Every refusal is counted and logged as one WARN line per 10 s, never per connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from loglens.api.coalesce import CoalescingTransport

log = logging.getLogger("loglens.api.connlimits")

_LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits one server enforces (from `server.*` in config)."""

    max_connections: int
    header_timeout_s: float
    max_header_bytes: int
    body_timeout_s: float


class RefusalLog:
    """Counts refusals by kind and logs them at most once per interval (an attack is not a log flood)."""

    def __init__(self, every_s: float = _LOG_EVERY_S) -> None:
        self.every_s = every_s
        self.counts: dict[str, int] = {}
        self.totals: dict[str, int] = {}
        self._last = 0.0

    def add(self, kind: str, **fields: Any) -> None:
        """Count one refusal of `kind`; flush a summary line when the interval has passed."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.totals[kind] = self.totals.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            log.warning("connections refused or closed by server limits", extra={"counts": self.counts, **fields})
            self.counts = {}


def _response(status: int, reason: str, message: str) -> bytes:
    body = message.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head/body timeouts, a head size cap and a connection cap."""

    limits: ClassVar[ConnectionLimits]
    refusals: ClassVar[RefusalLog]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_pending = True
        self._message_done = True  # the parser is between two requests (not inside a body)
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._idle_since = time.monotonic()

    # --- connection lifecycle -------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept, start the head timer, and keep the number of open connections within the cap."""
        # One socket write per response instead of two (see api/coalesce.py).
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm_head_timer()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the timers with the connection."""
        self._cancel(self._head_timer)
        self._cancel(self._body_timer)
        self._head_timer = self._body_timer = None
        super().connection_lost(exc)

    def _busy(self) -> bool:
        """A request of this connection is being handled (its head is complete, its response is not)."""
        return self.cycle is not None and not self.cycle.response_complete

    def _make_room(self) -> None:
        idle = [c for c in self.connections if isinstance(c, GuardedHttpToolsProtocol) and c is not self]
        idle = [c for c in idle if not c._busy() and not c.transport.is_closing()]
        if idle:
            victim = min(idle, key=lambda c: c._idle_since)
            victim.transport.close()
            self.refusals.add("idle_closed_at_connection_limit", max_connections=self.limits.max_connections)
            return
        self.transport.write(_response(503, "Service Unavailable", "too many connections; retry later\n"))
        self.transport.close()
        self.refusals.add("refused_at_connection_limit", max_connections=self.limits.max_connections)

    # --- request head ---------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._cancel(self._head_timer)
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timeout)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._head_pending and not self.transport.is_closing():
            if self._head_bytes:
                self.transport.write(_response(408, "Request Timeout", "request head not received in time\n"))
            self.transport.close()
            self.refusals.add("header_timeout", header_timeout_s=self.limits.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        """Feed the parser, timing and sizing the request head and watching the body's pace.

        Timers are armed after the parser has seen the data, and only for what is still
        incomplete: most requests arrive whole in one read and then need no timer at all
        (creating and cancelling two timers per request cost ~2 % of its CPU).
        """
        if not self._head_pending and self._message_done and not self._busy():
            # the first bytes of the next request on a kept-alive connection
            self._head_pending = True
            self._head_bytes = 0
        super().data_received(data)
        if self._head_pending:
            if self._head_timer is None:
                self._arm_head_timer()
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes and not self.transport.is_closing():
                self.transport.write(_response(431, "Request Header Fields Too Large", "request head too large\n"))
                self.transport.close()
                self.refusals.add("header_too_large", max_header_bytes=self.limits.max_header_bytes)
        elif not self._message_done:  # a body is arriving (even after an early answer such as 503)
            self._arm_body_timer()

    def on_message_begin(self) -> None:
        """A request starts. Pipelined behind another in the same read, its head is timed too."""
        super().on_message_begin()
        if not self._head_pending:
            self._head_pending = True
            self._head_bytes = 0

    def on_headers_complete(self) -> None:
        """The head is complete: stop its timer (the body is watched from data_received)."""
        self._head_pending = False
        self._message_done = False
        self._cancel(self._head_timer)
        self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The request (head and body) is fully received."""
        self._message_done = True
        self._cancel(self._body_timer)
        self._body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """Idle again: this connection is now a candidate to close at the connection limit."""
        self._idle_since = time.monotonic()
        if self._message_done:
            self._cancel(self._body_timer)
            self._body_timer = None
        super().on_response_complete()

    # --- request body ---------------------------------------------------------------------

    def _arm_body_timer(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timeout)

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self._message_done or self.transport.is_closing():
            return
        cycle = self.cycle
        answering = cycle is not None and not cycle.response_complete
        if answering and (self.flow.read_paused or cycle.waiting_for_100_continue):
            self._arm_body_timer()  # the app is not reading yet: the client is not the one stalling
            return
        if cycle is None or not cycle.response_started:
            self.transport.write(_response(408, "Request Timeout", "request body stalled\n"))
        self.transport.close()
        self.refusals.add("body_timeout", body_timeout_s=self.limits.body_timeout_s)

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


def protocol_class(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class bound to `limits` (uvicorn instantiates it per connection)."""
    return type("LoglensHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits, "refusals": RefusalLog()})
