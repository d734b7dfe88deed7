"""Shared fixtures: each test builds its own settings, store (tmp_path) and server."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loglens.config import Settings
from tests_support import LiveServer, make_settings, start_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    return lambda yaml_text="", **sections: make_settings(tmp_path, yaml_text, **sections)


@pytest.fixture
def live_server_factory() -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def factory(settings: Settings, listener: socket.socket | None = None) -> LiveServer:
        srv = start_server(settings, listener)
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        srv.stop()
    for srv in started:
        srv.listener.close()


@pytest.fixture
def live_server(
    settings_factory: Callable[..., Settings], live_server_factory: Callable[[Settings], LiveServer]
) -> LiveServer:
    return live_server_factory(settings_factory())
