"""Crash durability: kill -9 a real `loglens serve` under concurrent ingest, restart, verify the store.

Every log whose request got a 2xx must be stored exactly once per acknowledged copy, logs
without an answer at most once, keyed retries after the restart exactly once, metrics equal to
the stored logs, and the store must reopen cleanly after every kill (the harness waits for
/healthz 200 after each restart). bench/crash.py runs the same harness for 100 trials.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from crash_harness import run_crash_trials

TRIALS = 20


@pytest.mark.slow
@pytest.mark.xdist_group("crash")
def test_kill9_loses_no_acknowledged_log(tmp_path: Path) -> None:
    run = run_crash_trials(tmp_path / "crash", TRIALS, clients=4, seed=20, min_s=0.2, max_s=0.7)
    assert run.problems == []
    assert run.trials == TRIALS
    # the run must have exercised what it claims: acknowledged traffic, cut-off requests, keyed retries
    assert run.acked_logs > 500
    assert run.requests_failed >= TRIALS  # at least one in-flight request was cut off per kill
    assert run.keyed_retries > TRIALS
    assert run.stored_logs == run.acked_logs + run.unacked_stored
