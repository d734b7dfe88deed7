"""A short soak (the 10-minute version is bench/soak.py): steady ingest over 50 services against a
real server process; nothing lost, nothing refused, alert latency within target, memory bounded.

The rate is what 2 cores sustain while the rest of the suite runs beside it (pytest -n 2).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from soak_harness import run_soak

DURATION_S = 20
RATE = 3000


@pytest.mark.slow
@pytest.mark.xdist_group("soak")
def test_soak_loses_nothing_and_stays_bounded(tmp_path: Path) -> None:
    result = run_soak(tmp_path / "soak", DURATION_S, RATE, services=50, senders=2)
    summary = "\n".join(result.lines())
    assert result.lost == 0 and result.stored == result.acked, summary
    assert result.rejected_requests == 0, summary
    assert result.achieved_rate >= 0.8 * RATE, summary
    assert max(result.alert_latency_s) < 2.0, summary  # target p99 ≤ 1 s; headroom for a shared CI box
    # DuckDB's buffer cache grows with the data; loglens itself keeps O(services × buckets)
    assert result.rss_end_mb < result.rss_start_mb + 250, summary
