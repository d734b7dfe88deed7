"""DuckDB settings that keep the store's memory bounded in a long-running server."""

from __future__ import annotations

from pathlib import Path

from loglens.store import Store


def test_duckdb_allocator_returns_freed_memory_in_the_background(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb", memory_limit="64MB").start()
    try:
        rows = store.query(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('allocator_background_threads', 'memory_limit')"
        )
    finally:
        store.close()
    settings = dict(rows)
    # without the background thread, freed pages stay resident until a task peaks past 128 MB
    assert settings["allocator_background_threads"] == "true"
    assert settings["memory_limit"].startswith("61") or settings["memory_limit"].startswith("64")
