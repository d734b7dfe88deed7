"""Fixtures for operability tests (helpers live in ops_support.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ops_support import ServerProcess, start_process


@pytest.fixture
def server_process() -> Iterator[Callable[[Path], ServerProcess]]:
    started: list[ServerProcess] = []

    def factory(config: Path) -> ServerProcess:
        sp = start_process(config)
        started.append(sp)
        return sp

    yield factory
    for sp in started:
        sp.stop()
