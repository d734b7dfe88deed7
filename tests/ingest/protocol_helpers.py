"""Helpers shared by the protocol tests (imported by module name; tests dirs have no packages)."""

from __future__ import annotations

import time
from typing import Any

from loglens.models import SCHEMA_FIELDS


def wait_rows(state: Any, sql: str, params: list[Any] | None = None, n: int = 1, timeout: float = 60) -> list[Any]:
    """Poll a store query until it returns at least `n` rows (data arrives over real sockets)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = state.store.query(sql, params or [])
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


def logs(state: Any, source: str, n: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
    """Stored logs of one source as dicts, ordered by id, once at least `n` are there."""
    cols = ["ts", *SCHEMA_FIELDS[1:], "metadata", "source"]
    rows = wait_rows(state, f"SELECT {', '.join(cols)} FROM logs WHERE source = ? ORDER BY id", [source], n, timeout)
    return [dict(zip(cols, r, strict=True)) for r in rows]


def dead(state: Any, source: str, n: int = 1, timeout: float = 60) -> list[tuple[str, str]]:
    """(reason, raw) of dead-letter records of one source, once at least `n` are there."""
    return wait_rows(state, "SELECT reason, raw FROM dead_letter WHERE source = ? ORDER BY id", [source], n, timeout)
