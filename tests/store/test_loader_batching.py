"""When the loader loads: at the interval, at once for a whole load or a reader, and — under a
stream on pace to make a whole load within `_STRETCH_S` — past the interval, at most that long."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from loglens.store import Store
from loglens.store.loader import _STRETCH_S, LOAD_LOGS, ROW_GROUP_LOGS, Loader
from loglens.store.wal import Wal


def _loader(tmp_path: Path, batch_logs: int = 1000) -> Loader:
    """A loader that is never started: only its timing decisions are exercised."""
    wal = Wal(tmp_path / "wal")
    return Loader(
        wal,
        lambda: duckdb.connect(),
        0,
        interval_s=0.2,
        batch_logs=batch_logs,
        durable_lsn=lambda: 1 << 20,  # a MiB durable, none loaded
        on_loaded=lambda frames: None,
        on_failure=lambda: None,
        maintenance=lambda: None,
    )


def _announced(loader: Loader, logs: int, seconds_ago: float) -> None:
    """As if the writer had announced `logs` logs, the first of them `seconds_ago`."""
    loader.notify_durable(logs)
    loader._first_pending = time.monotonic() - seconds_ago


def test_the_default_load_is_whole_row_groups(tmp_path: Path) -> None:
    assert LOAD_LOGS % ROW_GROUP_LOGS == 0 and LOAD_LOGS >= 2 * ROW_GROUP_LOGS
    assert Store(tmp_path / "s.duckdb").load_batch_logs == LOAD_LOGS


def test_before_the_interval_only_a_whole_load_is_due(tmp_path: Path) -> None:
    loader = _loader(tmp_path)
    _announced(loader, 999, 0.0)
    assert not loader._due()
    loader.notify_durable(1)  # the 1000th log makes a whole load
    assert loader._due()


def test_a_slow_stream_is_loaded_at_the_interval(tmp_path: Path) -> None:
    loader = _loader(tmp_path)
    _announced(loader, 100, 0.3)  # 333 logs/s: a whole load would take 3 s
    assert loader._due()


def test_a_stream_on_pace_waits_past_the_interval_at_most_the_stretch(tmp_path: Path) -> None:
    loader = _loader(tmp_path)
    _announced(loader, 600, 0.3)  # 2,000 logs/s: a whole load within half a second
    assert not loader._due()
    assert 0 < loader._wait_timeout() <= 0.05  # it re-checks the pace meanwhile
    loader._first_pending = time.monotonic() - 0.7  # the stream stopped: 600 logs in 0.7 s is off pace
    assert loader._due()
    loader._first_pending = time.monotonic() - _STRETCH_S  # never longer than the stretch
    loader._pending_logs = 999
    assert loader._due()


def test_a_reader_never_waits_for_the_stretch(tmp_path: Path) -> None:
    loader = _loader(tmp_path)
    _announced(loader, 600, 0.3)
    assert not loader._due()
    loader.request_flush()
    assert loader._due()
