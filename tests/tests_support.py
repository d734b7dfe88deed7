"""Helpers shared by test modules (importable because tests/ is on sys.path via rootdir conftest)."""

from __future__ import annotations

from conftest import LiveServer  # re-export for type hints

__all__ = ["LiveServer", "count_rows"]


def count_rows(server: LiveServer, table: str) -> int:
    """Rows in `table` of the server's store, read through an independent cursor."""
    return int(server.state.store.query(f"SELECT count(*) FROM {table}")[0][0])
