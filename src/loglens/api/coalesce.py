"""A transport wrapper that sends a response's head and body in one socket write.

uvicorn writes the status line and headers as soon as the app sends `http.response.start`, then
the body on `http.response.body`: two `send()` system calls, two TCP segments (the socket has
`TCP_NODELAY`) and two wake-ups of the client for every response. For a one-log ingest answer
that was about a tenth of the event loop's CPU per request. The wrapper holds a write that looks
like a response head and sends it together with the next write; if no write follows in the same
turn of the event loop (a HEAD answer, a 100 Continue, a streamed response that waits for data),
the held bytes go out on the next turn. Bytes are never reordered: every other operation on the
transport (close, EOF, abort) first sends what is held.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport:
    """Forwards to `transport`, merging a response head with the write that follows it."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write `data`; a response head is held until the next write or the next loop turn."""
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + bytes(data))
            return
        if isinstance(data, bytes) and data.startswith(b"HTTP/") and data.endswith(b"\r\n\r\n"):
            self._held = data
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        """Send a held response head now."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def writelines(self, list_of_data: Any) -> None:
        """Write several buffers, after anything held."""
        self.flush()
        self._transport.writelines(list_of_data)

    def close(self) -> None:
        """Send what is held, then close."""
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        """Send what is held, then half-close."""
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        """Close at once; held bytes are dropped with the rest of the write buffer."""
        self._held = None
        self._transport.abort()

    # The calls uvicorn makes on every request, forwarded without __getattr__'s lookup.
    def is_closing(self) -> bool:
        """Whether the transport is closing or closed."""
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        """Stop reading from the socket (flow control)."""
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Resume reading from the socket (flow control)."""
        self._transport.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Socket details (peer name, socket, SSL object) of the wrapped transport."""
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
