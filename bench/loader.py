"""The loader's cost per load: CPU of a trickle load and the bulk loading rate, vs DuckDB's own INSERT.

Builds a real store file (migrations applied) and a real WAL, appends frames as the WAL writer
would (group commits of a few logs each), and calls the loader's transaction (`Loader._apply`)
directly, measuring the calling thread's CPU time (`time.thread_time()`: what the loader takes
from the GIL and the cores under load) and wall time.

- trickle: `--trickle-logs` logs spread over `--frames` frames per load (the single-log `wrk`
  load: ~40 logs per 200 ms), `--loads` loads; variants with idempotency keys and a dead letter.
- the tail of loaded logs is folded into the metric partials every `--fold-every` loads (the
  loader does it every 10 s: 50 loads of 200 ms), its CPU reported apart and amortised per load.
- bulk: `--bulk-logs` logs in frames of 5,000 (bulk requests), one load each (plus the fold that
  follows it), vs — in the same
  run, same connection, same Arrow table — DuckDB's own `INSERT INTO <copy of logs> SELECT *
  FROM <arrow table>` in one transaction.

    python bench/loader.py [--trickle-logs 40] [--frames 8] [--loads 60] [--bulk-logs 100000] [--bulk-runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from loglens.demo import generate_logs  # noqa: E402
from loglens.schema import LogSchema, now_us, parse_values  # noqa: E402
from loglens.store import DEAD_ARROW_SCHEMA, Store  # noqa: E402
from loglens.store.loader import Loader  # noqa: E402
from loglens.store.wal import Frame, FrameAt, KeyRecord, Wal, encode  # noqa: E402

SCHEMA = LogSchema.from_file(REPO / "schemas" / "log_schema.yaml")


def make_logs(n: int, seed: int) -> pa.Table:
    """`n` validated demo logs with event times over the last few minutes."""
    start = time.time() - 180
    values = list(generate_logs(n, spacing_s=180 / max(n, 1), start=start, seed=seed))
    return SCHEMA.validate(parse_values(values), "bench", now_us()).table


class Bench:
    """A migrated store file, its WAL and a loader that is driven by hand (no thread)."""

    def __init__(self, root: Path) -> None:
        path = root / "b.duckdb"
        Store(path).start().close()  # migrations
        self.db = duckdb.connect(str(path))
        self.wal = Wal(root / "wal")
        self.wal.open(0)
        self.loader = Loader(
            self.wal,
            lambda: self.db,
            0,
            durable_lsn=lambda: self.wal.end_lsn,
            on_loaded=lambda _f: None,
            on_failure=lambda: None,
            maintenance=lambda: None,
        )
        self.next_log = 1
        self.next_dead = 1

    def append(self, logs: pa.Table, *, key: str | None = None, dead: int = 0) -> None:
        n = logs.num_rows
        with_ids = logs.add_column(0, "id", pa.array(np.arange(self.next_log, self.next_log + n, dtype=np.int64)))
        dead_table = None
        if dead:
            at = now_us()
            dead_table = pa.Table.from_arrays(
                [
                    pa.array(range(self.next_dead, self.next_dead + dead), pa.int64()),
                    pa.array([at] * dead, pa.int64()).cast(pa.timestamp("us")),
                    pa.array(["bench"] * dead),
                    pa.array(["missing required fields: message"] * dead),
                    pa.array(['{"level":"INFO"}'] * dead),
                    pa.nulls(dead, pa.timestamp("us")),
                ],
                schema=DEAD_ARROW_SCHEMA,
            )
        keys = [KeyRecord(key, n, dead, now_us())] if key else []
        frame = Frame(with_ids, dead_table, keys=keys, first_log_id=self.next_log, first_dead_id=self.next_dead)
        self.wal.append(encode(frame))
        self.next_log += n
        self.next_dead += dead

    def pending(self) -> list[FrameAt]:
        return list(self.wal.read(self.loader.loaded_lsn, self.wal.end_lsn, 1 << 40))

    def load(self, frames: list[FrameAt]) -> tuple[float, float]:
        """(thread CPU s, wall s) of one `_apply`."""
        c0, w0 = time.thread_time(), time.perf_counter()
        self.loader._apply(frames)
        c1, w1 = time.thread_time(), time.perf_counter()
        self.loader.loaded_lsn = frames[-1].end
        self.wal.remove_loaded(frames[-1].end)
        return c1 - c0, w1 - w0

    def fold(self) -> tuple[float, float]:
        """(thread CPU s, wall s) of folding the tail into the partials (0 where loads insert partials)."""
        if not hasattr(self.loader, "fold"):
            return 0.0, 0.0
        c0, w0 = time.thread_time(), time.perf_counter()
        assert self.loader.fold()
        return time.thread_time() - c0, time.perf_counter() - w0

    def close(self) -> None:
        self.wal.close()
        self.db.close()


def median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


def p90_ms(xs: list[float]) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))] * 1e3


def trickle(
    b: Bench, pool: pa.Table, logs: int, frames: int, loads: int, keyed: bool, dead: int, fold_every: int
) -> tuple[list[float], list[float], list[float]]:
    """CPU and wall time of each load, and CPU of each fold of the tail (every `fold_every` loads)."""
    cpu: list[float] = []
    wall: list[float] = []
    folds: list[float] = []
    per = max(1, logs // frames)
    pos = 0
    for i in range(loads + 3):
        for f in range(frames):
            if pos + per > pool.num_rows:
                pos = 0
            b.append(pool.slice(pos, per), key=f"k{i}-{f}-{b.next_log}" if keyed else None, dead=dead if f == 0 else 0)
            pos += per
        c, w = b.load(b.pending())
        if i >= 3:  # the first loads warm DuckDB's and pyarrow's caches
            cpu.append(c)
            wall.append(w)
        if i == 2 or (i > 3 and (i - 2) % fold_every == 0):
            fc = b.fold()[0]
            if i > 2:
                folds.append(fc)
    return cpu, wall, folds


def baseline_insert(db: duckdb.DuckDBPyConnection, rows: pa.Table) -> tuple[float, float]:
    """DuckDB's own load of the same rows: one transaction, one INSERT from the Arrow table."""
    c0, w0 = time.thread_time(), time.perf_counter()
    db.execute("BEGIN")
    db.execute("INSERT INTO logs_baseline SELECT * FROM rows")
    db.execute("COMMIT")
    return time.thread_time() - c0, time.perf_counter() - w0


def checkpoint(db: duckdb.DuckDBPyConnection) -> tuple[float, float]:
    """(thread CPU s, wall s) of writing what is committed into the database file."""
    c0, w0 = time.thread_time(), time.perf_counter()
    db.execute("CHECKPOINT")
    return time.thread_time() - c0, time.perf_counter() - w0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trickle-logs", type=int, default=40)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--loads", type=int, default=60)
    ap.add_argument("--bulk-logs", type=int, default=100_000)
    ap.add_argument("--bulk-frame", type=int, default=5_000)
    ap.add_argument("--bulk-runs", type=int, default=5)
    ap.add_argument("--fold-every", type=int, default=50, help="loads per fold (10 s of 200 ms loads)")
    args = ap.parse_args()

    pool = make_logs(max(2000, args.trickle_logs * 10), seed=3)
    bulk = make_logs(args.bulk_logs, seed=5)
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(Path(tmp))
        b.db.execute("CREATE TABLE logs_baseline AS SELECT * FROM logs LIMIT 0")
        print(f"# loader bench, duckdb {duckdb.__version__}; CPU = time.thread_time() of the loading thread")
        print(
            "| load | logs | frames | CPU ms median | CPU ms p90 | wall ms median | fold CPU ms (every "
            f"{args.fold_every} loads) | CPU ms per load incl. folds | DuckDB INSERT alone CPU ms |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, n, keyed, dead in (
            ("trickle", args.trickle_logs, False, 0),
            ("trickle, keys + 1 dead letter", args.trickle_logs, True, 1),
            ("trickle", 200, False, 0),
        ):
            cpu, wall, folds = trickle(b, pool, n, args.frames, args.loads, keyed, dead, args.fold_every)
            rows = pool.slice(0, n).add_column(0, "id", pa.array(np.zeros(n, dtype=np.int64)))
            base = [baseline_insert(b.db, rows)[0] for _ in range(args.loads)]
            fold_ms = median_ms(folds) if folds else 0.0
            print(
                f"| {name} | {n} | {args.frames} | {median_ms(cpu):.2f} | {p90_ms(cpu):.2f} | "
                f"{median_ms(wall):.2f} | {fold_ms:.2f} | {median_ms(cpu) + fold_ms / args.fold_every:.2f} | "
                f"{median_ms(base):.2f} |"
            )

        print()
        print(
            "| bulk load (+ fold, + CHECKPOINT) | logs | CPU s | wall s | logs/s | DuckDB INSERT + CHECKPOINT: CPU s | logs/s "
            "| ratio (rate) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        ratios: list[float] = []
        ids = pa.array(np.arange(1, bulk.num_rows + 1, dtype=np.int64))
        whole = bulk.add_column(0, "id", ids).combine_chunks()
        for run in range(args.bulk_runs):
            for off in range(0, bulk.num_rows, args.bulk_frame):
                b.append(bulk.slice(off, args.bulk_frame))
            frames = b.pending()
            # Each side ends with a CHECKPOINT (timed): the rows have to reach the database file
            # anyway (DuckDB does it on its own once its WAL passes 16 MiB), and so neither side
            # pays for the other's.
            b.db.execute("CHECKPOINT")
            c, w = b.load(frames)
            fc, fw = b.fold()  # a bulk load is above fold_logs: folded in its transaction (this is a no-op)
            kc, kw = checkpoint(b.db)
            c, w = c + fc + kc, w + fw + kw
            bc, bw = baseline_insert(b.db, whole)
            kc, kw = checkpoint(b.db)
            bc, bw = bc + kc, bw + kw
            ratios.append(bw / w)
            print(
                f"| run {run + 1} ({len(frames)} frames) | {bulk.num_rows} | {c:.3f} | {w:.3f} | "
                f"{bulk.num_rows / w:,.0f} | {bc:.3f} | {bulk.num_rows / bw:,.0f} | {bw / w:.2f} |"
            )
        print(f"\nbulk: median ratio to DuckDB's own INSERT {statistics.median(ratios):.2f} over {len(ratios)} runs")
        b.close()


if __name__ == "__main__":
    main()
