"""100 kill -9 trials against a real `loglens serve` under concurrent ingest.

Each trial: 4 clients send NDJSON batches (unique trace_id per log, half with an
Idempotency-Key), the server is SIGKILLed at a random moment, restarted on the same store
(must come back healthy), and unanswered keyed requests are retried. At the end the store file
is opened directly: every acknowledged log exactly once, unacknowledged at most once, keyed
retries once, metric tables equal to the stored logs.

    python bench/crash.py [--trials 100] [--clients 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "reliability"))  # the harness shared with tests/reliability/test_crash.py

from crash_harness import run_crash_trials  # noqa: E402


def main() -> int:
    """Run the trials; print the summary; exit 1 on any durability problem."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="loglens-crash-") as tmp:
        run = run_crash_trials(Path(tmp) / "crash", args.trials, args.clients, args.seed)
    print(f"trials {run.trials} in {time.monotonic() - started:.0f} s (mean restart {run.mean_restart_s:.2f} s)")
    print(
        f"requests acknowledged {run.requests_ok}, cut off by kill -9 {run.requests_failed}, "
        f"keyed retries {run.keyed_retries}"
    )
    print(
        f"logs acknowledged {run.acked_logs}, stored {run.stored_logs} "
        f"(unacknowledged but committed {run.unacked_stored})"
    )
    for p in run.problems[:20]:
        print("PROBLEM:", p)
    print("OK: no acknowledged log lost or duplicated" if not run.problems else f"{len(run.problems)} problems")
    return 1 if run.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
