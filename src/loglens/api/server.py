"""Run the loglens app under uvicorn (the `loglens serve` command).

Start-up failures are errors for the operator, not tracebacks: the listening socket is bound
before anything else (a busy port is one clear line and the store is never opened), a failing
app start-up (missing schema, locked store) is captured and re-raised to the CLI, and
"loglens listening" is logged only once the server accepts connections, with the real port.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

from loglens.api.app import create_app, runtime_of
from loglens.api.connlimits import ConnectionLimits, protocol_class
from loglens.config import Settings
from loglens.errors import LoglensError, ServerBindError, StartupError, describe
from loglens.ops.logs import configure_logging
from loglens.ops.shutdown import DrainingServer

log = logging.getLogger("loglens.api.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class StartupGuard:
    """ASGI wrapper that keeps the app's start-up exception instead of letting uvicorn log a traceback.

    Starlette reports a failing lifespan with the formatted traceback as the failure message;
    the guard blanks that message and stores the exception, which `run_server` re-raises.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.error: BaseException | None = None

    @property
    def state(self) -> Any:
        """The wrapped app's state."""
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def quiet_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                message = {"type": "lifespan.startup.failed", "message": ""}
            await send(message)

        try:
            await self.app(scope, receive, quiet_send)
        except BaseException as exc:
            self.error = exc
            raise


class _DropStartupFailed(logging.Filter):
    """Hide uvicorn's own "Application startup failed" line: the CLI prints the reason instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Application startup failed" not in record.getMessage()


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The connection limits of `server.*`."""
    server = settings.server
    return ConnectionLimits(
        max_connections=server.max_connections,
        header_timeout_s=server.header_timeout_seconds,
        max_header_bytes=server.max_header_bytes,
        body_timeout_s=server.body_timeout_seconds,
    )


def uvicorn_config(settings: Settings, app: Any | None = None) -> uvicorn.Config:
    """uvicorn settings for loglens: uvloop + httptools with loglens's connection limits, no access log."""
    return uvicorn.Config(
        app if app is not None else create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        loop="uvloop",
        http=protocol_class(connection_limits(settings)),
        timeout_keep_alive=settings.server.keep_alive_seconds,
        # No `limit_concurrency`: it counts connections already being closed (evicted idle ones), so
        # at the cap it would answer 503 to the very request an eviction made room for; the
        # protocol's cap (`server.max_connections`) replaces it.
        access_log=False,
        # loglens never uses the client address, so X-Forwarded-* rewriting (uvicorn trusts it
        # from 127.0.0.1 by default) would only be a per-request cost and a spoofing surface.
        proxy_headers=False,
        log_level="warning",
        log_config=None,  # uvicorn's own messages go through loglens's JSON-lines handler
        timeout_graceful_shutdown=10,
    )


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port); port 0 picks a free port. Raises ServerBindError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if port:
        # Rebinding a fixed port right after a restart must not wait out TIME_WAIT. Not for port
        # 0: Linux may then pick a port another SO_REUSEADDR socket holds, and listen() fails.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = " (another process uses it; pick another --port)" if exc.errno == errno.EADDRINUSE else ""
        raise ServerBindError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class LoglensServer(DrainingServer):
    """DrainingServer that logs "loglens listening" with the bound port once it accepts connections."""

    def __init__(self, config: uvicorn.Config, settings: Settings, parts: Callable[[], Any]) -> None:
        super().__init__(config, settings.server.shutdown_timeout_seconds, parts)
        self.settings = settings
        self.port: int | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up (lifespan, then serving on `sockets`), then the "listening" line."""
        await super().startup(sockets)
        if self.started and sockets:
            self.port = int(sockets[0].getsockname()[1])
            log.info(
                "loglens listening",
                extra={
                    "url": _url(self.settings.server.host, self.port),
                    "port": self.port,
                    "store": str(self.settings.storage.path),
                },
            )


def run_server(settings: Settings) -> None:
    """Serve until interrupted; LoglensError (or StartupError) when the server cannot start."""
    configure_logging(settings.logging.level)
    # Bind first: a busy port is one clear line and the store is never opened.
    sock = bind_listener(settings.server.host, settings.server.port)
    app = create_app(settings)
    guard = StartupGuard(app)
    config = uvicorn_config(settings, guard)
    quiet = _DropStartupFailed()
    logging.getLogger("uvicorn.error").addFilter(quiet)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal with the
    # handlers it found at start. No-op handlers make that re-raise harmless, so a clean
    # shutdown exits 0 (what process supervisors expect) instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server = LoglensServer(config, settings, lambda: runtime_of(app))
    try:
        server.run(sockets=[sock])
    except SystemExit:
        if guard.error is None:
            raise
    finally:
        sock.close()
        logging.getLogger("uvicorn.error").removeFilter(quiet)
    if guard.error is not None:
        if isinstance(guard.error, LoglensError):
            raise guard.error
        raise StartupError(f"cannot start: {describe(guard.error)}") from None
    log.info("loglens stopped", extra={"store": str(settings.storage.path)})
