"""Run the loglens app under uvicorn (the `loglens serve` command)."""

from __future__ import annotations

import logging
import signal

import uvicorn
from fastapi import FastAPI

from loglens.api.app import create_app, runtime_of
from loglens.config import Settings
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


def run_server(settings: Settings) -> None:
    """Serve until interrupted."""
    configure_logging(settings.logging.level)
    app = create_app(settings)
    config = uvicorn_config(settings, app)
    log.info(
        "loglens listening",
        extra={"url": f"http://{settings.server.host}:{settings.server.port}/", "store": str(settings.storage.path)},
    )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal with the
    # handlers it found at start. No-op handlers make that re-raise harmless, so a clean
    # shutdown exits 0 (what process supervisors expect) instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    DrainingServer(config, settings.server.shutdown_timeout_seconds, lambda: runtime_of(app)).run()
    log.info("loglens stopped", extra={"store": str(settings.storage.path)})
