"""Helpers shared by test modules: settings in tmp dirs, real servers on loopback ports.

A module (not conftest.py) so tests in any directory can import it unambiguously.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from loglens.api.app import create_app, runtime_of
from loglens.config import Settings, parse_settings
from loglens.runtime import Runtime
from serve_process import free_port, wait_until_serving

__all__ = ["REPO", "LiveServer", "count_rows", "free_port", "make_settings", "start_server", "wait_until_serving"]

REPO = Path(__file__).resolve().parents[1]


def make_settings(tmp_path: Path, yaml_text: str = "", **sections: Any) -> Settings:
    """Settings from YAML text with the store in tmp_path and the repo's schemas."""
    settings = parse_settings(yaml_text or "{}", base_dir=REPO)
    updates: dict[str, Any] = {
        "storage": settings.storage.model_copy(update={"path": tmp_path / "store" / "loglens.duckdb"}),
        # port 0: start_server binds an ephemeral port itself (no race with other processes)
        "server": settings.server.model_copy(update={"port": 0}),
    }
    for name, values in sections.items():
        # on top of the store path and port 0 above, never instead of them (a `server=` section
        # used to bring back the default port 8080, which parallel tests then fought over)
        updates[name] = updates.get(name, getattr(settings, name)).model_copy(update=values)
    return settings.model_copy(update=updates)


@dataclass
class LiveServer:
    """A real uvicorn server on loopback running a fresh loglens app."""

    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread
    app: Any
    listener: socket.socket

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.server.port}"

    @property
    def state(self) -> Runtime:
        """The running server's runtime (every component, typed)."""
        runtime = runtime_of(self.app)
        assert runtime is not None, "the server has not started"
        return runtime

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def start_server(settings: Settings, listener: socket.socket | None = None, app: Any = None) -> LiveServer:
    """Start loglens on a socket bound here (port 0: an ephemeral one) and wait until it serves.

    The socket is bound before uvicorn starts, so no other process can take the port between
    choosing it and listening on it (the race a "find a free port, then bind" helper has).
    uvicorn gets a duplicate and closes only that when it stops: pass the returned server's
    `listener` to start a second server on the same port with no window for another process.
    `app` replaces the app `create_app(settings)` builds (a test comparing app variants).
    """
    if listener is None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", settings.server.port))
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"port": listener.getsockname()[1]})}
    )
    app = create_app(settings) if app is None else app
    config = uvicorn.Config(app, log_level="warning", access_log=False, loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener.dup()]}, daemon=True)
    thread.start()
    # Generous: on a loaded 2-core machine opening DuckDB and starting the workers can take a while.
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server failed to start")
        time.sleep(0.02)
    return LiveServer(settings, server, thread, app, listener)


def count_rows(server: LiveServer, table: str) -> int:
    """Rows in `table` of the server's store, read through an independent cursor."""
    return int(server.state.store.query(f"SELECT count(*) FROM {table}")[0][0])
