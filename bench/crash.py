"""kill -9 trials against a real `loglens serve` under concurrent ingest, and a restart with a WAL backlog.

Each trial: small clients (one sends one log per request, the others 1-40) and bulk clients
(500-3000 logs per request) send NDJSON (unique trace_id per log, half with an Idempotency-Key),
the server is SIGKILLed at a random moment, restarted on the same store (must come back
healthy), and unanswered keyed requests are retried. At the end the WAL left by the last kill is
replayed and the DuckDB file is opened directly: every acknowledged log exactly once,
unacknowledged at most once, keyed retries once, metric tables equal to the stored logs.

Then a WAL backlog of `--backlog-mb` is written (acknowledged, loader stopped, as after a long
DuckDB outage) and `loglens serve` is started on it: time to serving (/healthz 200) and the
replay rate until the loader has caught up.

    python bench/crash.py [--trials 100] [--clients 4] [--bulk-clients 1] [--backlog-mb 1024]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "reliability"))  # the harness shared with tests/reliability/test_crash.py

from crash_harness import ServerProcess, run_crash_trials, write_config  # noqa: E402

from loglens.demo import generate_logs  # noqa: E402
from loglens.schema import LogSchema, now_us, parse_values  # noqa: E402
from loglens.store import Store  # noqa: E402


def build_backlog(db_path: Path, megabytes: int) -> tuple[int, int]:
    """Acknowledge logs into the WAL with the loader stopped until it holds `megabytes`; (logs, bytes)."""
    schema = LogSchema.from_file(REPO / "schemas" / "log_schema.yaml")
    batch = schema.validate(parse_values(list(generate_logs(20_000, seed=3))), "bench", now_us()).table
    store = Store(db_path).start()
    assert store.loader is not None
    store.loader.stop(drain=False)  # as if DuckDB could not keep up: everything stays in the WAL
    logs = 0
    while store.wal.size_bytes() < megabytes << 20:
        logs += store.submit(batch, [], now_us()).result().accepted
    size = store.wal.size_bytes()
    store.close()
    return logs, size


def restart_with_backlog(workdir: Path, megabytes: int) -> str:
    """Start a server on a WAL backlog; report time to serving and the replay rate."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = write_config(workdir, 0)  # the server binds a free port and names it in its log
    logs, size = build_backlog(workdir / "store" / "loglens.duckdb", megabytes)
    server = ServerProcess(cfg, 0, workdir / "server.log")
    try:
        started = time.monotonic()
        serving_s = server.start(timeout=120)
        replay_s = None
        while time.monotonic() - started < 1800:
            h = httpx.get(f"{server.url}/healthz", timeout=30).json()
            if h["replay_progress"] >= 1.0:
                replay_s = time.monotonic() - started
                break
            time.sleep(0.2)
        accepted = httpx.post(
            f"{server.url}/api/v1/logs",
            json={"timestamp": time.time(), "level": "INFO", "service": "after", "message": "x"},
            timeout=30,
        ).status_code
    finally:
        server.kill()
    if replay_s is None:
        return f"backlog {size / 2**20:.0f} MiB ({logs:,} logs): serving after {serving_s:.2f} s; replay not done"
    return (
        f"backlog {size / 2**20:.0f} MiB ({logs:,} logs): serving after {serving_s:.2f} s (ingest answered "
        f"{accepted} during replay); replay done after {replay_s:.1f} s = {size / 2**20 / replay_s:.1f} MiB/s, "
        f"{logs / replay_s:,.0f} logs/s"
    )


def main() -> int:
    """Run the trials and the backlog restart; print the summary; exit 1 on any durability problem."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--bulk-clients", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backlog-mb", type=int, default=1024)
    args = ap.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="loglens-crash-") as tmp:
        run = run_crash_trials(
            Path(tmp) / "crash", args.trials, args.clients, args.seed, bulk_clients=args.bulk_clients
        )
    print(
        f"trials {run.trials} in {time.monotonic() - started:.0f} s "
        f"(restart to healthy: mean {run.mean_restart_s:.2f} s, max {run.max_restart_s:.2f} s)"
    )
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
    if args.backlog_mb:
        with tempfile.TemporaryDirectory(prefix="loglens-backlog-") as tmp:
            print(restart_with_backlog(Path(tmp), args.backlog_mb))
    return 1 if run.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
