"""Run the loglens app under uvicorn (the `loglens serve` command)."""

from __future__ import annotations

import logging
import signal
import socket

import uvicorn
from fastapi import FastAPI

from loglens.api.app import create_app, runtime_of
from loglens.config import Settings
from loglens.errors import ServerBindError
from loglens.logs import configure_logging
from loglens.shutdown import DrainingServer

log = logging.getLogger("loglens.server")


def uvicorn_config(settings: Settings, app: FastAPI | None = None) -> uvicorn.Config:
    """uvicorn settings for loglens: uvloop + httptools, no access log on the hot path."""
    return uvicorn.Config(
        app or create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
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
        raise ServerBindError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def run_server(settings: Settings) -> None:
    """Serve until interrupted."""
    configure_logging(settings.logging.level)
    app = create_app(settings)
    config = uvicorn_config(settings, app)
    # Bind before announcing: "listening" is only logged once the port is ours, and with port 0
    # it names the port the kernel chose (test harnesses and supervisors read it from the log).
    sock = bind_listener(settings.server.host, settings.server.port)
    port = sock.getsockname()[1]
    host = f"[{settings.server.host}]" if ":" in settings.server.host else settings.server.host
    log.info("loglens listening", extra={"url": f"http://{host}:{port}/", "store": str(settings.storage.path)})
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal with the
    # handlers it found at start. No-op handlers make that re-raise harmless, so a clean
    # shutdown exits 0 (what process supervisors expect) instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    DrainingServer(config, settings.server.shutdown_timeout_seconds, lambda: runtime_of(app)).run(sockets=[sock])
    log.info("loglens stopped", extra={"store": str(settings.storage.path)})
