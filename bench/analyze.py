"""Benchmark `loglens analyze`: each engine against a hand-written DuckDB SQL baseline, same file, same run.

    .venv/bin/python bench/analyze.py [--logs 1000000] [--engines local,dask,ray] [--broken-pct 2] [--no-write]
    .venv/bin/python bench/analyze.py --input archive   # the same logs as a `loglens export` Parquet archive

Generates N logs (loglens.demo.generate_logs, 5 services, ~264 bytes each) as NDJSON, then times:
- DuckDB SQL: read_json (skipping unreadable lines) + per-(service, minute) count, errors, avg and p50/p95/p99 (quantile_cont),
  plus requests per user — what the report shows, with no validation — in this process, and as a
  whole process (`python -c "import duckdb; ..."`, interpreter start included);
- `loglens analyze` per engine (as a subprocess, exactly as a user runs it, cluster start included),
  which validates every record against the schema, aggregates, merges and runs the detectors.
With `--input archive` the logs go through the schema into a store and out through `loglens
export` first (untimed), and both sides read that hive-partitioned Parquet archive: the baseline
is the same query over `read_parquet`, and `loglens analyze DIR` aggregates the validated columns
(an archive holds only valid logs) and runs the detectors.
Two ratios per engine: the in-run time (the report's `elapsed_s`) over in-process DuckDB (target
≤ 1.5× for the local engine) and the whole command over the whole DuckDB process (target ≤ 2.5×),
plus the report's per-stage seconds. Appends a section to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson

from loglens.demo import generate_logs

REPO = Path(__file__).resolve().parents[1]
# The report's figures over a relation `logs` (service, minute, level, response_time_ms, user_id).
SQL_TEMPLATE = """
WITH logs AS ({LOGS})
SELECT 'minute' AS kind, service, minute::VARCHAR, count(*), count(*) FILTER (WHERE level IN ('ERROR', 'FATAL')),
       avg(response_time_ms), quantile_cont(response_time_ms, [0.5, 0.95, 0.99])::VARCHAR
FROM logs GROUP BY ALL
UNION ALL
SELECT 'user', user_id, NULL, count(*), NULL, NULL, NULL FROM logs GROUP BY user_id
"""
# With broken lines, DuckDB is told to skip what it cannot read (it stops at the first otherwise).
NDJSON_LOGS = """
  SELECT service, date_trunc('minute', timestamp::TIMESTAMPTZ AT TIME ZONE 'UTC') AS minute, level,
         response_time_ms, user_id
  FROM read_json(?, format='newline_delimited', columns={timestamp: 'VARCHAR', level: 'VARCHAR',
                 service: 'VARCHAR', response_time_ms: 'DOUBLE', user_id: 'VARCHAR'}{OPTIONS}){WHERE}
"""
PARQUET_LOGS = """
  SELECT service, date_trunc('minute', ts) AS minute, level, response_time_ms, user_id
  FROM read_parquet(?, hive_partitioning = false)
"""


def write_logs(path: Path, n: int, broken_pct: float = 0.0) -> int:
    """Write `n` logs as NDJSON; `broken_pct` % of the lines (spread evenly) cut in half, as a
    crashed writer leaves them. Returns how many lines were broken."""
    every = round(100 / broken_pct) if broken_pct > 0 else 0
    broken = 0
    with path.open("wb") as f:
        buf: list[bytes] = []
        for k, rec in enumerate(generate_logs(n, start=1_700_000_000.0, spacing_s=0.01, seed=1)):
            raw = orjson.dumps(rec)
            if every and k % every == every - 1:
                raw = raw[: len(raw) // 2]
                broken += 1
            buf.append(raw)
            if len(buf) >= 50_000:
                f.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            f.write(b"\n".join(buf) + b"\n")
    return broken


def write_archive(ndjson: Path, tmp: Path) -> Path:
    """Load `ndjson` into a store through the schema, then `loglens export` it; the archive's path."""
    from loglens.config import load_settings
    from loglens.ingest.decode import decode_ndjson
    from loglens.schema import LogSchema
    from loglens.store import Store

    settings = load_settings(REPO / "config.yaml")
    schema = LogSchema.from_file(settings.schemas.log, allowed_lateness_s=1e12)
    store_path = tmp / "store" / "loglens.duckdb"
    now_us = time.time_ns() // 1000
    with Store(store_path, retention_days=1e5, metrics_retention_days=1e5) as store, ndjson.open("rb") as f:
        while lines := f.readlines(64 << 20):
            batch = schema.validate(decode_ndjson(b"".join(lines)), "bench", now_us)
            store.submit(batch.table, batch.rejections, now_us).result(timeout=600)
    out = tmp / "archive"
    cmd = [sys.executable, "-m", "loglens.cli", "export", "--store", str(store_path), "--out", str(out)]
    subprocess.run([*cmd, "--config", str(REPO / "config.yaml")], check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    return out


def children_cpu_s() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def baseline_sql(broken: bool, parquet: bool = False) -> str:
    """The hand-written query; with broken lines, skipping the lines DuckDB cannot read."""
    if parquet:
        return SQL_TEMPLATE.replace("{LOGS}", PARQUET_LOGS)
    options, where = (", ignore_errors=true", " WHERE timestamp IS NOT NULL") if broken else ("", "")
    return SQL_TEMPLATE.replace("{LOGS}", NDJSON_LOGS.replace("{OPTIONS}", options).replace("{WHERE}", where))


def time_duckdb(path: Path | str, sql: str) -> tuple[float, int]:
    started = time.perf_counter()
    con = duckdb.connect()
    rows = con.execute(sql, [str(path)]).fetchall()
    con.close()
    return time.perf_counter() - started, sum(r[3] for r in rows if r[0] == "minute")


def time_duckdb_process(path: Path | str, sql: str) -> tuple[float, float]:
    """Wall and CPU seconds (user + sys) of a whole DuckDB process."""
    code = f"import duckdb; duckdb.connect().execute({sql!r}, [{str(path)!r}]).fetchall()"
    started, cpu = time.perf_counter(), children_cpu_s()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started, children_cpu_s() - cpu


def time_engine(path: Path, engine: str, out: Path) -> tuple[float, float, dict]:
    """Wall and CPU seconds (user + sys, the process and its children) of `loglens analyze`, and its report."""
    cmd = [
        sys.executable,
        "-m",
        "loglens.cli",
        "analyze",
        str(path),
        "--engine",
        engine,
        "--no-progress",
        "--out",
        str(out),
        "--config",
        str(REPO / "config.yaml"),
    ]
    started, cpu = time.perf_counter(), children_cpu_s()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    return time.perf_counter() - started, children_cpu_s() - cpu, json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs", type=int, default=1_000_000)
    ap.add_argument("--engines", default="local,dask,ray")
    ap.add_argument("--no-write", action="store_true", help="Do not append to docs/benchmarks.md.")
    ap.add_argument("--broken-pct", type=float, default=0.0, help="Cut this % of the lines in half.")
    ap.add_argument("--input", choices=("ndjson", "archive"), default="ndjson", help="What both sides read.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "logs.ndjson"
        broken = write_logs(path, args.logs, args.broken_pct)
        size_mb = path.stat().st_size / 1e6
        rows = []
        parquet = args.input == "archive"
        sql = baseline_sql(broken > 0, parquet)
        if parquet:
            if broken:
                raise SystemExit("--broken-pct applies to NDJSON input only")
            archive = write_archive(path, Path(tmp))
            path.unlink()
            size_mb = sum(f.stat().st_size for f in archive.rglob("*.parquet")) / 1e6
            path = archive  # analyze reads the directory; DuckDB the glob of its files
        source = str(path / "**" / "*.parquet") if parquet else path
        base_s, base_n = time_duckdb(source, sql)
        assert base_n == args.logs - broken, base_n
        base_proc_s, base_cpu_s = time_duckdb_process(source, sql)
        reader = "read_parquet" if parquet else "read_json"
        rows.append((f"DuckDB SQL ({reader} + GROUP BY, no validation)", base_proc_s, base_cpu_s, base_s, ""))
        for engine in args.engines.split(","):
            total_s, cpu_s, report = time_engine(path, engine, Path(tmp) / f"{engine}.json")
            s = report["summary"]
            assert (s["accepted"], s["records"]) == (args.logs - broken, args.logs), s
            stages = ", ".join(f"{k[:-2]} {v:.2f}" for k, v in s["stages"].items() if v >= 0.005)
            rows.append((f"loglens analyze --engine {engine}", total_s, cpu_s, s["elapsed_s"], stages))
    lines = [
        f"### `loglens analyze`, {args.logs:,} logs ({size_mb:.0f} MB "
        + ("Parquet archive from `loglens export`" if parquet else "NDJSON")
        + (f", {broken:,} lines cut in half" if broken else "")
        + f") — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, "
        f"load average at start {os.getloadavg()[0]:.1f}. Wall time of the whole command (process start, "
        "cluster start, validation of every record, aggregation, merge, detectors, report).",
        "",
        "CPU = user + sys seconds of the whole process (Ray and Dask workers outside it are not counted), "
        "which a loaded machine distorts less than wall time.",
        "",
        "| run | whole process s | × DuckDB process | CPU s | × DuckDB CPU | in-run s | × DuckDB in-run | "
        "logs/s | in-run stages (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, wall, cpu, inner, stages in rows:
        lines.append(
            f"| {name} | {wall:.2f} | {wall / base_proc_s:.2f} | {cpu:.2f} | {cpu / base_cpu_s:.2f} | {inner:.2f} | "
            f"{inner / base_s:.2f} | {args.logs / wall:,.0f} | {stages} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        bench = REPO / "docs" / "benchmarks.md"
        existing = bench.read_text() if bench.exists() else "# loglens benchmarks\n"
        if "## Batch analysis" not in existing:
            existing += (
                "\n## Batch analysis (bench/analyze.py)\n\nTarget: the local engine within 1.5× of a "
                "hand-written DuckDB SQL over the same file, the whole process within 2.5× of a whole DuckDB "
                "process. Newest run last.\n"
            )
        # insert at the end of our own section, whatever other sections follow it
        start = existing.index("## Batch analysis")
        nxt = existing.find("\n## ", start + 1)
        end = len(existing) if nxt < 0 else nxt
        bench.write_text(existing[:end].rstrip("\n") + "\n\n" + text + existing[end:])


if __name__ == "__main__":
    sys.exit(main())
